"""How often `merging.composite_columns` folds independent factors, and how often it finds a real
composite (docs/design.md, item 22).  Five factors per block, gene sets of 10-50 genes so that every
column has larger candidate parents; 400 draws per sample size.

    PYTHONPATH=src python benchmarks/probes/composite_null.py > benchmarks/results/composite_null.txt
"""

import sys

import numpy as np

from mssvae.merging import composite_columns

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

rng = np.random.default_rng(0)
K = 5
S = np.zeros((100, K), bool)
for j in range(K):
    S[: 10 + 10 * j, j] = True
for n in (14, 40, 61, 150, 437):
    false = sum(bool(composite_columns(rng.normal(size=(n, K)), S, range(K))) for _ in range(400))
    found = 0
    for _ in range(400):
        Z = rng.normal(size=(n, K))
        Z[:, 0] = Z[:, 3] + Z[:, 4] + 0.3 * rng.normal(size=n)    # the smallest column mixes two others
        found += composite_columns(Z, S, range(K))[:1] == [(0, 3, 4)]
    print(f"n = {n}: independent factors folded in {false}/400 draws; z0 = z3 + z4 + noise (sd 0.3) "
          f"found in {found}/400")
