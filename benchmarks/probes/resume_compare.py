"""A fit killed after its first checkpoint and resumed, against the same fit uninterrupted: how many
entries of W differ, and by how much (README, "Checkpoints").  On a CPU they are equal bit for bit
(tests/test_checkpoint.py asserts it); on a GPU the resumed process captures its CUDA graphs at other
points, so they differ a little.  The fit is tests/fit_worker.py's (two-block toy, 200 samples,
device "auto": CUDA where there is one).

    PYTHONPATH=src python benchmarks/probes/resume_compare.py [EPOCHS] > benchmarks/results/resume_compare_DEVICE.txt
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file

from mssvae import checkpoint
from mssvae.checkpoint import CHECKPOINT_FILE

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

WORKER = Path(__file__).resolve().parents[2] / "tests" / "fit_worker.py"
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 6
env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def worker(out, ck):
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(ck), str(epochs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    ref = worker(tmp / "ref", "-")
    assert ref.wait(timeout=600) == 0, ref.communicate()
    victim = worker(tmp / "unused", tmp / "ck")
    while not (tmp / "ck" / CHECKPOINT_FILE).exists():
        assert victim.poll() is None, victim.communicate()
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = checkpoint.load(tmp / "ck")[1]["epochs_done"]
    resumed = worker(tmp / "resumed", tmp / "ck")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    a, b = (load_file(str(tmp / run / "model.safetensors")) for run in ("ref", "resumed"))
    key = next(k for k in a if k.endswith("W") and a[k].ndim == 2)
    Wa, Wb = a[key], b[key]
    differ = Wa != Wb
    rel = np.abs(Wa - Wb)[differ] / np.maximum(np.abs(Wa)[differ], 1e-12)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print(f"device {device}, torch {torch.__version__}: killed after epoch {done} of {epochs}, resumed; "
          f"{int(differ.sum())} of {differ.size} entries of {key} differ from the uninterrupted fit's"
          + (f", by at most {rel.max():.2%} (relative)" if differ.any() else "")
          + f"; every tensor equal: {all((a[k] == b[k]).all() for k in a)}")
