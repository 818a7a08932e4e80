"""Cost of MSSVAE.variance_explained with the reported factors' rows (the default) against one row
per decoder column (factors="all"), on one short NB fit of GSE68086, in one run.

    mssvae preprocess ../shared/data/platelets_gse68086/counts.csv.gz \
        --samples ../shared/data/platelets_gse68086/samples.csv --study-key group -o /tmp/prep.h5ad
    PYTHONPATH=src python benchmarks/probes/variance_rows.py /tmp/prep.h5ad

The fit is the one of a user-acceptance pass (session 24): 40 epochs of the laptop recipe, whose
report took longer than the fit because the variance section made one decoder pass per column.
"""
import platform
import sys
import time

import anndata as ad
import numpy as np
import torch

from mssvae import MSSVAE

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

torch.set_num_threads(1)
a = ad.read_h5ad(sys.argv[1])
X = a.layers["counts"]
X = np.asarray(X.todense() if hasattr(X, "todense") else X)
study = a.obs["group"].to_numpy()
t0 = time.perf_counter()
m = MSSVAE(likelihood="nb", max_epochs=40, feature_subsample=0.1, hidden=(64, 64), kl_free=0.5, batch_size=128,
           random_state=0, verbose=False).fit(X, study)
t1 = time.perf_counter()
reported = m.variance_explained(X, study)
t2 = time.perf_counter()
every = m.variance_explained(X, study, factors="all")
t3 = time.perf_counter()
merged = {g[0] for g in m.merged_factors_}   # their rows set several columns to 0: not comparable
same = [n for n in reported.index if n in every.index and n not in merged]
print(f"N {len(study)}, G {X.shape[1]}; fit {t1 - t0:.1f} s; K^_S {m.n_shared_active_}, sum K^_m "
      f"{sum(m.n_specific_active_.values())}; rows: reported {len(reported)}, all {len(every)}; "
      f"seconds: reported {t2 - t1:.1f}, all {t3 - t2:.1f}, all/reported {(t3 - t2) / (t2 - t1):.2f}; "
      f"'other columns' max share {reported.loc['other columns'].max():.4f}; "
      f"merged factors {len(merged)}; the other {len(same)} rows equal in both: "
      f"{bool(np.allclose(reported.loc[same], every.loc[same]))}; "
      f"{platform.machine()}, 1 thread, torch {torch.__version__}")
