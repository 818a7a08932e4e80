"""Wall time of a default NB fit with its candidates compared at the end (select_after=1) and after
35 % of the epochs (the default, design.md item 27), one after the other in one process.

    python benchmarks/probes/select_cost.py --epochs 200 --seed 0 > benchmarks/results/select_cost_s29.txt

The GSE68086-shaped simulation of benchmarks/README.md (N = 285 in 7 groups, G = 600) with its
network (K~ 20/5, hidden 64/64, batch 128), one torch thread.  Fewer epochs than the benchmark's 800
keep it short; the per-fit work that does not scale with the epochs (varimax start, scoring, the
mask check) then weighs more, so the ratio at 800 epochs is at most this one.
"""

import argparse
import platform
import time

import numpy as np
import torch

from mssvae import MSSVAE
from mssvae.simulate import simulate_rnaseq

GSE68086_PROPORTIONS = (0.1929824561, 0.2105263158, 0.1473684211, 0.1403508772, 0.1368421053, 0.1228070175,
                        0.049122807)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    sim = simulate_rnaseq(n_samples=285, n_features=600, proportions=GSE68086_PROPORTIONS, n_shared=6,
                          n_specific=2, random_state=a.seed)
    net = dict(likelihood="nb", n_shared=20, n_specific=5, hidden=(64, 64), batch_size=128, max_epochs=a.epochs,
               random_state=a.seed)
    print(f"machine: {platform.machine()} {platform.processor() or 'cpu'}, torch {torch.__version__}, 1 thread; "
          f"N = 285, G = 600, {a.epochs} epochs, seed {a.seed}")
    fits, seconds = {}, {}
    for select in (1.0, "auto"):
        t0 = time.perf_counter()
        fits[select] = MSSVAE(select_after=select, **net).fit(sim.X, sim.study)
        seconds[select] = time.perf_counter() - t0
        m = fits[select]
        print(f"select_after={select!r}: {seconds[select]:.1f} s, compared after epoch {m.select_epoch_}, "
              f"kept mask_init={m.mask_init_} kl_free={m.kl_free_:g}, Eq. 2.4 {m.init_scores_[0]:.2f}")
    same = (fits[1.0].mask_init_, fits[1.0].kl_free_) == (fits["auto"].mask_init_, fits["auto"].kl_free_)
    identical = same and np.array_equal(fits[1.0].module_.W.detach().numpy(), fits["auto"].module_.W.detach().numpy())
    print(f"time ratio auto / 1: {seconds['auto'] / seconds[1.0]:.3f}; same candidate kept: {same}; "
          f"identical W: {identical}")


if __name__ == "__main__":
    main()
