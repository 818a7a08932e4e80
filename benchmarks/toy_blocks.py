"""Active factors found on the small two-block data of the tests (2 studies × 500 samples, 40
features; true K_S = 2, K_m = 1 per study; offered K_S = 5, K_m = 2), over a few seeds.

    python benchmarks/toy_blocks.py --seeds 0-4
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import two_block_data  # noqa: E402

from mssvae import MSSVAE  # noqa: E402
from mssvae.metrics import jaccard_matrix, support  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--seeds", default="0-4")
lo, hi = map(int, p.parse_args().seeds.split("-"))
X, study, Ws, Wm = two_block_data()
for seed in range(lo, hi + 1):
    m = MSSVAE(n_shared=5, n_specific=2, max_epochs=150, batch_size=256, random_state=seed,
               lr=0.01).fit(X, study)
    best_shared = jaccard_matrix(support(Ws), support(m.W_shared_)).max(1)
    best_specific = {lab: float(jaccard_matrix(support(Wm[lab]), support(m.W_specific_[lab])).max(initial=0))
                     for lab in Wm}
    print(f"seed {seed}: K_S {m.n_shared_active_} (true 2), K_m {m.n_specific_active_} (true 1 each); "
          f"best Jaccard shared {np.round(best_shared, 2).tolist()}, specific {best_specific}", flush=True)
