"""Where a training step's time goes: torch.profiler over a short platelet-size fit (issue 9, goal 4).

    python benchmarks/profile_fit.py --device cuda --epochs 6 --set feature_subsample=0.05

Data as `platelet_size.py` (N = 1463 in Table 1's six groups, G = 5000, NB).  One warm-up fit of
2 epochs (cuBLAS handles, allocator), then a profiled fit of --epochs epochs with the check, the
merge and the anchor rule off, so only training is profiled.  Prints the host-device
synchronisations (cudaStreamSynchronize, cudaMemcpy*, ...) per step, the kernels launched per step,
and the top operators by device time and by host time; --trace writes a Chrome trace.
"""

from __future__ import annotations

import argparse
import ast
import math
import time
from pathlib import Path

import torch
from platelet_size import platelet_data  # the script's folder is on sys.path
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from mssvae import MSSVAE


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="another MSSVAE setting")
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--trace", type=Path, default=None)
    a = p.parse_args()
    sim = platelet_data(0)
    extra = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    settings = dict(dict(likelihood="nb", n_shared=50, n_specific=10, hidden=(256, 128), batch_size=512,
                         kl_free=0.5, prune_masks=False, merge_dependent=None, min_anchors=0, device=a.device,
                         random_state=0), **extra)
    MSSVAE(**dict(settings, max_epochs=2)).fit(sim.X, sim.study)   # warm-up
    cuda = a.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        MSSVAE(**dict(settings, max_epochs=a.epochs)).fit(sim.X, sim.study)
        if cuda:
            torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    steps = a.epochs * math.ceil(len(sim.study) / settings["batch_size"])
    events = prof.key_averages()
    sync_names = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpy", "cudaMemcpyAsync",
                  "cudaEventSynchronize")
    print(f"profiled fit: {a.epochs} epochs, {steps} steps, {seconds:.2f} s (with profiler overhead)")
    for e in events:
        if e.key in sync_names:
            print(f"  {e.key}: {e.count / steps:.1f} per step, {e.cpu_time_total / 1e3 / steps:.2f} ms per step")
    if cuda:
        kinds = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
        launches = sum(e.count for e in events if e.key in kinds)
        replays = sum(e.count for e in events if e.key == "cudaGraphLaunch")
        # Kernels, copies and memsets only: operators' rows repeat their kernels' time.
        device_ms = sum(e.self_device_time_total for e in events if e.device_type == DeviceType.CUDA) / 1e3
        print(f"  kernel launches from the host: {launches / steps:.0f} per step, graph replays {replays / steps:.2f} "
              f"per step; kernel time {device_ms / steps:.2f} ms per step, wall {seconds / steps * 1e3:.2f} ms")
        print(events.table(sort_by="self_device_time_total", row_limit=a.rows, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.rows, max_name_column_width=60))
    if a.trace:
        prof.export_chrome_trace(str(a.trace))


if __name__ == "__main__":
    main()
