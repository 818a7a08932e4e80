"""The merge rule's null and power, and the cost of its two dependence measures (docs/design.md,
items 10 and 22; docs/performance.md, "merge step").

1. Null: 5 independent standard-normal factors, 400 draws per sample size; how often
   `merging.dependent_groups` (threshold 0.5) joins any two of them.
2. Power: `dependence_r2` of y = sin(3π/4 x) from x (x standard normal), mean over 400 draws.
3. Cost of `dependence_r2` at n = 1463 (the platelet-size cohort) against the n × n distance-matrix
   version it replaced (written out below as the reference; the two R² agree on distinct values).
4. Cost of `composite_columns` for a block of 50 active columns at n = 1463, random factors, gene
   sets large enough that every column has 15 candidate pairs (the worst case).

    PYTHONPATH=src python benchmarks/probes/merge_null.py > benchmarks/results/merge_null.txt
"""
import platform
import sys
import time

import numpy as np

from mssvae.merging import composite_columns, dependence_r2, dependent_groups

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

rng = np.random.default_rng(0)
print(f"machine: {platform.machine()}, numpy {np.__version__}")
for n in (14, 40, 61, 150, 437):
    merged = sum(any(len(g) > 1 for g in dependent_groups(rng.normal(size=(n, 5)), range(5))) for _ in range(400))
    r2 = []
    for _ in range(400):
        x = rng.normal(size=n)
        r2.append(dependence_r2(x, np.sin(3 * np.pi / 4 * x)))
    print(f"n = {n:3d}: 5 independent factors merged in {merged}/400 draws ({merged / 4:.1f} %); "
          f"R²(sin(3π/4 x) | x) mean {np.mean(r2):.2f} (10 % quantile {np.quantile(r2, 0.1):.2f})")


def dependence_r2_dense(x, y, k=3):
    """The n × n version (before the sorted window)."""
    d = np.abs(x[:, None] - x[None, :])
    np.fill_diagonal(d, np.inf)
    nb = np.argsort(d, axis=1, kind="stable")[:, :k]
    residual = y - y[nb].mean(1)
    return float(1.0 - (residual**2).sum() / ((y - y.mean()) ** 2).sum())


def timed(f, *a, repeats=5):
    out, best = None, np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        out = f(*a)
        best = min(best, time.perf_counter() - t)
    return out, best


x, y = rng.normal(size=1463), rng.normal(size=1463)
(r_new, t_new), (r_old, t_old) = timed(dependence_r2, x, y), timed(dependence_r2_dense, x, y)
print(f"dependence_r2 at n = 1463 (best of 5): sorted window {t_new * 1e3:.2f} ms, n x n matrix "
      f"{t_old * 1e3:.1f} ms ({t_old / t_new:.0f}x); R² {r_new:.6f} and {r_old:.6f}")

Z = rng.normal(size=(1463, 50))
S = np.zeros((5000, 50), bool)
for c in range(50):
    S[: 20 + 90 * c, c] = True      # sizes 20 ... 4430: every column has > 6 parents twice its size
S[:, 40:] = True                     # (the largest ten hold every gene, so the last columns have parents too)
t = time.perf_counter()
found = composite_columns(Z, S, range(50))
print(f"composite_columns, 50 columns at n = 1463: {time.perf_counter() - t:.1f} s, {len(found)} composites "
      "found among independent factors")
