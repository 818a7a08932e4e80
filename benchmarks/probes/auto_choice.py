"""What ``mask_init="auto"`` keeps, from fits made from each start separately (design.md item 26).

    python benchmarks/probes/auto_choice.py --bounds benchmarks/results/rnaseq_n285_bounds_s27.csv \
        --results default=benchmarks/results/rnaseq_n285_s27.csv \
        --results varimax=benchmarks/results/rnaseq_n285_varimax_s27.csv \
        > benchmarks/results/rnaseq_n285_auto_s28.csv

The default NB fit trains W = 1 with kl_free 0.5 and 0 and the varimax start with 0.5 from one seed
and keeps the highest Eq. 2.4 bound.  Every candidate is the training its settings give alone (the
same seed, initial parameters and batches; tests/test_initialisation.py checks it), so the choice
can be read off the separate fits: the candidates' bounds are the ``candidate_scores`` each fit
recorded (``fit_bounds.py`` copies them), and the recovery is the replicate row of the fit chosen.
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

# mssvae.model.VARIMAX_KL_FREE: under kl_free="auto" the varimax start trains with 0.5 alone
PLAN = {"default": ("0.5", "0"), "varimax": ("0.5",)}
COLUMNS = ("shared_consensus", "group_consensus", "n_shared_est")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bounds", required=True, help="fit_bounds.py output with the fits 'default' and 'varimax'")
    p.add_argument("--results", action="append", required=True, metavar="NAME=CSV", help="replicate.py output")
    a = p.parse_args()
    bounds = pd.read_csv(a.bounds)
    results = {name: pd.read_csv(path).set_index("seed") for name, path in (r.split("=", 1) for r in a.results)}
    rows = []
    for seed, group in bounds.groupby("seed", sort=False):
        scores = {}
        for _, row in group.iterrows():
            recorded = dict(kv.split(":") for kv in row["candidate_scores"].split(";"))
            scores.update({(row["fit"], k): float(recorded[k]) for k in PLAN[row["fit"]]})
        (fit, kl_free), best = max(scores.items(), key=lambda kv: kv[1])
        chosen = results[fit].loc[seed]
        rows.append({"seed": seed, "kept": fit, "kl_free": kl_free, "bound_kept": best,
                     "candidates": ";".join(f"{f}/{k}:{v:.1f}" for (f, k), v in scores.items()),
                     **{c: chosen[c] for c in COLUMNS}})
    out = pd.DataFrame(rows)
    out.to_csv(sys.stdout, index=False, float_format="%.4f")
    print(f"# medians: shared {out.shared_consensus.median():.3f}, group {out.group_consensus.median():.3f}; "
          f"means: {out.shared_consensus.mean():.3f}, {out.group_consensus.mean():.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
