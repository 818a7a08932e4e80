"""Could a default NB fit choose among its candidates early?  Reads each candidate's training history.

    # session 27's separate fits (the kept W = 1 candidate and the varimax one of each seed)
    python benchmarks/probes/early_choice.py --fits ones=/tmp/s27/fits --fits varimax=/tmp/s27/fitsv \
        --bounds benchmarks/results/rnaseq_n285_bounds_s27.csv --label s27_n285 --out TABLE.csv
    # fits run with replicate.py --checkpoints CK --set select_after=1 (every candidate to the end;
    # the final bounds are in replicate.py's log)
    python benchmarks/probes/early_choice.py --checkpoints CK --log LOG [--log LOG2] --label ... --out TABLE.csv

A default NB fit (``mask_init="auto"``, ``kl_free="auto"``; docs/design.md items 18, 26) has three
candidates; with ``select_after=1`` each trains to the end and the highest Eq. 2.4 bound
(``MSSVAE.score`` after the mask check) is kept.  ``select_after="auto"`` (item 27) stops at epoch E
(35 % of the epochs) every candidate whose training estimate of the bound (``model.training_bound``:
the mean per-epoch Eq. 2.4 over the last ``--window`` epochs, with its standard error) is more than
``--z`` standard errors behind the best.  Each epoch's history holds the minibatch estimate of every
term of Eq. 2.4, so the rule can be checked against the final choice on fits trained to the end.
One row per seed, epoch E and candidate: the estimate, its standard error, how many standard errors
it is behind the early lead, whether it would train on, its final bound, and whether that is the
best; the summary says, per E, in how many seeds the final best would have trained on.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from mssvae.checkpoint import load
from mssvae.model import SELECT_Z, training_bound

EPOCHS = (160, 200, 240, 280, 320, 400, 560, 800)


def from_fits(specs: list[str], bounds_csv: str) -> dict:
    """{seed: {candidate: (curve, final bound)}} from saved models and fit_bounds.py's table."""
    bounds = pd.read_csv(bounds_csv)
    out: dict = {}
    for spec in specs:
        start, folder = spec.split("=", 1)
        fit = "default" if start == "ones" else start
        for model_json in sorted(Path(folder).glob("seed*/model.json")):
            seed = int(model_json.parent.name[4:])
            meta = json.loads(model_json.read_text())
            row = bounds[(bounds["seed"] == seed) & (bounds["fit"] == fit)]
            if row.empty:
                continue
            key = f"{start}/{meta['kl_free']:g}"
            out.setdefault(seed, {})[key] = (pd.DataFrame(meta["history"]), float(row["bound"].iloc[0]))
    return out


LOG_LINE = re.compile(r"\(seed (\d+)\), mask_init=(\w+), kl_free=([\d.]+): Eq\. 2\.4 per sample (-?[\d.]+)")


def from_checkpoints(folder: str, logs: list[str]) -> dict:
    """{seed: {candidate: (curve, final bound)}} from replicate.py --checkpoints and its log."""
    finals = {}
    for log in logs:
        for m in LOG_LINE.finditer(Path(log).read_text()):
            finals[int(m[1]), f"{m[2]}/{float(m[3]):g}"] = float(m[4])
    out: dict = {}
    for ck in sorted(Path(folder).glob("seed*/mask_init=*/kl_free=*/checkpoint.safetensors")):
        seed = int(ck.parents[2].name[4:])
        key = f"{ck.parents[1].name.split('=')[1]}/{float(ck.parent.name.split('=')[1]):g}"
        if (seed, key) not in finals:
            continue   # still training
        _, meta = load(ck.parent)
        out.setdefault(seed, {})[key] = (pd.DataFrame(meta["history"]), finals[seed, key])
    return {s: c for s, c in out.items() if len(c) > 1}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fits", action="append", default=[], metavar="START=DIR")
    p.add_argument("--bounds", help="fit_bounds.py output for --fits")
    p.add_argument("--checkpoints", help="replicate.py --checkpoints folder")
    p.add_argument("--log", action="append", default=[], help="replicate.py output with the candidates' bounds")
    p.add_argument("--label", default="", help="a name for these fits in the table")
    p.add_argument("--window", type=int, default=20, help="epochs averaged (select_after's: 2.5 %% of them)")
    p.add_argument("--z", type=float, default=SELECT_Z, help="standard errors behind the best that still train on")
    p.add_argument("--out", help="append the table to this csv")
    a = p.parse_args()
    seeds = from_fits(a.fits, a.bounds) if a.fits else from_checkpoints(a.checkpoints, a.log)
    rows = []
    for seed, cands in sorted(seeds.items()):
        final = {k: cands[k][1] for k in cands}
        best = max(final, key=final.get)
        for e in EPOCHS:
            if any(len(cands[k][0]) < e for k in cands):
                continue
            est = {k: training_bound(cands[k][0], e, a.window) for k in cands}
            lead = max(est, key=lambda k: est[k][0])
            for k in sorted(cands):
                gap = est[lead][0] - est[k][0]
                z = gap / np.hypot(est[lead][1], est[k][1])
                rows.append({"fits": a.label, "seed": seed, "epoch": e, "candidate": k, "estimate": round(est[k][0], 2),
                             "estimate_se": round(est[k][1], 2), "behind_se": round(z, 2), "trained_on": z <= a.z,
                             "early_lead": k == lead, "final_bound": round(final[k], 2), "final_best": k == best})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    print(table.to_string(index=False))
    # per seed and epoch: was the final best among those trained on, how many trained on, was the lead the best
    per = table.assign(best_kept_on=table.final_best & table.trained_on,
                       lead_is_best=table.final_best & table.early_lead).groupby(["seed", "epoch"])[
        ["best_kept_on", "lead_is_best", "trained_on"]].sum().reset_index()
    print(f"\nby epoch, over seeds {sorted(seeds)} (z = {a.z:g}):")
    print(per.groupby("epoch").agg(seeds=("seed", "size"), best_kept_on=("best_kept_on", "sum"),
                                   lead_is_best=("lead_is_best", "sum"), mean_trained_on=("trained_on", "mean"),
                                   max_trained_on=("trained_on", "max")).to_string())
    if a.out:
        out = Path(a.out)
        table.to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
