"""Does the GPU path recover the test suite's toy blocks as often as the CPU?  (issue 9, goal 4)

    python benchmarks/probes/cuda_blocks.py --device cuda --out cuda_blocks.csv   # bf16/fp32 × graphs on/off
    python benchmarks/probes/cuda_blocks.py --device cpu --out cpu_blocks.csv

The fit of tests/conftest.py's `fitted_blocks` (two studies, 2 shared + 1 + 1 true blocks of 10
features, 5 / 2 columns offered, 150 epochs, lr 0.01) over seeds 0-4.  A fit "recovers" when every
true column has an estimated column with Jaccard >= 0.9 and the active counts are 2 / {1, 1}, the
assertions of test_fit_recovers_which_features_go_with_which_block and
test_unneeded_factors_are_switched_off.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import two_block_data  # noqa: E402

from mssvae import MSSVAE  # noqa: E402
from mssvae.metrics import jaccard_matrix, support  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    X, study, Ws, Wm = two_block_data()
    variants = [("fp32", "1"), ("fp32", "0"), ("bf16", "1"), ("bf16", "0")] if a.device.startswith("cuda") \
        else [("fp32", "-")]
    rows = []
    for seed in (int(s) for s in a.seeds.split(",")):
        for precision, graphs in variants:
            os.environ["MSSVAE_CUDA_GRAPHS"] = graphs
            t0 = time.perf_counter()
            m = MSSVAE(n_shared=5, n_specific=2, max_epochs=150, batch_size=256, random_state=seed, lr=0.01,
                       device=a.device, precision=precision).fit(X, study)
            shared = jaccard_matrix(support(Ws), support(m.W_shared_)).max(1).min()
            own = min(jaccard_matrix(support(Wm[k]), support(m.W_specific_[k])).max() for k in ("s0", "s1"))
            ok = shared >= 0.9 and own >= 0.9 and m.n_shared_active_ == 2 and m.n_specific_active_ == {"s0": 1, "s1": 1}
            rows.append(dict(seed=seed, device=a.device, precision=precision, cuda_graphs=graphs,
                             shared_jaccard=round(float(shared), 3), own_jaccard=round(float(own), 3),
                             active=f"{m.n_shared_active_}/{m.n_specific_active_['s0']}/{m.n_specific_active_['s1']}",
                             recovers=bool(ok), seconds=round(time.perf_counter() - t0, 1),
                             machine=torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"))
            print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    print(df.groupby(["precision", "cuda_graphs"])["recovers"].sum().to_string())
    if a.out:
        df.to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
