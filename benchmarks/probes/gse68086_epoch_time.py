"""Seconds per epoch of training on the real GSE68086 counts (docs/results.md, "What we ran, and why
not the paper's settings"): Table 2's RNA network (hidden 256/128, K̃_S 50, K̃_m 10) against the
configuration the §5 run used (hidden 64/64, K̃_S 20, K̃_m 5), both at batch 128, NB defaults,
training alone (benchmarks/epoch_time.py's TRAIN_ONLY), after a 1-epoch warm-up, in one run.

    PYTHONPATH=src python benchmarks/probes/gse68086_epoch_time.py PREP.h5ad [THREADS] \
        > benchmarks/results/gse68086_epoch_time.txt

PREP.h5ad: `mssvae preprocess ../shared/data/platelets_gse68086/counts.csv.gz --samples
../shared/data/platelets_gse68086/samples.csv --study-key group -o PREP.h5ad`.
"""
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from mssvae import MSSVAE

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from epoch_time import TRAIN_ONLY  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]) or len(sys.argv) < 2:   # no argparse here: say what it does, run nothing
    sys.exit(print(__doc__))

adata = ad.read_h5ad(sys.argv[1])
if len(sys.argv) > 2:
    torch.set_num_threads(int(sys.argv[2]))
X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X, dtype=np.float32)
study = adata.obs["group"].astype(str).to_numpy()
print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
      f"data {X.shape[0]} samples x {X.shape[1]} genes, {len(set(study))} groups")
for name, net, epochs in (("Table 2 (hidden 256/128, 50/10)", dict(hidden=(256, 128), n_shared=50, n_specific=10), 5),
                          ("the §5 run's (hidden 64/64, 20/5)", dict(hidden=(64, 64), n_shared=20, n_specific=5), 10)):
    kw = dict(likelihood="nb", batch_size=128, random_state=0, **TRAIN_ONLY, **net)
    MSSVAE(max_epochs=1, **kw).fit(X, study)
    t = time.perf_counter()
    MSSVAE(max_epochs=epochs, **kw).fit(X, study)
    s = (time.perf_counter() - t) / epochs
    print(f"{name}: {s:.2f} s per epoch over {epochs} epochs (batch 128); 800 epochs ≈ {800 * s / 3600:.1f} h",
          flush=True)
