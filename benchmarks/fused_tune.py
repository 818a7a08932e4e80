"""Tile sizes of the fused decoder kernels (`mssvae.fused_decoder.CONFIG`) on a GPU, one run.

    python benchmarks/fused_tune.py --out benchmarks/results/fused_tune_h200.csv

At the RNA configuration of issue 9 (batch 512, G = 5000, K = 80, hidden 256/128; --studies 6 for
training's grouped layout) it first times the forward kernel alone for each forward tiling, then the
whole step (forward + backward) for each backward tiling with the best forward one, each as a
share of the bf16 GEMM peak measured in the same run.  Every row is also checked against the unfused
step (relative difference of the output and of W's gradient).  Needs CUDA and triton.

Compiling a tiling takes seconds of host time (the backward most), which on a lent GPU is device
time: with --compile-processes P (default on CUDA: up to 12), a pool of P processes first runs one
fused step per tiling (each tiling once, spread over the pool), so that Triton's on-disk cache holds
every kernel before the timing starts (same shapes, so the same specialisation and cache key) and
the timing process only loads them.  Tilings that fail there are not tried again.
"""
from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import platform
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import decoder_speed as ds
import torch

from mssvae import fused_decoder

_inputs = None   # a compiling process's decoder inputs (built once per process)


def _build(a):
    torch.manual_seed(0)
    H1, H2 = (int(v) for v in a.hidden.split(","))
    return ds.decoder_inputs(a.batch, a.features, a.latent, (H1, H2), a.studies, a.shared, torch.device(a.device))


def _compile_init(a) -> None:
    global _inputs
    _inputs = (_build(a), torch.bfloat16 if torch.device(a.device).type == "cuda" else None, a.features)


def _compile(job) -> str:
    """One fused step with one tiling (which kernel, its tiles): Triton compiles and caches the kernels."""
    (dec, z, W, grouped), dtype, G = _inputs
    which, cfg = job
    fused_decoder.CONFIG[which] = cfg
    try:
        with ds.fused(True):
            ds.decoder_step(dec, z, W, G, dtype, grouped)()
        return ""
    except Exception as err:   # a tiling that does not compile (registers, shared memory)
        return repr(err)[:200]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--features", type=int, default=5000)
    p.add_argument("--latent", type=int, default=80)
    p.add_argument("--hidden", default="256,128")
    p.add_argument("--studies", type=int, default=0)
    p.add_argument("--shared", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda", help="cpu only for a smoke test under TRITON_INTERPRET=1")
    p.add_argument("--compile-processes", type=int, default=None,
                   help="processes that compile the tilings before the timing (default: up to 12 on CUDA, 0 on cpu)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else None
    B, G, K = a.batch, a.features, a.latent
    H1, H2 = (int(v) for v in a.hidden.split(","))
    # 8 warps only: at 4, every tiling spills 52 B or more (results/fused_ptxas.csv)
    fwd_tiles = [dict(BM=bm, num_warps=8, num_stages=s) for bm, s in itertools.product((16, 32, 64, 128), (1, 2))]
    bwd_tiles = [dict(BM=bm, BH1=bh, num_warps=8, num_stages=s)
                 for bm, bh, s in itertools.product((16, 32, 64), (32, 64, 128), (1, 2))]
    n_proc = a.compile_processes if a.compile_processes is not None else (min(12, os.cpu_count() or 1) if cuda else 0)
    if n_proc > 0:
        jobs = [("fwd", c) for c in fwd_tiles] + [("bwd", c) for c in bwd_tiles]
        try:
            with ProcessPoolExecutor(n_proc, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_compile_init, initargs=(a,)) as pool:
                errors = list(pool.map(_compile, jobs))
        except Exception as err:   # a worker that died (or could not start CUDA): compile while timing instead
            print("parallel compile skipped:", repr(err)[:200], flush=True)
        else:
            failed = [job for job, e in zip(jobs, errors) if e]
            print(f"compiled {len(jobs) - len(failed)} of {len(jobs)} tilings in {n_proc} processes", flush=True)
            for (which, cfg), e in zip(jobs, errors):
                if e:
                    print(which, cfg, "failed:", e, flush=True)
            fwd_tiles = [c for c in fwd_tiles if ("fwd", c) not in failed]
            bwd_tiles = [c for c in bwd_tiles if ("bwd", c) not in failed]
    dec, z, W, grouped = _build(a)
    B = z.shape[0]
    # The hidden path's useful FLOPs, forward: with --studies a sample's first layer needs only its
    # study's K_S + K_m columns, and counting all K would flatter the grouped layout.
    k_used = K if grouped is None else grouped[0].study_columns.shape[1]
    flops_fwd = 2.0 * B * G * (k_used * H1 + H1 * H2 + H2)
    peak = ds.gemm_peak(8192 if cuda else 256, a.repeats, a.device, dtype or torch.float32) * 1e9

    def forward_only():
        with ds.autocast(dev, dtype):
            V1, V2, b2 = dec.weights()
            zg, V1g = (z, V1) if grouped is None else grouped[0].grouped_latent(z, grouped[1])
            ds.dec_total(dec, grouped)(z, V1g, V2, b2, zg, W, dec.v_hidden, dec.v_skip, dec.bias)

    reference = ds.step_result(dec, z, W, G, dtype, grouped, False)   # the unfused step, once

    def record(kind, cfg, seconds, flops):
        err = ds.relative_differences(ds.step_result(dec, z, W, G, dtype, grouped, True), reference)
        row = dict(kind=kind, **{f"{k}": v for k, v in cfg.items()}, seconds=round(seconds, 5),
                   tflops=round(flops / seconds / 1e12, 1), share_of_peak=round(flops / seconds / peak, 3),
                   rel_diff_output=err[0], rel_diff_grad_W=err[1], batch=B, features=G, latent=K,
                   latent_used=k_used, hidden=a.hidden, studies=a.studies, bf16_peak_tflops=round(peak / 1e12, 1),
                   device=torch.cuda.get_device_name(dev) if cuda else "cpu (interpreter)",
                   machine=f"{platform.machine()}, torch {torch.__version__}")
        ds.append_row(row, a.out)   # row by row: a run cut short by its time limit keeps what it measured

    best_fwd, best = None, float("inf")
    with ds.fused(True):
        for cfg in fwd_tiles:
            fused_decoder.CONFIG["fwd"] = cfg
            try:
                t = ds._median_time(forward_only, a.repeats)
            except Exception as err:   # a tiling that does not compile (registers, shared memory)
                print("fwd", cfg, "failed:", repr(err)[:200], flush=True)
                continue
            record("forward", cfg, t, flops_fwd)
            if t < best:
                best_fwd, best = cfg, t
        fused_decoder.CONFIG["fwd"] = best_fwd
        best_bwd, best = None, float("inf")
        for cfg in bwd_tiles:
            fused_decoder.CONFIG["bwd"] = cfg
            try:
                t = ds._median_time(ds.decoder_step(dec, z, W, G, dtype, grouped), a.repeats)
            except Exception as err:
                print("bwd", cfg, "failed:", repr(err)[:200], flush=True)
                continue
            record("step (fwd best)", cfg, t, 3 * flops_fwd)
            if t < best:
                best_bwd, best = cfg, t
    # The line to put into src/mssvae/fused_decoder.py (after checking the CSV's agreement columns).
    print("best tilings: CONFIG = " + repr({"fwd": best_fwd, "bwd": best_bwd}), flush=True)


if __name__ == "__main__":
    main()
