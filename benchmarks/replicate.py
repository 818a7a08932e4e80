"""Replicates of the paper's simulations: fit MSSVAE on R seeds, write a metrics table and box plot.

    python benchmarks/replicate.py --kind gaussian --seeds 0-9 --out benchmarks/results/gaussian.csv
    python benchmarks/replicate.py --kind rnaseq --sim n_samples=600 --sim n_features=300 ...

Model settings: --set key=value (e.g. --set prior_weight=10); simulation settings: --sim key=value.
Each row: seed, settings, metrics of `mssvae.metrics.evaluate_simulation`, K̂, seconds, machine.
For --kind rnaseq the support metrics drop estimated columns with > 25 % non-zeros (§4.2).
"""

from __future__ import annotations

import argparse
import ast
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mssvae import MSSVAE
from mssvae.merging import apply_merge_plan, merge_blocks, merge_plan
from mssvae.metrics import evaluate_simulation, merge_duplicate_columns
from mssvae.model import MIN_ANCHORS
from mssvae.plotting import plot_replicates
from mssvae.simulate import simulate_gaussian, simulate_rnaseq


def parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out += list(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    return out


def parse_settings(items: list[str]) -> dict:
    out = {}
    for kv in items:
        k, v = kv.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def kind_setup(kind: str):
    """(simulator, likelihood, max_density of the support metrics) of a --kind: for "rnaseq" the metrics
    drop estimated columns with > 25 % non-zeros (§4.2)."""
    if kind == "gaussian":
        return simulate_gaussian, "gaussian", None
    return simulate_rnaseq, "nb", 0.25


def dedup_scores(sim, W_shared, W_specific, max_density) -> dict:
    """Consensus after merging same-support columns within each block (a diagnostic, see docs/results.md)."""
    res = evaluate_simulation(sim, merge_duplicate_columns(W_shared),
                              {k: merge_duplicate_columns(v) for k, v in W_specific.items()},
                              max_density=max_density)
    return {"shared_consensus_dedup": res["shared_consensus"], "group_consensus_dedup": res["group_consensus"]}


MERGED_KEYS = ("shared_consensus", "shared_relevance", "shared_recovery", "group_consensus", "group_relevance",
               "group_recovery", "n_shared_est")


def merged_scores(sim, W_shared, W_specific, Z, study, max_density) -> dict:
    """Support metrics after merging factors that are functions of one another (``*_merged``), and
    after also setting aside the columns without two anchor genes (``*_anchors``; mssvae.merging);
    Z (N, K) in the layout of ``MSSVAE.transform``, ``study`` the label of each row."""
    out = {}
    for suffix, min_anchors in (("merged", 0), ("anchors", MIN_ANCHORS)):
        Ws, Wm, _ = merge_blocks(W_shared, W_specific, Z, study, min_anchors=min_anchors)
        res = evaluate_simulation(sim, Ws, Wm, max_density=max_density)
        out.update({f"{k}_{suffix}": res[k] for k in MERGED_KEYS})
    return out


def unfolded_scores(sim, model, max_density) -> dict:
    """The fit's report without folding composites (``*_unfolded``): pairwise merging and the anchor rule
    only, as reported before session 17; with ``composites``, the folded triples' factor names."""
    W = model.module_.W.detach().cpu().numpy().astype(float)
    plan = merge_plan(W, model.merged_groups_)
    W = apply_merge_plan(W, plan)
    W[:, model.redundant_columns_] = 0.0
    starts = np.cumsum([model.module_.n_shared] + list(model.module_.n_specific))
    Wm = {lab: W[:, starts[m]:starts[m + 1]] for m, lab in enumerate(model.studies_)}
    res = evaluate_simulation(sim, W[:, :starts[0]], Wm, max_density=max_density)
    out = {f"{k}_unfolded": res[k] for k in MERGED_KEYS}
    out["composites"] = json.dumps(model.composite_factors_)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kind", choices=["gaussian", "rnaseq"], default="gaussian")
    p.add_argument("--sim", action="append", default=[], help="simulation setting key=value")
    p.add_argument("--seeds", default="0-9")
    p.add_argument("--out", required=True)
    p.add_argument("--set", action="append", default=[], help="model setting key=value")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--save-masks", default=None, help="folder for each seed's estimated W (.npz)")
    p.add_argument("--save-models", default=None,
                   help="folder for each seed's fitted model (MSSVAE.save, as seedS/), for the probes")
    p.add_argument("--checkpoints", default=None,
                   help="folder for each seed's training checkpoints (fit's checkpoint_dir, as seedS/): they keep "
                        "every candidate's history, also of the candidates not kept")
    args = p.parse_args()
    # the Eq. 2.4 bound of every candidate and restart a fit compares (model.py logs them at INFO)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("mssvae").setLevel(logging.INFO)
    if args.threads:
        torch.set_num_threads(args.threads)
    settings, sim_settings = parse_settings(args.set), parse_settings(args.sim)
    simulate, likelihood, max_density = kind_setup(args.kind)
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for seed in parse_seeds(args.seeds):
        sim = simulate(random_state=seed, **sim_settings)
        t0 = time.perf_counter()
        model = MSSVAE(likelihood=likelihood, random_state=seed, **settings).fit(
            sim.X, sim.study, checkpoint_dir=args.checkpoints and Path(args.checkpoints) / f"seed{seed}")
        seconds = time.perf_counter() - t0
        Z = model.transform(sim.X, sim.study)
        if args.save_masks:
            Path(args.save_masks).mkdir(parents=True, exist_ok=True)
            # Z and the study codes too: the factors' posterior means, for diagnostics of split factors.
            # W_module: the fitted W before merging and the anchor rule (the reported masks come from it).
            np.savez(Path(args.save_masks) / f"seed{seed}.npz", W_shared=model.W_shared_, Z=Z,
                     W_module=model.module_.W.detach().cpu().numpy(),
                     study=np.searchsorted(model.studies_, sim.study),
                     **{f"W_{k}": v for k, v in model.W_specific_.items()})
        if args.save_models:
            model.save(Path(args.save_models) / f"seed{seed}", overwrite=True)
        res = evaluate_simulation(sim, model.W_shared_, model.W_specific_, Z_est=Z, random_state=seed,
                                  max_density=max_density)
        row = {"seed": seed, "kind": args.kind, "settings": json.dumps(settings),
               "simulation": json.dumps(sim_settings),
               "seconds": round(seconds, 1), "prior_weight_used": model.prior_weight_,
               "lambda1_used": model.lambda1_,   # the fitted one for lambda1="empirical"
               "pruned_entries": model.pruned_entries_,
               "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"}
        row.update({k: v for k, v in res.items() if not isinstance(v, dict)})
        row.update(dedup_scores(sim, model.W_shared_, model.W_specific_, max_density))
        row.update(merged_scores(sim, model.W_shared_, model.W_specific_, Z, sim.study, max_density))
        row.update(unfolded_scores(sim, model, max_density))
        row["n_specific_est"] = json.dumps(res.get("n_specific_est"))
        rows.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k != "machine"},
              flush=True)
        pd.DataFrame(rows).to_csv(out, index=False)
    fig = plot_replicates(pd.DataFrame(rows), title=f"{args.kind}, {len(rows)} seeds, {json.dumps(settings)}")
    fig.savefig(out.with_suffix(".png"), dpi=120, bbox_inches="tight")
    summary = pd.DataFrame(rows).select_dtypes("number").drop(columns=["seed"]).median()
    print("median:", summary.round(3).to_dict())


if __name__ == "__main__":
    main()
