"""Probe (session 9): re-score saved N285 fits with a variant of the anchor rule.

    python benchmarks/probes/session9_anchor_variant.py MASKS/seed*.npz

MASKS: a `--save-masks` folder of replicate.py on the N285 simulation (it holds W_module and Z).
Variant: among the columns lacking two anchor genes, set aside first the one that overlaps the
most other columns (then the smallest), instead of the smallest.  Result on the five fits of
rnaseq_n285_prune.csv: shared consensus median 0.58 -> 0.50, group 0.79 -> 0.79.  Not shipped.
"""

import sys

import numpy as np

from mssvae.merging import _blocks, block_groups, merge_columns, redundant_columns
from mssvae.metrics import evaluate_simulation
from mssvae.simulate import simulate_rnaseq

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

N285 = dict(n_samples=285, n_features=600, n_shared=6, n_specific=2,
            proportions=(0.1929824561, 0.2105263158, 0.1473684211, 0.1403508772, 0.1368421053, 0.1228070175,
                         0.049122807))
K_SHARED, K_SPECIFIC = 20, 5


def redundant_most_overlapping(S: np.ndarray, min_anchors: int = 2) -> list[int]:
    def most_overlapping(lacking, A, shared):
        n_over = (shared > 0).sum(1)
        return max(lacking, key=lambda i: (n_over[i], -A[:, i].sum()))

    return redundant_columns(S, min_anchors, first=most_overlapping)


def main() -> None:
    totals = {"smallest first (shipped)": [], "most overlapping first": []}
    rules = dict(zip(totals, (redundant_columns, redundant_most_overlapping)))
    for path in sys.argv[1:]:
        z = np.load(path)
        seed = int(path.split("seed")[-1].split(".")[0])
        W = z["W_module"]
        sim = simulate_rnaseq(random_state=seed, **N285)
        n_specific = [K_SPECIFIC] * ((W.shape[1] - K_SHARED) // K_SPECIFIC)
        Wm = merge_columns(W, block_groups(z["Z"], z["study"], W, K_SHARED, n_specific))
        line = []
        for name, rule in rules.items():
            Wr = Wm.copy()
            for start, width, _ in _blocks(K_SHARED, n_specific):
                Wr[:, [start + c for c in rule(np.abs(Wm[:, start:start + width]) > 0.5)]] = 0.0
            specific = {lab: Wr[:, K_SHARED + K_SPECIFIC * i:K_SHARED + K_SPECIFIC * (i + 1)]
                        for i, lab in enumerate(sorted(sim.W_specific))}
            r = evaluate_simulation(sim, Wr[:, :K_SHARED], specific, random_state=seed, max_density=0.25)
            totals[name].append((r["shared_consensus"], r["group_consensus"]))
            line.append(f"{name}: {r['shared_consensus']:.2f} / {r['group_consensus']:.2f}")
        print(f"seed {seed}: " + " | ".join(line))
    for name, values in totals.items():
        print(name, "medians (shared, group consensus):", np.median(np.array(values), 0).round(3))


if __name__ == "__main__":
    main()
