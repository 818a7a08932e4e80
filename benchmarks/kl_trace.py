"""Trace how the shared columns form on the §4.2 simulation (N = 600, G = 300, M = 3).

Every 50 epochs (and at 10, 25, 40) prints the active column counts, each true shared module's
best Jaccard with an estimated shared column, and the sizes of the active shared columns.
Used for README "Counts (NB)", item 15 (the KL weight 2 from the first step switching factors off):

    python benchmarks/kl_trace.py --kl-weight 2 --kl-warmup 0 --seed 0
    python benchmarks/kl_trace.py --kl-weight 1 --seed 0
"""

import argparse

import numpy as np
import torch

import mssvae.training as training
from mssvae import MSSVAE
from mssvae.metrics import jaccard_matrix
from mssvae.simulate import simulate_rnaseq


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kl-weight", type=float, default=2.0)
    ap.add_argument("--kl-warmup", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=800)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sim = simulate_rnaseq(n_samples=600, n_features=300, random_state=args.seed)
    truth = sim.W_shared != 0
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
            best = jaccard_matrix(truth, S).max(1)
            print(epoch["n"], out, "true best J", np.round(best, 2).tolist(), "est sizes",
                  sizes[sizes > 0].tolist(), flush=True)
        return out

    training._active_counts = traced
    MSSVAE(likelihood="nb", n_shared=20, n_specific=5, hidden=(64, 64), batch_size=128, max_epochs=args.epochs,
           kl_weight=args.kl_weight, kl_warmup=args.kl_warmup, random_state=args.seed).fit(sim.X, sim.study)


if __name__ == "__main__":
    main()
