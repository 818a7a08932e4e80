"""The mask check (mssvae.pruning) of an older commit against the current one, on one dense 10-epoch NB fit.

    mssvae preprocess ../shared/data/platelets_gse68086/counts.csv.gz \
        --samples ../shared/data/platelets_gse68086/samples.csv --study-key group -o /tmp/prep.h5ad
    PYTHONPATH=src python benchmarks/probes/prune_by_study.py /tmp/prep.h5ad [OLD_COMMIT]

OLD_COMMIT defaults to 554355d (results/prune_by_study.txt); session 24 ran it with 41382f6, the
check before each study's batches took only their own columns in the decoder's first layer and
a dropped feature's likelihood was reused (results/prune_reuse.txt).

Session 23 sums a study-specific column's likelihood gain over its study's samples only (z~ is 0
for the others, so their terms cancel) and sizes each decoder call by the batch at hand.  The older
rule is read from OLD_COMMIT with git.  One thread; both checks run on the same module, and the
line printed gives the entries each drops, how many differ, and the two times.
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

from mssvae import MSSVAE
from mssvae.pruning import map_prune

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

torch.set_num_threads(1)
old_commit = sys.argv[2] if len(sys.argv) > 2 else "554355d"
old_src = subprocess.run(["git", "show", f"{old_commit}:src/mssvae/pruning.py"], capture_output=True, text=True,
                         check=True).stdout
old_src = old_src.replace("from . import", "from mssvae import").replace("from .", "from mssvae.")
with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
    f.write(old_src)
spec = importlib.util.spec_from_file_location("old_pruning", f.name)
old_pruning = importlib.util.module_from_spec(spec)
spec.loader.exec_module(old_pruning)

a = ad.read_h5ad(sys.argv[1])
X = a.layers["counts"]
X = np.asarray(X.todense() if hasattr(X, "todense") else X)
study = a.obs["group"].to_numpy()
m = MSSVAE(likelihood="nb", max_epochs=10, feature_subsample=0.1, hidden=(64, 64), kl_free=0.5, batch_size=128,
           prune_masks=False, random_state=0).fit(X, study)
x = torch.as_tensor(np.ascontiguousarray(X, dtype=np.float32))
st = torch.as_tensor(np.searchsorted(m.studies_, study))
lambda0 = float(m._settings(list(m.studies_), m.n_features_in_, 1)["schedule"].values[-1])
args = (m.module_, x, st, lambda0, m.lambda1_, m.prior_weight_)
kw = dict(chunk_size=m._feature_chunk(1024), threshold=0.5)
t0 = time.perf_counter()
new = map_prune(*args, **kw)
t1 = time.perf_counter()
old = old_pruning.map_prune(*args, **kw)
t2 = time.perf_counter()
print(f"old {old_commit}; N {len(study)}, G {X.shape[1]}, columns {m.module_.W.shape[1]}; entries above 0.5: "
      f"{int((m.module_.W.detach().abs() > 0.5).sum())}; dropped: new {int(new.sum())}, old {int(old.sum())}, "
      f"differ {int((new != old).sum())}; seconds: new {t1 - t0:.1f}, old {t2 - t1:.1f}, "
      f"old/new {(t2 - t1) / (t1 - t0):.2f}; "
      f"{platform.machine()}, {torch.get_num_threads()} thread, torch {torch.__version__}")
