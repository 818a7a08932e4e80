"""What `n_init` would choose: each restart of a replicate fitted alone, its Eq. 2.4 bound and its scores.

    python benchmarks/restarts.py --sim n_samples=285 ... --set n_shared=20 ... --seeds 0-4 \
        --restarts 0-1 --fits DIR --out benchmarks/results/restarts_n285.csv

Restart r of seed s is ``MSSVAE(random_state=restart_seeds(s, R)[r])`` with the other settings as
given (restart 0 is the plain fit, the replicate.py row of that seed), so ``MSSVAE(n_init=R)`` keeps,
of restarts 0..R-1, the one with the highest bound.  Every restart is scored with the Monte Carlo
draws of seed s, as ``n_init`` scores them (``MSSVAE.score``).  With ``--fits DIR`` each fit is saved
as DIR/seed{s}_r{r} and loaded from there when present (a replicate.py ``--save-models`` folder's
seed{s} can be linked in as seed{s}_r0).  One row per (seed, restart); the summary printed at the
end is the n_init = R choice of each seed, for each R the restarts allow.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch
from replicate import kind_setup, parse_seeds, parse_settings  # the script's folder is on sys.path

from mssvae import MSSVAE
from mssvae.metrics import evaluate_simulation
from mssvae.model import restart_seeds

SCORES = ("shared_consensus", "shared_relevance", "shared_recovery", "group_consensus", "group_relevance",
          "group_recovery", "n_shared_est")


def fit_or_load(path: Path | None, sim, likelihood: str, seed: int, settings: dict):
    """(model, seconds to fit or None when loaded)."""
    if path is not None and path.exists():
        return MSSVAE.load(path), None
    t0 = time.perf_counter()
    model = MSSVAE(likelihood=likelihood, random_state=seed, **settings).fit(sim.X, sim.study)
    seconds = time.perf_counter() - t0
    if path is not None:
        model.save(path, overwrite=True)
    return model, seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["gaussian", "rnaseq"], default="rnaseq")
    p.add_argument("--sim", action="append", default=[], help="simulation setting key=value")
    p.add_argument("--set", action="append", default=[], help="model setting key=value")
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--restarts", default="0-1", help="which restarts to fit, e.g. 0-2 or 1")
    p.add_argument("--fits", type=Path, default=None, help="folder to save (and reuse) each fit")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    settings, sim_settings = parse_settings(a.set), parse_settings(a.sim)
    simulate, likelihood, max_density = kind_setup(a.kind)
    restarts = parse_seeds(a.restarts)
    rows = []
    for seed in parse_seeds(a.seeds):
        sim = simulate(random_state=seed, **sim_settings)
        seeds = restart_seeds(seed, max(restarts) + 1)
        for r in restarts:
            path = a.fits / f"seed{seed}_r{r}" if a.fits else None
            model, seconds = fit_or_load(path, sim, likelihood, seeds[r], settings)
            model.random_state = seed   # n_init scores every restart with the draws of random_state
            bound = model.score(sim.X, sim.study)
            res = evaluate_simulation(sim, model.W_shared_, model.W_specific_, max_density=max_density)
            row = {"seed": seed, "restart": r, "fit_seed": seeds[r], "bound": bound, "kl_free": model.kl_free_,
                   "seconds": None if seconds is None else round(seconds, 1), "settings": json.dumps(settings),
                   "simulation": json.dumps(sim_settings), **{k: res[k] for k in SCORES}}
            rows.append(row)
            print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                   if k not in ("settings", "simulation")}, flush=True)
            pd.DataFrame(rows).to_csv(a.out, index=False)
    df = pd.DataFrame(rows)
    for R in range(1, len(restarts) + 1):
        first = df[df.restart.isin(restarts[:R])]
        kept = first.loc[first.groupby("seed").bound.idxmax()]
        print(f"n_init={R} (restarts {restarts[:R]}): kept", kept.restart.tolist(), "medians",
              kept[["shared_consensus", "group_consensus"]].median().round(3).to_dict())


if __name__ == "__main__":
    main()
