"""Eq. 2.4 bound and §4.2 scores of saved platelet-size fits of one simulation seed, side by side.

    python benchmarks/probes/score_fits.py --seed 4 FIT_DIR [FIT_DIR ...]

Each fit (saved by `platelet_size.py --save`) is scored on its training data with the Monte Carlo
draws of ``--seed`` (``random_state`` is set to it before ``score``), so the bounds are compared as
``MSSVAE(n_init=...)`` compares its restarts.  One JSON line per fit, with the floor of the spike:
the median |w| of the decoder's mask entries at or below the support threshold 0.5, and how many
lie in (0.1, 0.5) (entries the spike holds at 0 sit near 0 at full cost; docs/design.md, item 21).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from platelet_size import platelet_data  # noqa: E402

from mssvae import MSSVAE  # noqa: E402
from mssvae.metrics import evaluate_simulation  # noqa: E402
from mssvae.training import evaluate_bound  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fits", nargs="+", type=Path)
    p.add_argument("--seed", type=int, required=True, help="the simulation seed the fits were trained on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--terms", action="store_true", help="also each term of the bound, per sample")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sim = platelet_data(a.seed)
    for path in a.fits:
        model = MSSVAE.load(path)
        scores = evaluate_simulation(sim, model.W_shared_, model.W_specific_, max_density=0.25)
        fitted_seed = model.random_state
        model.set_params(random_state=a.seed)   # common Monte Carlo draws for every fit
        print(json.dumps(dict(fit=str(path), model_seed=fitted_seed, feature_subsample=model.feature_subsample,
                              bound=round(model.score(sim.X, sim.study), 2),
                              shared_consensus=round(scores["shared_consensus"], 3),
                              group_consensus=round(scores["group_consensus"], 3),
                              n_shared_est=scores["n_shared_est"], **spike_floor(model),
                              **(bound_terms(model, sim) if a.terms else {}))), flush=True)


def spike_floor(model) -> dict:
    W = model.module_.W.detach().abs()
    small = W[W <= 0.5]
    return dict(median_small_w=round(float(small.median()), 4), entries_01_05=int(((W > 0.1) & (W <= 0.5)).sum()))


def bound_terms(model, sim, n_draws: int = 8, batch_size: int = 1024) -> dict:
    """The terms of ``model.score`` per sample (the same draws): where two fits' bounds differ."""
    X, study = model._prepare(sim.X, sim.study)
    terms = evaluate_bound(model.module_, X, study, model._score_settings(), n_draws, batch_size,
                           int(model.random_state), model._feature_chunk(min(batch_size, X.shape[0])))
    out = {k: round(v, 2) for k, v in terms.items() if k != "bound"}
    module = model.module_
    out.update(support_entries=int((module.W.abs() > 0.5).sum()),
               mean_log_phi=round(float(module.log_phi.detach().mean()), 3) if hasattr(module, "log_phi") else None)
    return out


if __name__ == "__main__":
    main()
