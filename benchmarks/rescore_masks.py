"""Add the duplicate-merged (`dedup_scores`) and, where the factors were saved, the dependence-merged
(`*_merged`, mssvae.merging) scores to a replicate table from its saved masks.

    python benchmarks/rescore_masks.py TABLE.csv MASKDIR [--kind gaussian|rnaseq] [--where KEY=VALUE]

``--where``: only the rows with that value (a table that mixes settings over the same seeds, whose
masks are in different folders); the other rows keep what they had.

For tables made before `replicate.py` computed these columns; regenerates each seed's simulation.
"""

import argparse
import json

import numpy as np
import pandas as pd
from replicate import dedup_scores, merged_scores

from mssvae.simulate import simulate_gaussian, simulate_rnaseq

p = argparse.ArgumentParser()
p.add_argument("table")
p.add_argument("masks")
p.add_argument("--kind", default="gaussian")
p.add_argument("--where", default=None, help="KEY=VALUE: rescore only these rows")
a = p.parse_args()
df = pd.read_csv(a.table)
rows = df.index
if a.where:
    key, value = a.where.split("=", 1)
    rows = df.index[df[key].astype(str) == value]
max_density = None if a.kind == "gaussian" else 0.25
out = []
for _, row in df.loc[rows].iterrows():
    sim_kw = json.loads(row["simulation"]) if "simulation" in row else {}
    sim = (simulate_gaussian if a.kind == "gaussian" else simulate_rnaseq)(random_state=int(row.seed), **sim_kw)
    d = np.load(f"{a.masks}/seed{int(row.seed)}.npz")
    W_spec = {k[2:]: d[k] for k in sorted(d.files) if k.startswith("W_") and k != "W_shared"}
    scores = dedup_scores(sim, d["W_shared"], W_spec, max_density)
    if "Z" in d.files:   # study codes index the sorted labels, as MSSVAE.studies_ does
        labels = np.array(sorted(W_spec))[d["study"]]
        scores.update(merged_scores(sim, d["W_shared"], W_spec, d["Z"], labels, max_density))
    out.append(scores)
for col in out[0]:
    df.loc[rows, col] = [o[col] for o in out]
df.to_csv(a.table, index=False)
print(df[["seed"] + [c for c in df.columns if "consensus" in c]].round(3).to_string())
