"""bf16 autocast on a CPU (docs/performance.md, "Mixed precision"): how far its objective is from
fp32's on tests/test_precision.py's batch, and how much slower a training step is, both through
`training.autocast`, the context training uses on CUDA.  `precision="bf16"` is refused on a CPU;
this probe calls the module directly.

    PYTHONPATH=src python benchmarks/probes/cpu_bf16.py > benchmarks/results/cpu_bf16.txt

The step: loss + backward of an NB module (G = 2000, K_S = 20, K_m = 5 in 3 studies, hidden 64/64)
on a batch of 128, fp32 and bf16 alternating, median of 5 after a warm-up, one thread.

and, for the matrix products alone, a (1024 × 1024) @ (1024 × 1024) matmul in fp32 and in bf16.
"""
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mssvae import MSSVAE
from mssvae.simulate import simulate_rnaseq
from mssvae.training import autocast

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import two_block_data  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

torch.set_num_threads(1)
cpu = torch.device("cpu")
info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
print(f"machine: {platform.machine()} {model}, torch {torch.__version__}, 1 thread; "
      f"avx512_bf16: {'avx512_bf16' in info}")


def loss_args(m, X, study_codes, n):
    return (torch.as_tensor(X[:n]), torch.as_tensor(study_codes[:n]), torch.ones(n), len(X), 10.0, 0.1, 1.0,
            40.0, 1.0, m._data_priors.get("noise"), m._data_priors.get("library"), None)


# 1. The objective, on the test's batch (tests/test_precision.py asserts within 0.5 %).
for likelihood in ("gaussian", "nb"):
    X, study, _, _ = two_block_data(n=100)
    if likelihood == "nb":
        X = np.random.default_rng(0).poisson(np.exp(2 + X.clip(-3, 3) / 2)).astype(np.float32)
    m = MSSVAE(likelihood=likelihood, n_shared=3, n_specific=1, hidden=(16, 16), max_epochs=3, batch_size=64,
               device="cpu").fit(X, study)
    mod = m.module_.train()
    args = loss_args(m, X, (study == "s1").astype(np.int64), 64)
    torch.manual_seed(0)
    fp32 = mod.loss(*args)[0].loss.item()
    torch.manual_seed(0)
    with autocast(cpu, torch.bfloat16):
        bf16 = mod.loss(*args)[0].loss.item()
    gap = abs(bf16 - fp32) / abs(fp32)
    print(f"{likelihood:8s} test batch: fp32 {fp32:.6g}, bf16 {bf16:.6g}, relative gap {gap:.2e}")

# 2. The time of a training step.
sim = simulate_rnaseq(n_samples=300, n_features=2000, random_state=0)
m = MSSVAE(likelihood="nb", n_shared=20, n_specific=5, hidden=(64, 64), max_epochs=1, batch_size=128,
           prune_masks=False, random_state=0).fit(sim.X, sim.study)
mod = m.module_.train()
codes = np.searchsorted(np.array(m.studies_), sim.study)
X = sim.X.astype(np.float32)
args = loss_args(m, X, codes, 128)


def step(dtype):
    mod.zero_grad(set_to_none=True)
    t = time.perf_counter()
    if dtype is None:
        out = mod.loss(*args)[0]
    else:
        with autocast(cpu, dtype):
            out = mod.loss(*args)[0]
    out.loss.backward()
    return time.perf_counter() - t


times = {"fp32": [], "bf16": []}
for rep in range(6):
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        s = step(dtype)
        if rep:
            times[name].append(s)
med = {k: statistics.median(v) for k, v in times.items()}
print(f"NB training step (G 2000, batch 128, hidden 64/64): fp32 {med['fp32'] * 1e3:.1f} ms, "
      f"bf16 autocast {med['bf16'] * 1e3:.1f} ms: bf16 {med['bf16'] / med['fp32']:.1f}x slower")


a32, b32 = torch.randn(1024, 1024), torch.randn(1024, 1024)
a16, b16 = a32.bfloat16(), b32.bfloat16()
gemm = {"fp32": [], "bf16": []}
for rep in range(6):
    for name, (a, b) in (("fp32", (a32, b32)), ("bf16", (a16, b16))):
        t = time.perf_counter()
        a @ b
        if rep:
            gemm[name].append(time.perf_counter() - t)
g = {k: statistics.median(v) for k, v in gemm.items()}
print(f"1024^3 matmul: fp32 {g['fp32'] * 1e3:.1f} ms ({2 * 1024**3 / g['fp32'] / 1e9:.0f} GFLOP/s), "
      f"bf16 {g['bf16'] * 1e3:.1f} ms: bf16 {g['bf16'] / g['fp32']:.1f}x slower")
