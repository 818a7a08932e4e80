"""Score one saved NB fit of the replicate simulations with and without the mask check (docs/design.md, item 17).

    python benchmarks/prune_rescore.py MODEL_DIR --shape n285 --seed 0

MODEL_DIR is a fit saved with ``MSSVAE.save`` on ``simulate_rnaseq`` at the shape of
``rnaseq_n285_*`` (n285) or ``rnaseq_n600_*`` (n600) with that seed, best fitted with
``prune_masks=False`` so that the module still holds the unchecked masks.  The report is rebuilt
as ``fit`` builds it (merging, then the anchor rule) from the module's W before and after
``mssvae.pruning.map_prune``, and scored with the *_anchors rule of replicate.py.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mssvae import MSSVAE
from mssvae.merging import block_groups, block_redundant, merge_columns
from mssvae.metrics import evaluate_simulation
from mssvae.pruning import map_prune
from mssvae.simulate import simulate_rnaseq

SHAPES = {
    "n285": dict(n_samples=285, n_features=600, n_shared=6, n_specific=2,
                 proportions=(0.1929824561, 0.2105263158, 0.1473684211, 0.1403508772, 0.1368421053, 0.1228070175,
                              0.049122807)),
    "n600": dict(n_samples=600, n_features=300),
}
KEYS = ("shared_consensus", "shared_relevance", "shared_recovery", "group_consensus", "group_relevance",
        "group_recovery", "n_shared_est")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("--shape", choices=sorted(SHAPES), default="n285")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)
    sim = simulate_rnaseq(random_state=a.seed, **SHAPES[a.shape])
    model = MSSVAE.load(a.model)
    m = model.module_
    codes = np.searchsorted(model.studies_, sim.study)
    Z = model.transform(sim.X, sim.study)

    def score(W: np.ndarray) -> dict:
        groups = block_groups(Z, codes, W, m.n_shared, m.n_specific)
        W = merge_columns(W, groups)
        W[:, block_redundant(W, m.n_shared, m.n_specific)] = 0.0
        specific = {lab: W[:, s:s + k] for lab, s, k in zip(model.studies_, m.block_starts, m.n_specific)}
        r = evaluate_simulation(sim, W[:, :m.n_shared], specific, Z_est=Z, random_state=a.seed, max_density=0.25)
        return {k: round(float(r[k]), 3) for k in KEYS}

    W = m.W.detach().numpy().astype(float)
    print("before", score(W))
    Xt, st = model._prepare(sim.X, sim.study)
    drop = map_prune(m, Xt, st, float(model.lambda0[-1]), float(model.lambda1),
                     float(model.history_["prior_weight"].iloc[-1])).numpy()
    W[drop] = 0.0
    print(f"after  {score(W)}  ({int(drop.sum())} of {int((np.abs(m.W.detach().numpy()) > 0.5).sum())} entries)")


if __name__ == "__main__":
    main()
