"""Does Eq. 2.4 prefer the true supports to a rotated fit?  A fit started from the truth, scored beside the default.

    python benchmarks/replicate.py --kind rnaseq SIM NET --seeds 1 --threads 1 --save-models FITS --out ...
    python benchmarks/probes/oracle_start.py FITS/seed1 --seed 1 SIM [--out FILE] [--save DIR] [--set KEY=VALUE ...]

(SIM, NET: the settings of benchmarks/README.md, "The GSE68086 shape over ten seeds".)

The default fit starts every mask entry at 1 (Appendix C.2.2).  The oracle start is the same model,
settings and seed with W started at the true supports instead: 1 on each true shared module in the
first K_S columns and on each study's true modules in the first columns of its block, 0 elsewhere.
Both are then trained identically (the default two ``kl_free`` candidates, the mask check, the
merge).  Printed: each fit's Eq. 2.4 per sample and its terms (``training.evaluate_bound``, 32
draws, as ``score``), and its §4.2 scores; ``--save DIR`` keeps the oracle-start fit.  If the
oracle start ends with the higher bound, the rotations of item 23 are a failure of the optimisation,
which the objective would not choose; if lower, the objective itself prefers them.  ``--set`` changes
a setting of the oracle fit only (e.g. ``--set mask_init=ones --set kl_free=0.5`` trains one
candidate, the settings the default kept, instead of every candidate from the true supports).
"""

from __future__ import annotations

import ast
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from platelet_size import saved_fit_and_data  # noqa: E402

from mssvae import MSSVAE  # noqa: E402
from mssvae.metrics import evaluate_simulation  # noqa: E402
from mssvae.training import evaluate_bound  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))


class OracleStart(MSSVAE):
    """MSSVAE whose masks start at the true supports (a probe only: the truth is not known in practice)."""

    def _initialise(self, module, X, masks=None):
        super()._initialise(module, X, masks)
        sim = self._oracle
        W0 = torch.zeros_like(module.W)
        S = np.abs(sim.W_shared) > 0
        W0[:, :S.shape[1]] = torch.as_tensor(S, dtype=W0.dtype)
        for start, lab in zip(module.block_starts, sorted(sim.W_specific)):
            Sm = np.abs(sim.W_specific[lab]) > 0
            W0[:, start:start + Sm.shape[1]] = torch.as_tensor(Sm, dtype=W0.dtype)
        with torch.no_grad():
            module.W.copy_(W0)


def scores(sim, model) -> dict:
    res = evaluate_simulation(sim, model.W_shared_, model.W_specific_, random_state=0, max_density=0.25)
    return {k: round(float(res[k]), 3) for k in ("shared_consensus", "group_consensus", "n_shared_est")}


def bound_terms(model, sim) -> dict:
    """Eq. 2.4 per sample and its terms, as ``model.score(n_draws=32)`` computes them."""
    Xt, st = model._prepare(sim.X, sim.study)
    out = evaluate_bound(model.module_, Xt, st, model._score_settings(), 32, 1024, int(model.random_state),
                         model._feature_chunk(1024))
    return {k: round(float(v), 3) for k, v in out.items()}


def pop_option(name: str):
    """The value of ``name`` in sys.argv, removed from it (saved_fit_and_data parses the rest)."""
    if name not in sys.argv:
        return None
    i = sys.argv.index(name)
    value = sys.argv[i + 1]
    del sys.argv[i:i + 2]
    return Path(value)


def pop_sets() -> dict:
    """Every ``--set KEY=VALUE`` in sys.argv as a dict, removed from it."""
    sets = {}
    while "--set" in sys.argv:
        key, value = str(pop_option("--set")).split("=", 1)
        sets[key] = ast.literal_eval(value) if value[:1] in "0123456789-([{'\"" else value
    return sets


def main() -> None:
    out, save, sets = pop_option("--out"), pop_option("--save"), pop_sets()
    torch.set_num_threads(1)
    sim, default = saved_fit_and_data(__doc__)
    settings = {**default.get_params(), **sets}
    oracle = OracleStart(**settings)
    oracle._oracle = sim
    t0 = time.perf_counter()
    oracle.fit(sim.X, sim.study)
    if save:
        oracle.save(save, overwrite=True)
    row = {"seed": int(sys.argv[sys.argv.index("--seed") + 1]), "seconds_oracle": round(time.perf_counter() - t0, 1)}
    for name, model in (("default", default), ("oracle_start", oracle)):
        row.update({f"{k}_{name}": v for k, v in bound_terms(model, sim).items()})
        row[f"kl_free_{name}"] = model.kl_free_
        row.update({f"{k}_{name}": v for k, v in scores(sim, model).items()})
    row["settings"] = json.dumps({k: v for k, v in settings.items() if v is not None}, default=str)
    print(row, flush=True)
    if out:
        pd.DataFrame([row]).to_csv(out, mode="a", header=not out.exists(), index=False)


if __name__ == "__main__":
    main()
