"""One NB fit on a §4.2-style simulation with its training curve: the probe behind docs/design.md's
"Prior/likelihood balance" section and benchmarks/results/nb_balance.csv.

    python benchmarks/nb_balance.py --tag ps2e-3 --seeds 0 \
        --model "dict(n_shared=20, n_specific=5, hidden=(64, 64), batch_size=128, max_epochs=800)"

--sim and --model are Python dict literals passed to `simulate_rnaseq` and `MSSVAE` (defaults:
N=600, G=300).  Prints one JSON line of metrics per seed (support metrics drop estimated columns
with > 25 % non-zeros, as §4.2 does) and every ~1/12 of the history: the likelihood, the KL terms,
the running Fisher information Î, the prior weight it sets and the number of active columns.
"""

from __future__ import annotations

import argparse
import ast
import json
import time

import numpy as np
import torch

from mssvae import MSSVAE
from mssvae.metrics import evaluate_simulation
from mssvae.simulate import simulate_rnaseq


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", required=True)
    p.add_argument("--sim", default="dict(n_samples=600, n_features=300)")
    p.add_argument("--model", default="dict()")
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sim_kw = _dict_literal(args.sim)
    model_kw = _dict_literal(args.model)
    for seed in (int(s) for s in args.seeds.split(",")):
        sim = simulate_rnaseq(random_state=seed, **sim_kw)
        t0 = time.perf_counter()
        m = MSSVAE(likelihood="nb", random_state=seed, **model_kw).fit(sim.X, sim.study)
        h = m.history_
        res = evaluate_simulation(sim, m.W_shared_, m.W_specific_, max_density=0.25)
        density = {k: float((np.abs(W) > 0.5).mean()) for k, W in [("shared", m.W_shared_), *m.W_specific_.items()]}
        print(json.dumps(dict(tag=args.tag, seed=seed, sec=round(time.perf_counter() - t0), pw=m.prior_weight_,
                              info=float(h.fisher_info.iloc[-1]), dens=density, ks=int(m.n_shared_active_),
                              km=m.n_specific_active_, **{k: v for k, v in res.items() if isinstance(v, float)})))
        cols = ["epoch", "loss", "log_lik", "kl_shared", "kl_specific", "fisher_info", "prior_weight",
                "active_shared", "active_specific"]
        print(h.iloc[:: max(1, len(h) // 12)][cols].to_string(), flush=True)


def _dict_literal(text: str) -> dict:
    """Parse "dict(a=1, b=(2, 3))" or "{'a': 1}" without eval."""
    tree = ast.parse(text, mode="eval").body
    if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id == "dict" and not tree.args:
        return {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords}
    return dict(ast.literal_eval(tree))


if __name__ == "__main__":
    main()
