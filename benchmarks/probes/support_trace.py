"""When do the mask supports stop changing?  (issue 9, goal 3: is there an early-stopping rule to gain?)

    python benchmarks/probes/support_trace.py --trace /tmp/trace_seed0.npz -- --seed 0 --subsample 0.1 \
        --threads 2 --set kl_free=0.5 --set "hidden=(64,64)" --out /tmp/rows.csv

Runs `benchmarks/platelet_size.py` with the arguments after `--` (so its row is the same as a plain
run: the snapshots are copies taken between epochs and change nothing), keeping a copy of the masks W
every --every epochs of each training (and each training's history, as JSON beside --trace).  Then,
for each snapshot, the §4.2 metrics of the raw W (no check, merge or anchor rule) and how many
entries changed side of |w| = 0.5 since the previous snapshot.  Saves everything to --trace
(W as float16) and prints one line per snapshot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import platelet_size  # noqa: E402

import mssvae.model  # noqa: E402
from mssvae.metrics import evaluate_simulation  # noqa: E402
from mssvae.model import SUPPORT_THRESHOLD  # noqa: E402


def main() -> None:
    argv = sys.argv[1:]
    ours, theirs = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", type=Path, required=True)
    p.add_argument("--every", type=int, default=10)
    p.add_argument("--csv", type=Path, default=None, help="append the per-snapshot table here "
                   "(results/support_trace_platelet_f0.1.csv; its `code` column was added by hand)")
    a = p.parse_args(ours)

    snaps: list[tuple[int, int, np.ndarray]] = []     # (training, epoch, W)
    layout: dict = {}
    train = mssvae.model.train

    def traced(module, *args, on_epoch_end=None, **kw):
        training = len({t for t, _, _ in snaps})
        layout.update(n_shared=module.n_shared, starts=list(module.block_starts), n_specific=list(module.n_specific))

        def hook(epoch, state):
            if on_epoch_end is not None:
                on_epoch_end(epoch, state)
            if (epoch + 1) % a.every == 0:
                snaps.append((training, epoch + 1, module.W.detach().cpu().numpy().copy()))
        result = train(module, *args, on_epoch_end=hook, **kw)
        histories.append(result.history)
        return result

    histories: list = []
    mssvae.model.train = traced
    sys.argv = ["platelet_size.py", *theirs]
    platelet_size.main()

    seed = int(theirs[theirs.index("--seed") + 1]) if "--seed" in theirs else 0
    sim = platelet_size.platelet_data(seed)
    labels = list(np.unique(sim.study))
    rows, prev = [], None
    for training, epoch, W in snaps:
        spec = {lab: W[:, s:s + k] for lab, s, k in zip(labels, layout["starts"], layout["n_specific"])}
        sc = evaluate_simulation(sim, W[:, :layout["n_shared"]], spec, max_density=0.25)
        on = np.abs(W) > SUPPORT_THRESHOLD
        flips = -1 if prev is None or prev.shape != on.shape else int((on != prev).sum())
        prev = on
        rows.append((training, epoch, int(on.sum()), flips, sc["shared_consensus"], sc["group_consensus"]))
        print(f"training {training} epoch {epoch:4d}  support {on.sum():7d}  flips {flips:6d}  "
              f"shared {sc['shared_consensus']:.3f}  group {sc['group_consensus']:.3f}", flush=True)
    if a.csv:
        table = pd.DataFrame([dict(seed=seed, epoch=e, entries_above_0_5=n,
                                   changed_side_since_last=f if f >= 0 else None,
                                   loss_mean_since_last=round(float(np.mean([r["loss"] for r in win])), 1),
                                   prior_weight=round(win[-1]["prior_weight"], 3), lambda0=win[-1]["lambda0"],
                                   raw_shared_consensus=round(sh, 3), raw_group_consensus=round(gr, 3))
                              for t, e, n, f, sh, gr in rows
                              for win in [histories[t][e - a.every:e]]])
        table.to_csv(a.csv, mode="a", header=not a.csv.exists(), index=False)
    np.savez_compressed(a.trace, rows=np.array(rows, dtype=float),
                        W=np.stack([w for _, _, w in snaps]).astype(np.float16))
    a.trace.with_suffix(".json").write_text(json.dumps(histories))


if __name__ == "__main__":
    main()
