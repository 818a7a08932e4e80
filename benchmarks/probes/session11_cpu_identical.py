"""Is the CPU training unchanged by a refactor?  Fit twice, on two checkouts, and compare bit for bit.

    python benchmarks/probes/session11_cpu_identical.py new.npz           # in the new checkout
    python benchmarks/probes/session11_cpu_identical.py old.npz           # in the old one (git stash)
    python benchmarks/probes/session11_cpu_identical.py --compare new.npz old.npz

Session 11 ran it around the sync-free training step (docs/performance.md, "On a GPU"): an NB fit with
feature_subsample=0.5 and a Gaussian fit, 1 thread; W and every number of the history were equal.
"""

import sys

import numpy as np
import torch

from mssvae import MSSVAE
from mssvae.simulate import simulate_gaussian, simulate_rnaseq

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))


def fits(path: str) -> None:
    torch.set_num_threads(1)
    out = {}
    sim = simulate_rnaseq(n_samples=200, n_features=60, random_state=1)
    m = MSSVAE(likelihood="nb", n_shared=6, n_specific=3, hidden=(16, 16), batch_size=64, max_epochs=30,
               random_state=0, feature_subsample=0.5).fit(sim.X, sim.study)
    out["nb"], out["nb_hist"] = m.module_.W.detach().numpy(), m.history_.select_dtypes("number").to_numpy()
    sim = simulate_gaussian(random_state=1)
    m = MSSVAE(n_shared=6, n_specific=3, hidden=(16, 16), batch_size=64, max_epochs=20, random_state=0).fit(sim.X,
                                                                                                            sim.study)
    out["g"], out["g_hist"] = m.module_.W.detach().numpy(), m.history_.select_dtypes("number").to_numpy()
    np.savez(path, **out)


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        a, b = np.load(sys.argv[2]), np.load(sys.argv[3])
        for k in a:
            print(k, "equal" if np.array_equal(a[k], b[k], equal_nan=True) else "DIFFERENT")
    else:
        fits(sys.argv[1])
