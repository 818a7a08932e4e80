"""How much leaving inactive estimated columns out of DCI moves the score (metrics.py, "Two
readings of ours"): 10 true factors, estimates = truth + N(0, 0.3²) noise, 1000 rows, with and
without 25 near-constant extra columns (what an unused decoder column looks like).

    PYTHONPATH=src python benchmarks/probes/dci_inactive_columns.py
"""
import platform
import sys

import numpy as np

from mssvae.metrics import dci_disentanglement

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

rng = np.random.default_rng(0)
Z = rng.normal(size=(1000, 10))
Z_est = Z + 0.3 * rng.normal(size=Z.shape)
unused = 1e-3 * rng.normal(size=(1000, 25))
print(f"machine: {platform.machine()} {platform.processor() or ''}".strip())
print(f"active columns only (what evaluate scores): {dci_disentanglement(Z, Z_est):.4f}")
print(f"with 25 near-constant columns (the paper's reading): {dci_disentanglement(Z, np.c_[Z_est, unused]):.4f}")
