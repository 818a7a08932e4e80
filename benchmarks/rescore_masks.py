"""Add the duplicate-merged consensus (`dedup_scores`) to a replicate table from its saved masks.

    python benchmarks/rescore_masks.py TABLE.csv MASKDIR [--kind gaussian|rnaseq]

For tables made before `replicate.py` computed these columns; regenerates each seed's simulation.
"""

import argparse
import json

import numpy as np
import pandas as pd
from replicate import dedup_scores

from mssvae.simulate import simulate_gaussian, simulate_rnaseq

p = argparse.ArgumentParser()
p.add_argument("table")
p.add_argument("masks")
p.add_argument("--kind", default="gaussian")
a = p.parse_args()
df = pd.read_csv(a.table)
out = []
for _, row in df.iterrows():
    sim_kw = json.loads(row["simulation"]) if "simulation" in row else {}
    sim = (simulate_gaussian if a.kind == "gaussian" else simulate_rnaseq)(random_state=int(row.seed), **sim_kw)
    d = np.load(f"{a.masks}/seed{int(row.seed)}.npz")
    W_spec = {k[2:]: d[k] for k in d.files if k != "W_shared"}
    out.append(dedup_scores(sim, d["W_shared"], W_spec, None if a.kind == "gaussian" else 0.25))
df = pd.concat([df.drop(columns=[c for c in out[0] if c in df]), pd.DataFrame(out)], axis=1)
df.to_csv(a.table, index=False)
print(df[["seed", "shared_consensus", "shared_consensus_dedup", "group_consensus", "group_consensus_dedup"]])
