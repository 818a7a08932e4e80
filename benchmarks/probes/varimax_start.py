"""How close the varimax start (``mask_init="varimax"``) is to the truth before any training.

    PYTHONPATH=src python benchmarks/probes/varimax_start.py > benchmarks/results/varimax_start.txt

For each seed of the §4.2 simulation at the GSE68086 shape (N = 285, G = 600, 7 groups; K̃ 20 / 5 as
the replicates fit) and at N = 600 (G = 300, 3 groups), the starting masks of
:func:`mssvae.initialisation.varimax_masks` read as a fit (support |W| > 0.5, columns with more than
25 % non-zeros dropped, as the §4.2 scores read them), scored against the truth.  The trained fits
are scored the same way by ``benchmarks/replicate.py``.  Recovery (Eq. C.3, the mean over true
modules of the best Jaccard) says whether each true module has a column of its own at the start;
consensus also counts the noise columns, which the start has and training switches off.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from mssvae.initialisation import varimax_masks
from mssvae.metrics import evaluate_simulation
from mssvae.simulate import simulate_rnaseq

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

SHAPES = {
    "N=285 (GSE68086 shape)": dict(n_samples=285, n_features=600, n_shared=6, n_specific=2,
                                   proportions=(0.1929824561, 0.2105263158, 0.1473684211, 0.1403508772,
                                                0.1368421053, 0.1228070175, 0.049122807)),
    "N=600": dict(n_samples=600, n_features=300),
}


def main() -> None:
    print(__doc__.strip().splitlines()[0])
    for name, shape in SHAPES.items():
        print(f"\n{name}: seed; shared consensus, recovery; group consensus, recovery; "
              "K̂_S of the start; seconds")
        rows = []
        for seed in range(10):
            sim = simulate_rnaseq(random_state=seed, **shape)
            labels, codes = np.unique(sim.study, return_inverse=True)
            t0 = time.perf_counter()
            W0 = varimax_masks(sim.X, codes, 20, [5] * len(labels), "nb", random_state=seed)
            seconds = time.perf_counter() - t0
            Wm = {lab: W0[:, 20 + 5 * m:25 + 5 * m] for m, lab in enumerate(labels)}
            res = evaluate_simulation(sim, W0[:, :20], Wm, random_state=seed, max_density=0.25)
            rows.append([res[k] for k in ("shared_consensus", "shared_recovery", "group_consensus",
                                          "group_recovery", "n_shared_est")])
            print(seed, " ".join(f"{v:.3f}" for v in rows[-1][:4]), rows[-1][4], f"{seconds:.2f}")
        print("median", " ".join(f"{v:.3f}" for v in np.median(np.array(rows, dtype=float), axis=0)))


if __name__ == "__main__":
    main()
