"""Eq. 2.4 per sample and its terms for saved replicate fits, two starts side by side (design.md item 25).

    python benchmarks/probes/fit_bounds.py --seeds 1,4,7,0,9,2 --fits default=DIR_A --fits varimax=DIR_B SIM \
        > benchmarks/results/rnaseq_n285_bounds_s27.csv

DIR_A / DIR_B: ``replicate.py --save-models`` folders (one ``seedS/`` per seed); SIM: the ``--sim``
settings of those fits.  One CSV row per seed and fit: the ``kl_free`` candidate kept, both
candidates' bounds as the fit recorded them, the bound and its terms (``bound_terms`` of
``oracle_start.py``: ``training.evaluate_bound`` with 32 draws, as ``score(n_draws=32)``), and the
mask entries above 0.5.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oracle_start import bound_terms  # noqa: E402

from mssvae import MSSVAE  # noqa: E402
from mssvae.simulate import simulate_rnaseq  # noqa: E402

TERMS = ("bound", "log_lik", "kl_shared", "kl_specific", "log_prior_masks")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", required=True, help="comma-separated seeds")
    p.add_argument("--fits", action="append", required=True, metavar="NAME=DIR")
    p.add_argument("--sim", action="append", default=[], metavar="KEY=VALUE")
    a = p.parse_args()
    sim_settings = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in a.sim)}
    print("seed,fit,kl_free_kept,candidate_scores," + ",".join(TERMS) + ",entries_above_0.5")
    for seed in (int(s) for s in a.seeds.split(",")):
        sim = simulate_rnaseq(random_state=seed, **sim_settings)
        for name, folder in (f.split("=", 1) for f in a.fits):
            m = MSSVAE.load(Path(folder) / f"seed{seed}")
            t = bound_terms(m, sim)
            cs = ";".join(f"{k:g}:{v:.1f}" for k, v in m.candidate_scores_.items())
            above = int((np.abs(m.module_.W.detach().numpy()) > 0.5).sum())
            print(f"{seed},{name},{m.kl_free_:g},{cs}," + ",".join(str(t[k]) for k in TERMS) + f",{above}",
                  flush=True)


if __name__ == "__main__":
    main()
