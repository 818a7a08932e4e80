"""One Adam step over the platelet-size module's parameters: per-tensor, foreach and fused, one run.

    python benchmarks/adam_step.py --threads 2 --out benchmarks/results/adam_step.csv

The module of the CPU recipe at the platelet size (G = 5000, K̃_S = 50, six studies of K̃_m = 10,
hidden (64, 64), NB): ~100 parameter tensors, 4 million entries.  Training takes a step per batch,
12 per epoch at batch 128, so a per-step cost that does not shrink with the batch adds up
(`training._adam` picks the fused kernel on a CPU).  Gradients are random; each variant takes 5
warm-up steps, then the mean of --steps steps, and the variants are timed twice, interleaved,
keeping the better of the two, since the machine drifts.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from decoder_speed import append_row  # the script's folder is on sys.path

from mssvae.module import MSSVAEModule

VARIANTS = {"per-tensor": dict(foreach=False), "foreach": dict(foreach=True), "fused": dict(fused=True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", default="64,64")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    hidden = tuple(int(v) for v in a.hidden.split(","))
    params = list(MSSVAEModule(5000, 50, [10] * 6, hidden, "nb").parameters())
    for q in params:
        q.grad = torch.randn_like(q) * 1e-3
    optims = {k: torch.optim.Adam(params, lr=1e-3, **kw) for k, kw in VARIANTS.items()}
    best = dict.fromkeys(VARIANTS, float("inf"))
    for _ in range(2):
        for name, opt in optims.items():
            for _ in range(5):
                opt.step()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                opt.step()
            best[name] = min(best[name], (time.perf_counter() - t0) / a.steps)
    row = dict(hidden=a.hidden, tensors=len(params), entries=sum(q.numel() for q in params),
               **{f"{k}_ms": round(v * 1e3, 2) for k, v in best.items()},
               fused_speedup=round(best["per-tensor"] / best["fused"], 1),
               machine=f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    append_row(row, a.out)


if __name__ == "__main__":
    main()
