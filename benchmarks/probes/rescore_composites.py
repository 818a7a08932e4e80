"""Re-score saved platelet-size fits with and without folding composite columns (mssvae.merging).

    python benchmarks/probes/rescore_composites.py --seed 2 [--seed 6 ...] /tmp/fit_s2 [/tmp/fit_s6 ...] [--out CSV]

(one --seed per fit, in the order of the fits)

For each fit: the scores of its masks reported with pairwise merging and the anchor rule (what a fit
reported before composites were folded), and with composites then folded into their parents
(`merging.block_plan`, what a fit reports now), with the composites found.  No refit: the module,
and so the decoder, is the saved one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from platelet_size import platelet_data  # noqa: E402

from mssvae import MSSVAE  # noqa: E402
from mssvae.merging import block_plan, fold_composites, merge_columns  # noqa: E402
from mssvae.metrics import evaluate_simulation  # noqa: E402

KEYS = ("shared_consensus", "group_consensus", "group_relevance", "group_recovery", "n_shared_est")


def report(model, W):
    K_S = model.module_.n_shared
    starts = np.cumsum([K_S] + list(model.module_.n_specific))
    return W[:, :K_S], {lab: W[:, starts[m]:starts[m + 1]] for m, lab in enumerate(model.studies_)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, action="append", required=True)
    p.add_argument("fits", type=Path, nargs="+")
    p.add_argument("--out", type=Path, default=None, help="append one row per fit to this CSV")
    a = p.parse_args()
    if len(a.seed) != len(a.fits):
        p.error(f"one --seed per fit: {len(a.seed)} seeds for {len(a.fits)} fits")
    for seed, path in zip(a.seed, a.fits):
        sim = platelet_data(seed)
        model = MSSVAE.load(path)
        t0 = time.perf_counter()
        W = model.module_.W.detach().cpu().numpy().astype(float)
        Z = model.transform(sim.X, sim.study)
        codes = np.searchsorted(np.asarray(model.studies_), sim.study)
        n_spec = list(model.module_.n_specific)
        groups, redundant, composites = block_plan(W, Z, codes, model.module_.n_shared, n_spec)
        merged = merge_columns(W, groups)
        merged[:, redundant] = 0.0
        folded = fold_composites(merged, composites)
        seconds = time.perf_counter() - t0
        before = evaluate_simulation(sim, *report(model, merged), max_density=0.25)
        after = evaluate_simulation(sim, *report(model, folded), max_density=0.25)
        names = model.factor_names_
        print(f"seed {seed} ({path}): composites {[tuple(names[i] for i in t) for t in composites]} "
              f"({seconds:.1f} s for merging, composites and anchors)")
        print("   " + "  ".join(f"{k} {before[k]:.3f} -> {after[k]:.3f}" for k in KEYS))
        if a.out:
            row = dict(seed=seed, fit=str(path), composites=json.dumps([[names[i] for i in t] for t in composites]),
                       **{f"{k}_unfolded": round(float(before[k]), 3) for k in KEYS},
                       **{f"{k}_folded": round(float(after[k]), 3) for k in KEYS},
                       settings=json.dumps(model.get_params(), default=str))
            pd.DataFrame([row]).to_csv(a.out, mode="a", header=not a.out.exists(), index=False)


if __name__ == "__main__":
    main()
