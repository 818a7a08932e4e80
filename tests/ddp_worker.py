"""One rank of a data-parallel fit (tests/test_distributed.py launches two with torchrun, gloo).

    torchrun --nproc_per_node 2 ddp_worker.py OUT_DIR [empirical | shard | nb]

With "empirical": 20 epochs with lambda1="empirical" (and the normalized decoder it needs).
With "shard": rank 1 is given every other sample, a launch mistake the fit must refuse.
With "nb": counts and the NB defaults, whose candidates pause, are compared and train on (item 27).
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from conftest import two_block_data  # noqa: E402

from mssvae import MSSVAE  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    X, study, _, _ = two_block_data(n=300)
    if sys.argv[2:] == ["shard"] and dist.get_rank() == 1:
        X, study = X[::2], study[::2]
    extra = dict(lambda1="empirical", normalize_decoder=True, max_epochs=20) if sys.argv[2:] == ["empirical"] else {}
    if sys.argv[2:] == ["nb"]:
        X = np.random.default_rng(0).poisson(np.exp(np.clip(X, -3, 3))).astype(float)
        extra = dict(likelihood="nb", max_epochs=40, lr=None)
    model = MSSVAE(**{**dict(n_shared=4, n_specific=1, hidden=(16, 16), batch_size=128, max_epochs=60, lr=0.01,
                             random_state=1), **extra}).fit(X, study)
    np.savez(Path(sys.argv[1]) / f"rank{dist.get_rank()}.npz", W=model.module_.W.detach().numpy(),
             eta=model.module_.eta.numpy(), loss=model.history_["loss"].to_numpy(),
             weight=model.history_["prior_weight"].to_numpy(), lambda1=model.history_["lambda1"].to_numpy(),
             Z=model.transform(X, study), W_shared=model.W_shared_, pruned=model.pruned_entries_,
             buffers=np.concatenate([b.double().numpy().ravel() for b in model.module_.buffers()]),
             candidates=model.candidates_.to_numpy(dtype=str))
    dist.destroy_process_group()
