"""Trace how the shared columns form on the §4.2 simulation (N = 600, G = 300, M = 3) or on the
GSE68086-shaped one (N = 285, G = 600, M = 7; ``--shape n285``).

At epochs 10, 25, 40 and every 50 prints the active column counts, each true shared module's best
Jaccard with an estimated shared column and the sizes of the active shared columns; with
``--per-column`` also, for every shared column with a non-empty support, its mean KL per sample
(nats, over all samples, from the encoder's posterior) and its best Jaccard with a true shared
module ("spare" below 0.2).  ``--stop-after E`` ends the trace after epoch E.

Used for docs/design.md, "Counts (NB)", items 15 and 16:

    python benchmarks/kl_trace.py --kl-weight 2 --kl-warmup 0 --seed 0
    python benchmarks/kl_trace.py --kl-weight 1 --seed 0
    python benchmarks/kl_trace.py --per-column --stop-after 150 --seed 0 [--shape n285] [--kl-free 0]
"""

import argparse

import numpy as np
import torch

import mssvae.training as training
from mssvae import MSSVAE
from mssvae.metrics import jaccard_matrix
from mssvae.simulate import simulate_rnaseq

GSE68086_PROPORTIONS = (0.1929824561, 0.2105263158, 0.1473684211, 0.1403508772, 0.1368421053, 0.1228070175,
                        0.049122807)


class _Stop(Exception):
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kl-weight", type=float, default=2.0)
    ap.add_argument("--kl-warmup", type=float, default=0.0)
    ap.add_argument("--kl-free", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=800)
    ap.add_argument("--shape", choices=("n600", "n285"), default="n600")
    ap.add_argument("--per-column", action="store_true")
    ap.add_argument("--stop-after", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.shape == "n600":
        sim = simulate_rnaseq(n_samples=600, n_features=300, random_state=args.seed)
    else:
        sim = simulate_rnaseq(n_samples=285, n_features=600, proportions=GSE68086_PROPORTIONS, n_shared=6,
                              n_specific=2, random_state=args.seed)
    truth = sim.W_shared != 0
    X = torch.as_tensor(np.asarray(sim.X), dtype=torch.float32)
    counts = training._active_counts
    epoch = {"n": 0}

    def traced(module, threshold=0.5):
        # _active_counts runs once per epoch, after the step: a hook that sees the masks as trained
        out = counts(module, threshold)
        epoch["n"] += 1
        if epoch["n"] % 50 == 0 or epoch["n"] in (10, 25, 40):
            with torch.no_grad():
                S = module.W[:, :module.n_shared].abs().cpu().numpy() > threshold
            sizes = S.sum(0)
            J = jaccard_matrix(truth, S)
            print(epoch["n"], out, "true best J", np.round(J.max(1), 2).tolist(), "est sizes",
                  sizes[sizes > 0].tolist(), flush=True)
            if args.per_column:
                with torch.no_grad():   # shared factors: every sample has them, whatever its study
                    mean, log_var = module.encode(X, torch.zeros(len(X), dtype=torch.long))
                    kl = (0.5 * (mean**2 + log_var.exp() - 1 - log_var))[:, :module.n_shared].mean(0).numpy()
                cols = [f"{kl[k]:.2f}/{sizes[k]}/{J[:, k].max():.2f}" for k in np.argsort(-kl) if sizes[k] > 0]
                print("   KL/size/J per shared column:", " ".join(cols), flush=True)
        if args.stop_after is not None and epoch["n"] >= args.stop_after:
            raise _Stop
        return out

    training._active_counts = traced
    try:
        MSSVAE(likelihood="nb", n_shared=20, n_specific=5, hidden=(64, 64), batch_size=128, max_epochs=args.epochs,
               kl_weight=args.kl_weight, kl_warmup=args.kl_warmup, kl_free=args.kl_free,
               random_state=args.seed).fit(sim.X, sim.study)
    except _Stop:
        print(f"stopped after epoch {epoch['n']}")


if __name__ == "__main__":
    main()
