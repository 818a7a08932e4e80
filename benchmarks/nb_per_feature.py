"""NB §4.2 simulations with the per-feature calibrated prior (`prior_per_feature=True`), one JSON line per seed.

    python benchmarks/nb_per_feature.py --config n600 --seeds 0-4 >> /tmp/pf.jsonl
    python benchmarks/nb_per_feature.py --config n285 --seeds 0-4 >> /tmp/pf.jsonl

The configurations and model settings are those of `rnaseq_n600.csv` and `rnaseq_n285_m7.csv`
(K~_S = 20, K~_m = 5, hidden 64/64, batch 128, 800 epochs, NB defaults), so each seed compares
one-to-one with the global calibrated weight.  Results: benchmarks/results/nb_per_feature.csv.
(The committed runs set the same switch through a private attribute before it became the public
`prior_per_feature`; the computation is the same.)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from mssvae import MSSVAE
from mssvae.metrics import evaluate_simulation
from mssvae.simulate import simulate_rnaseq

CONFIGS = {
    "n600": dict(n_samples=600, n_features=300),
    "n285": dict(n_samples=285, n_features=600, n_shared=6, n_specific=2,
                 proportions=[0.1929824561, 0.2105263158, 0.1473684211, 0.1403508772, 0.1368421053,
                              0.1228070175, 0.049122807]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=sorted(CONFIGS), required=True)
    p.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2")
    p.add_argument("--per-feature", type=int, default=1, help="1: prior_per_feature=True, 0: the default")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if "-" in a.seeds:
        lo, hi = (int(v) for v in a.seeds.split("-"))
        seeds = range(lo, hi + 1)
    else:
        seeds = [int(v) for v in a.seeds.split(",")]
    for seed in seeds:
        sim = simulate_rnaseq(random_state=seed, **CONFIGS[a.config])
        model = MSSVAE(likelihood="nb", random_state=seed, n_shared=20, n_specific=5, hidden=(64, 64),
                       batch_size=128, max_epochs=800, prior_per_feature=bool(a.per_feature))
        t0 = time.time()
        model.fit(sim.X, sim.study)
        res = evaluate_simulation(sim, model.W_shared_, model.W_specific_, max_density=0.25)
        print(json.dumps(dict(config=a.config, seed=seed, per_feature=bool(a.per_feature),
                              seconds=round(time.time() - t0), K_S_est=int(model.n_shared_active_),
                              K_m_est=model.n_specific_active_,
                              **{k: round(v, 3) for k, v in res.items() if isinstance(v, float)})), flush=True)


if __name__ == "__main__":
    main()
