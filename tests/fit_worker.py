"""Run one checkpointed fit in a subprocess (tests/test_checkpoint.py kills and restarts it).

    python fit_worker.py OUT_DIR CHECKPOINT_DIR MAX_EPOCHS
"""

import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import two_block_data  # noqa: E402

from mssvae import MSSVAE  # noqa: E402

if __name__ == "__main__":
    out, checkpoint_dir, max_epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # A background job of a non-interactive shell (CI under nohup, say) starts with SIGINT ignored,
    # and Python then keeps it ignored; Ctrl-C from a terminal is what the test stands for.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    torch.set_num_threads(1)  # the same arithmetic in every process
    X, study, _, _ = two_block_data(n=100)
    model = MSSVAE(n_shared=3, n_specific=1, hidden=(8, 8), batch_size=32, max_epochs=max_epochs, random_state=3)
    model.fit(X, study, checkpoint_dir=None if checkpoint_dir == "-" else checkpoint_dir, checkpoint_every=1)
    model.save(out, overwrite=True)
    print("converged" if model.converged_ else "not converged", len(model.history_), flush=True)
