"""How well the mask check's progress bar predicts its own length: the bar over columns (commit
OLD_COMMIT) against the bar over decoder evaluations (the current one), on one dense 10-epoch NB
fit of GSE68086 (the laptop recipe; a user-acceptance pass saw a first estimate about 4× too long).

    PYTHONPATH=src python benchmarks/probes/prune_eta.py /tmp/prep.h5ad [OLD_COMMIT]

For each bar: the share of the bar done when 10 % and 25 % of the check's time had passed, and the
total time a bar-rate estimate (elapsed / share) would then predict, against the real total.
"""
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time

import anndata as ad
import numpy as np
import torch
import tqdm.auto

from mssvae import MSSVAE
from mssvae import pruning as new_pruning

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

torch.set_num_threads(1)
old_commit = sys.argv[2] if len(sys.argv) > 2 else "8ccbfc5"
src = subprocess.run(["git", "show", f"{old_commit}:src/mssvae/pruning.py"], capture_output=True, text=True,
                     check=True).stdout.replace("from . import", "from mssvae import").replace("from .", "from mssvae.")
with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(src)
spec = importlib.util.spec_from_file_location("old_pruning", f.name)
old_pruning = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old_pruning)

marks: list[tuple[float, float]] = []   # (seconds since the bar started, share done)


class Recording(tqdm.auto.tqdm):
    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)
        self.t0, self.done = time.perf_counter(), 0
        self.size = kwargs.get("total") or len(args[0])
        marks.clear()

    def __iter__(self):   # the old bar iterates over the columns
        for item in self.iterable:
            yield item
            self.done += 1
            marks.append((time.perf_counter() - self.t0, self.done / self.size))

    def update(self, n=1):   # the new bar is updated by evaluations
        self.done += n
        marks.append((time.perf_counter() - self.t0, self.done / self.size))


tqdm.auto.tqdm = Recording
adata = ad.read_h5ad(sys.argv[1])
model = MSSVAE(likelihood="nb", max_epochs=10, feature_subsample=0.1, hidden=(64, 64), kl_free=0.5, batch_size=128,
               prune_masks=False, random_state=0).fit(adata.X, adata.obs["group"].to_numpy())
module = model.module_
x = torch.as_tensor(np.asarray(adata.X, dtype=np.float32))
codes = torch.as_tensor(np.searchsorted(model.studies_, adata.obs["group"].to_numpy()))
args = (module, x, codes, model.schedule_[-1] if hasattr(model, "schedule_") else 15.0, model.lambda1_,
        model.prior_weight_)
print(f"machine: {platform.machine()}, torch {torch.__version__}, 1 thread; old bar from {old_commit}")
for name, mod in (("columns (old)", old_pruning), ("evaluations (new)", new_pruning)):
    t0 = time.perf_counter()
    drop = mod.map_prune(*args, chunk_size=model._feature_chunk(1024), progress=True)
    total = time.perf_counter() - t0
    line = [f"{name}: {total:.1f} s, {int(drop.sum())} entries dropped"]
    for q in (0.10, 0.25):
        t, share = next((t, s) for t, s in marks if t >= q * total)
        line.append(f"at {t:.1f} s ({100 * q:.0f} % of the time) {100 * share:.1f} % done, estimate {t / share:.0f} s")
    print("; ".join(line), flush=True)
