"""Issue 9 goal 3: the platelet-size NB fit end to end, with and without feature subsampling.

    python benchmarks/platelet_size.py --subsample 0.05 --out benchmarks/results/platelet_size.csv

Data: `simulate_rnaseq` at the size of the paper's §5 cohort: N = 1463 in 6 groups sized like
Table 1 (437 / 61 / 92 / 299 / 286 / 288), G = 5000, true K_S = 10, K_m = 3.  Model: the NB
defaults with Table 2's network (K̃_S = 50, K̃_m = 10, hidden (256, 128), batch 512, 800 epochs)
unless changed with --set key=value.  One row per run: wall-clock seconds for simulate + fit +
scores (the fit alone is also given), the §4.2 metrics against the truth, and the machine.
`--epochs E` with E < 800 times a shortened fit (the row says so; the λ0 schedule is compressed
with it, so its scores are not those of a full fit).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from mssvae import MSSVAE
from mssvae.metrics import evaluate_simulation
from mssvae.simulate import simulate_rnaseq

TABLE1 = (437, 61, 92, 299, 286, 288)


def platelet_data(seed: int):
    """The §4.2 simulation at the size of the §5 cohort (also used by profile_fit.py)."""
    return simulate_rnaseq(n_samples=sum(TABLE1), n_features=5000, proportions=tuple(n / sum(TABLE1) for n in TABLE1),
                           random_state=seed)


def saved_fit_and_data(description: str):
    """For the probes that read a saved fit: parse ``MODEL --seed S [--sim KEY=VALUE ...]`` and return
    (the simulation of that seed, the loaded model).  Without ``--sim`` the simulation is the
    platelet-size one; with it, ``simulate_rnaseq`` with those settings (as ``replicate.py --sim``)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--seed", type=int, required=True, help="the simulation seed the model was fitted on")
    p.add_argument("--sim", action="append", default=[], metavar="KEY=VALUE",
                   help="simulate_rnaseq setting of a replicate.py fit (default: the platelet size)")
    a = p.parse_args()
    sim_settings = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in a.sim)}
    sim = simulate_rnaseq(random_state=a.seed, **sim_settings) if sim_settings else platelet_data(a.seed)
    return sim, MSSVAE.load(a.model)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subsample", type=float, default=1.0, help="feature_subsample of the fit")
    p.add_argument("--epochs", type=int, default=800)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another MSSVAE setting")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--save", type=Path, default=None, help="also save the fitted model here (MSSVAE.save)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    sim = platelet_data(a.seed)
    extra = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    settings = dict(dict(likelihood="nb", n_shared=50, n_specific=10, hidden=(256, 128), batch_size=512,
                         max_epochs=a.epochs, feature_subsample=a.subsample, random_state=a.seed), **extra)
    t1 = time.perf_counter()
    model = MSSVAE(**settings).fit(sim.X, sim.study)
    t2 = time.perf_counter()
    if a.save:
        model.save(a.save, overwrite=True)
    scores = evaluate_simulation(sim, model.W_shared_, model.W_specific_, max_density=0.25)
    t3 = time.perf_counter()
    row = dict(settings=json.dumps(settings), seconds_total=round(t3 - t0, 1), seconds_fit=round(t2 - t1, 1),
               **{k: round(float(v), 3) for k, v in scores.items() if isinstance(v, (int, float))},
               machine=f"{platform.machine()}, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, device {model.device_}"
               + (f" ({torch.cuda.get_device_name(model.device_)}, CUDA graphs "
                  f"{'off' if os.environ.get('MSSVAE_CUDA_GRAPHS') == '0' else 'on'})"
                  if model.device_.startswith("cuda") else ""))
    print(json.dumps(row, indent=1), flush=True)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([row]).to_csv(a.out, mode="a", header=not a.out.exists(), index=False)


if __name__ == "__main__":
    main()
