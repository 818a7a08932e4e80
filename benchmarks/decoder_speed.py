"""Decoder training step against the machine's fp32 GEMM peak and against a per-feature Python loop.

    python benchmarks/decoder_speed.py --out benchmarks/results/decoder_speed.csv            # RNA config
    python benchmarks/decoder_speed.py --batch 64 --features 500 --out /tmp/quick.csv      # a quick look

Issue 9, goals 1 and 2, measured in one run so that the ratios share the machine's state:

1. peak: the best of several (n × n) @ (n × n) fp32 matmuls (torch, same threads) in GFLOP/s;
   step: forward + backward of the masked decoder for one batch, in feature chunks the way training
   runs it (`module.chunked_sum` over `module.decoder_output`), with its useful FLOPs counted as
   6·B·G·(K·H1 + H1·H2 + H2 + K) (multiply-add = 2, backward = 2 × forward).
2. loop: the same function computed one feature at a time in Python, the way the single-study
   reference code decodes (`for j in range(G)`), forward + backward, timed on all G features.
   With --studies M, also the step as training runs it on a batch sorted by study: each study's
   first layer reads only its K_S + K_m columns (`decoder_output(..., grouped)`).
   With --subsample F, also the step of a `feature_subsample=F` fit: a new random ceil(F·G) of the
   features per step (their rows of W and of the per-feature weights gathered inside the timed
   step), grouped when --studies is given.  That is per step, so per epoch, the decoder work of
   training against the loop's all-G decoding: an algorithmic saving, not the same arithmetic.
4. --fused (GPU, needs triton): the same step with `MSSVAE_FUSED_DECODER=1`, the hidden path as one
   Triton kernel (`mssvae.fused_decoder`), plain and (with --studies) grouped, all features in one
   chunk unless --fused-chunk says otherwise; the row also records how far its loss and W's
   gradient are from the unfused step's in the same run (relative max difference).  The grouped
   fused step's share of the peak counts the K_S + K_m columns its first layer reads.
   --profile-fused PATH also writes torch.profiler's table of three fused steps (where the time goes).

Each timing is the median of --repeats runs after one warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch.nn import functional as F

from mssvae.model import default_chunk_size
from mssvae.module import MaskedDecoder, MSSVAEModule, chunked_sum, decoder_output
from mssvae.training import autocast


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: allocator, thread pool, cuBLAS handles
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()   # GPU work is asynchronous: the clock stops when the device is done
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def gemm_peak(n: int, repeats: int, device: str = "cpu", dtype=torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _median_time(lambda: a @ b, repeats) / 1e9


def dec_total(dec: MaskedDecoder, grouped):
    def total(z, V1, V2, b2, zg, W, vh, vs, bias):
        return decoder_output(z, W, vh, vs, bias, V1, V2, b2, dec.normalized,
                              None if grouped is None else (zg, grouped[0].study_columns)).sum()
    return total


def decoder_step(dec: MaskedDecoder, z, W, chunk, autocast_dtype=None, grouped=None, n_subsample=None):
    """``grouped = (module, study slices)``: the first layer as training runs it on a batch sorted by study.

    ``n_subsample``: each step decodes a new random subset of that many features (`feature_subsample`).
    """
    total = dec_total(dec, grouped)

    def step():
        dec.zero_grad(set_to_none=True)
        W.grad = None
        per_feature = [W, dec.v_hidden, dec.v_skip, dec.bias]
        if n_subsample is not None:   # as training: sorted indices, the gathers' backward is a scatter
            features = torch.randperm(W.shape[0], device=W.device)[:n_subsample].sort().values
            per_feature = [t[features] for t in per_feature]
        with autocast(z.device, autocast_dtype):
            V1, V2, b2 = dec.weights()
            zg, V1g = (z, V1) if grouped is None else grouped[0].grouped_latent(z, grouped[1])
            value = chunked_sum(total, (z, V1g, V2, b2, zg), per_feature, (0, 0, 0, 0), chunk)
        value.backward()
        return value.detach()
    return step


@contextlib.contextmanager
def fused(on: bool):
    old = os.environ.get("MSSVAE_FUSED_DECODER")
    os.environ["MSSVAE_FUSED_DECODER"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["MSSVAE_FUSED_DECODER"]
        else:
            os.environ["MSSVAE_FUSED_DECODER"] = old


def step_result(dec, z, W, chunk, autocast_dtype, grouped, use_fused: bool):
    """(summed output, W's gradient) of one decoder step, fused or not."""
    with fused(use_fused):
        value = decoder_step(dec, z, W, chunk, autocast_dtype, grouped)()
    return value.float(), W.grad.detach().clone()


def relative_differences(result, reference) -> tuple[float, float]:
    """Relative difference of the summed output and of W's gradient (max entry)."""
    (o1, g1), (o0, g0) = result, reference
    return (float((o1 - o0).abs() / o0.abs().clamp_min(1e-12)),
            float((g1 - g0).abs().max() / g0.abs().max().clamp_min(1e-12)))


def fused_agreement(dec, z, W, chunk, fused_chunk, autocast_dtype, grouped) -> tuple[float, float]:
    """relative_differences of the fused step against the unfused one."""
    return relative_differences(step_result(dec, z, W, fused_chunk, autocast_dtype, grouped, True),
                                step_result(dec, z, W, chunk, autocast_dtype, grouped, False))


def loop_step(dec: MaskedDecoder, z, W, autocast_dtype=None):
    """f_j for j = 1..G one feature at a time (the reference code's layout), then backward."""
    def step():
        dec.zero_grad(set_to_none=True)
        W.grad = None
        total = 0.0
        with autocast(z.device, autocast_dtype):
            for j in range(W.shape[0]):
                c = z * W[j]                                           # (B, K)
                h = F.relu(c @ dec.V1.weight.t())                      # (B, H1)
                h = F.relu(F.linear(h, dec.V2.weight, dec.V2.bias))    # (B, H2)
                f = h @ dec.v_hidden[j] + c @ dec.v_skip[j] + dec.bias[j]
                total = total + f.sum()
            total.backward()
    return step


def decoder_inputs(B: int, G: int, K: int, hidden: tuple[int, int], studies: int, shared: int, dev):
    """(decoder, z (B', K), W (G, K), grouped): random weights and latents; with studies > 1, z~ of a batch
    sorted by study (zero outside each sample's own columns, B' = B rounded down to a multiple of the
    studies), as training has, and grouped = (module, study slices) for its grouped first layer."""
    dec = MaskedDecoder(G, K, hidden).to(dev)
    z = torch.randn(B, K, device=dev)
    W = torch.randn(G, K, requires_grad=True, device=dev)
    grouped = None
    if studies > 1:
        k_m, r = (K - shared) // studies, B // studies
        module = MSSVAEModule(G, shared, [k_m] * studies, hidden, "gaussian").to(dev)
        module.decoder = dec
        z = torch.zeros_like(z)[: r * studies]
        for s, cols in enumerate(module.study_columns):
            z[s * r:(s + 1) * r, cols] = torch.randn(r, cols.numel(), device=dev)
        grouped = module, [slice(s * r, (s + 1) * r) for s in range(studies)]
    return dec, z, W, grouped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--features", type=int, default=5000)
    p.add_argument("--latent", type=int, default=80, help="K = K_S + Σ K_m columns of W")
    p.add_argument("--hidden", default="256,128")
    p.add_argument("--chunk", type=int, default=None, help="features per chunk (default: as MSSVAE picks)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gemm-n", type=int, default=2048)
    p.add_argument("--device", default="cpu", help="cpu or cuda: on cuda the step runs under bf16 autocast "
                   "(as training does) and the peak is the bf16 GEMM's")
    p.add_argument("--no-loop", action="store_true", help="skip the per-feature loop (chunk-size scans)")
    p.add_argument("--studies", type=int, default=0,
                   help="M > 1: also time training's grouped first layer, the batch split into M studies of "
                   "--shared + (K - shared)/M columns each (as MSSVAEModule.grouped_latent)")
    p.add_argument("--shared", type=int, default=50, help="K_S, with --studies")
    p.add_argument("--subsample", type=float, default=None,
                   help="F < 1: also time the step of feature_subsample=F (grouped with --studies)")
    p.add_argument("--fused", action="store_true",
                   help="also time the fused Triton decoder (MSSVAE_FUSED_DECODER=1; a GPU and triton)")
    p.add_argument("--fused-chunk", type=int, default=None, help="features per chunk of the fused step (all)")
    p.add_argument("--profile-fused", type=Path, default=None,
                   help="with --fused: write torch.profiler's table of 3 fused steps (grouped with --studies) here")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    B, G, K = a.batch, a.features, a.latent
    H1, H2 = (int(v) for v in a.hidden.split(","))
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32   # training's arithmetic on that device
    chunk = a.chunk or default_chunk_size(B, (H1, H2), G, a.device) or G  # what MSSVAE picks
    dec, z, W, grouped = decoder_inputs(B, G, K, (H1, H2), a.studies, a.shared, dev)
    B = z.shape[0]   # with --studies, a multiple of the number of studies: every step runs on these rows
    flops = 6.0 * B * G * (K * H1 + H1 * H2 + H2 + K)
    # a grouped first layer reads only each study's K_S + K_m columns: its useful FLOPs count those
    k_used = K if grouped is None else grouped[0].study_columns.shape[1]
    flops_grouped = 6.0 * B * G * (k_used * H1 + H1 * H2 + H2 + K)

    peak = gemm_peak(a.gemm_n, a.repeats, a.device, dtype)
    t_step = _median_time(decoder_step(dec, z, W, chunk, dtype if cuda else None), a.repeats)
    t_grouped = float("nan") if grouped is None else _median_time(
        decoder_step(dec, z, W, chunk, dtype if cuda else None, grouped), a.repeats)
    t_loop = float("nan") if a.no_loop else _median_time(loop_step(dec, z, W, dtype if cuda else None),
                                                            max(1, a.repeats - 2))
    n_sub = None if a.subsample is None else math.ceil(a.subsample * G)
    t_sub = float("nan") if n_sub is None else _median_time(
        decoder_step(dec, z, W, chunk, dtype if cuda else None, grouped, n_sub), a.repeats)
    t_fused = t_fused_grouped = err_out = err_grad = float("nan")
    if a.fused:
        fchunk = a.fused_chunk or G
        with fused(True):
            t_fused = _median_time(decoder_step(dec, z, W, fchunk, dtype if cuda else None), a.repeats)
            if grouped is not None:
                t_fused_grouped = _median_time(decoder_step(dec, z, W, fchunk, dtype if cuda else None, grouped),
                                               a.repeats)
        err_out, err_grad = fused_agreement(dec, z, W, chunk, fchunk, dtype if cuda else None, grouped)
        if a.profile_fused:
            with fused(True):
                profile_step(decoder_step(dec, z, W, fchunk, dtype if cuda else None, grouped), a.profile_fused, cuda)
    peak_after = gemm_peak(a.gemm_n, a.repeats, a.device, dtype)  # the machine's state may drift during the run
    peak = max(peak, peak_after)
    row = dict(
        decoder="(B·g)-row GEMMs, fused chunks",
        batch=B, features=G, latent=K, hidden=f"{H1},{H2}", chunk=chunk, threads=torch.get_num_threads(),
        gemm_peak_gflops=round(peak, 1), step_seconds=round(t_step, 3),
        step_gflops=round(flops / t_step / 1e9, 1), share_of_peak=round(flops / t_step / 1e9 / peak, 3),
        loop_step_seconds=round(t_loop, 3), speedup_vs_loop=round(t_loop / t_step, 1),
        studies=a.studies, grouped_step_seconds=round(t_grouped, 3),
        grouped_speedup_vs_loop=round(t_loop / t_grouped, 1), grouped_vs_plain=round(t_step / t_grouped, 2),
        subsample=a.subsample, subsampled_step_seconds=round(t_sub, 3),
        subsampled_speedup_vs_loop=round(t_loop / t_sub, 1),
        fused_step_seconds=round(t_fused, 4), fused_share_of_peak=round(flops / t_fused / 1e9 / peak, 3),
        fused_grouped_step_seconds=round(t_fused_grouped, 4),
        fused_grouped_share_of_peak=round(flops_grouped / t_fused_grouped / 1e9 / peak, 3),
        fused_vs_plain=round(t_step / t_fused, 2),
        fused_rel_diff_output=err_out, fused_rel_diff_grad_W=err_grad,
        device=torch.cuda.get_device_name(dev) if cuda else "cpu", dtype=str(dtype).replace("torch.", ""),
        machine=f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads",
    )
    append_row(row, a.out)


def profile_step(fn, path: Path, cuda: bool, steps: int = 3) -> None:
    """Write (and print) torch.profiler's per-kernel table of ``steps`` runs of ``fn``: where a step's
    time goes (the fused kernels, their tail launches, the partial-sum reductions, the small ops)."""
    from torch.profiler import ProfilerActivity, profile
    fn()   # compiled and warm before the profile
    _sync()
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for _ in range(steps):
            fn()
        _sync()
    table = prof.key_averages().table(sort_by="self_device_time_total" if cuda else "self_cpu_time_total",
                                      row_limit=25)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{steps} steps\n{table}\n")
    print(table)


def append_row(row: dict, out: Path | None) -> None:
    """Print one result row and append it to ``out`` (also used by adam_step.py)."""
    df = pd.DataFrame([row])
    print(df.T.to_string(header=False))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():   # earlier rows may lack the newer columns
            df = pd.concat([pd.read_csv(out), df], ignore_index=True)
        df.to_csv(out, index=False)


if __name__ == "__main__":
    main()
