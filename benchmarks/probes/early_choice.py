"""Could a default NB fit choose its candidate early?  Reads each candidate's training history.

    # session 27's separate fits (the kept W = 1 candidate and the varimax one of each seed)
    python benchmarks/probes/early_choice.py --fits ones=/tmp/s27/fits --fits varimax=/tmp/s27/fitsv \
        --bounds benchmarks/results/rnaseq_n285_bounds_s27.csv
    # default fits run with replicate.py --checkpoints CK (all three candidates; scores from its log)
    python benchmarks/probes/early_choice.py --checkpoints CK --log LOG [--log LOG2]

A default NB fit (``mask_init="auto"``, ``kl_free="auto"``; docs/design.md items 18, 26) trains three
candidates to the end and keeps the one whose Eq. 2.4 bound (``MSSVAE.score``, after the mask check)
is highest.  Deciding at epoch E instead would train all three to E and only the chosen one on.
Each epoch's history holds the minibatch estimate of every term of Eq. 2.4 (the KL at weight 1, the
mask prior at weight 1 and that epoch's λ0), so the free rule "highest mean per-epoch Eq. 2.4 over
epochs E−19..E" can be checked against the final choice.  Per seed and E: each candidate's value,
whether the early argmax equals the final one, and the regret (final bound of the best candidate
minus that of the early choice, nats per sample).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from mssvae.checkpoint import load
from mssvae.model import training_bound

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
    p.add_argument("--window", type=int, default=20, help="epochs averaged (select_after's: 2.5 %% of them)")
    a = p.parse_args()
    window = a.window
    seeds = from_fits(a.fits, a.bounds) if a.fits else from_checkpoints(a.checkpoints, a.log)
    rows = []
    for seed, cands in sorted(seeds.items()):
        names = sorted(cands)
        final = {k: cands[k][1] for k in names}
        best = max(names, key=final.get)
        for e in EPOCHS:
            if any(len(cands[k][0]) < e for k in names):
                continue
            early = {k: training_bound(cands[k][0], e, window) for k in names}
            pick = max(names, key=early.get)
            rows.append({"seed": seed, "epoch": e, "early_pick": pick, "final_pick": best, "match": pick == best,
                         "regret": round(final[best] - final[pick], 2),
                         **{f"early {k}": round(v, 1) for k, v in early.items()},
                         **{f"final {k}": round(v, 1) for k, v in final.items()}})
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 250)
    pd.set_option("display.max_columns", 30)
    print(table.to_string(index=False))
    print(f"\nmatches of the early pick with the final one, by epoch (seeds: {sorted(seeds)}):")
    print(table.groupby("epoch").agg(match=("match", "sum"), seeds=("match", "size"),
                                     max_regret=("regret", "max")).to_string())


if __name__ == "__main__":
    main()
