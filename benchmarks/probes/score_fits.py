"""Eq. 2.4 bound and §4.2 scores of saved platelet-size fits of one simulation seed, side by side.

    python benchmarks/probes/score_fits.py --seed 4 FIT_DIR [FIT_DIR ...]

Each fit (saved by `platelet_size.py --save`) is scored on its training data with the Monte Carlo
draws of ``--seed`` (``random_state`` is set to it before ``score``), so the bounds are compared as
``MSSVAE(n_init=...)`` compares its restarts.  One JSON line per fit.
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fits", nargs="+", type=Path)
    p.add_argument("--seed", type=int, required=True, help="the simulation seed the fits were trained on")
    p.add_argument("--threads", type=int, default=2)
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
                              n_shared_est=scores["n_shared_est"])), flush=True)


if __name__ == "__main__":
    main()
