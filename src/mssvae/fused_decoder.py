"""The decoder's hidden path as one fused GPU kernel (issue 9, goal 4): opt-in, needs Triton.

Switched on by the environment variable ``MSSVAE_FUSED_DECODER=1`` for tensors on a CUDA device
(or anywhere under Triton's CPU interpreter, ``TRITON_INTERPRET=1``, which the tests use).  It
computes what :func:`mssvae.module.decoder_output` computes with its two large matrix products;
the values agree up to float rounding (``tests/test_fused_decoder.py``: loss and every gradient).
Off by default: it has not yet been timed on a GPU (docs/performance.md, "A fused decoder kernel").
"""
from __future__ import annotations

import math
import os
from functools import lru_cache

import torch

ENV = "MSSVAE_FUSED_DECODER"
INT32_LIMIT = 2**31   # the kernels index their largest buffers (h2, dW's partial sums) with int32 offsets


@lru_cache(maxsize=1)
def _kernels():
    try:
        from . import _triton_decoder
    except ImportError as err:
        raise RuntimeError(f"{ENV}=1 needs the 'triton' package, which is not installed ({err})") from err
    return _triton_decoder


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


class DoesNotFit(RuntimeError):
    """The forward kernel, at ``CONFIG["fwd"]``'s tiling, needs more of this GPU than it has.

    Its default needs 128–160 KiB of shared memory at Table 2's network (ptxas's report:
    benchmarks/results/fused_ptxas*.csv), which an H100/H200 (227 KiB a block) has and many smaller
    GPUs (about 100 KiB on sm_86/sm_89) do not: :func:`mssvae.module.decoder_output` then warns once
    and takes the matrix products instead.
    """


# (device, Kg, H1, H2, product bytes, forward tiling) whose forward did not fit: never tried again
_UNFIT: set = set()


def _fit_key(device: torch.device, Kg: int, H1: int, H2: int, itemsize: int) -> tuple:
    return str(device), Kg, H1, H2, itemsize, repr(CONFIG["fwd"])


def active(z: torch.Tensor) -> bool:
    """Whether the fused path is asked for (``MSSVAE_FUSED_DECODER=1``) and can run for this tensor's device."""
    return os.environ.get(ENV, "0") == "1" and (z.is_cuda or _interpreted())


def applies(z: torch.Tensor, K: int, H1: int, H2: int) -> bool:
    """Whether :func:`mssvae.module.decoder_output` takes the fused path: asked for, on a GPU (or the
    interpreter), for a decoder whose weights fit on chip in the products' dtype, and for a batch
    that is not empty."""
    if not active(z) or z.shape[0] == 0:
        return False
    itemsize = _compute_dtype(z.device)[1].itemsize
    return supports(K, H1, H2, itemsize=itemsize) and _fit_key(z.device, K, H1, H2, itemsize) not in _UNFIT


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


# Tile sizes, warps and pipeline stages of the two kernels.  Chosen by compiling for sm_90a on a CPU
# and reading ptxas's register report (docs/performance.md, "A fused decoder kernel"): with the
# kernels' transposed tiles, the largest row blocks that compile without spills, every product on
# Hopper's wgmma; not yet timed on a GPU (benchmarks/fused_tune.py scans them there).  tl.dot needs
# every dimension ≥ 16.
CONFIG = {"fwd": dict(BM=64, num_warps=8, num_stages=1),
          "bwd": dict(BM=16, BH1=64, num_warps=8, num_stages=2)}
# The forward keeps V1 (Kg × H1) and V2 (H1 × H2) on chip for a whole run of features: at most 128 KiB
# between them (of an H100/H200's 227 KiB of shared memory per block), so 64 Ki entries in bf16 (the
# training step under autocast) and 32 Ki in fp32 (fits in fp32 and the no-grad passes outside autocast).
MAX_RESIDENT_BYTES = 131072


def supports(K: int, H1: int, H2: int, itemsize: int = 2) -> bool:
    """Whether the fused kernels take a decoder of K latent columns and hidden sizes (H1, H2), with
    products in a dtype of ``itemsize`` bytes (2: bf16, 4: fp32)."""
    return (_pow2(K) * _pow2(H1) + _pow2(H1) * _pow2(H2)) * itemsize <= MAX_RESIDENT_BYTES


def _blocks(which: str, Kg: int, H1: int, H2: int) -> dict:
    c = dict(CONFIG[which], KP=_pow2(Kg), H2P=_pow2(H2))
    if which == "fwd":
        c["H1P"] = _pow2(H1)
    else:
        c["BH1"] = min(c["BH1"], _pow2(H1))
    return c


def _runs(g: int, programs: int, device: torch.device, per_sm: int) -> tuple[int, int]:
    """(number of runs, features per run) that split g features so that programs × runs is at least
    per_sm × SMs (or runs = g) and, up to 3× that, fills its last wave of one program per SM best
    (the fewest runs within 2 % of the best).

    At the default tilings a program holds a whole SM (shared memory or registers), and programs of
    a launch take about the same time, so a launch runs in waves of one program per SM: 576 programs
    on 132 SMs (the backward at batch 512 in 6 studies, with 4 per SM asked) take 5 waves for 4.36
    waves of work; 1,296 (9 runs) take 10 for 9.82.  More runs only write more partial weight sums
    (tens of MB a step at that size), which is cheap beside an idle eighth of the GPU.
    """
    return _split(g, programs, _n_sm(device), per_sm)


@lru_cache(maxsize=256)   # a fit calls it with the same few shapes at every step
def _split(g: int, programs: int, sm: int, per_sm: int) -> tuple[int, int]:
    lo = max(1, min(g, _cdiv(per_sm * sm, programs)))
    runs = {_cdiv(g, _cdiv(g, n)) for n in range(lo, min(g, 3 * lo) + 1)}   # runs launched: none empty
    waves = {n: _cdiv(programs * n, sm) * sm / (programs * n) for n in runs if n >= lo}   # waves run / waves of work
    best = min(waves.values())
    n = min(n for n, w in waves.items() if w <= best + 0.02)   # fewer runs (partial sums) unless it costs > 2 %
    return n, _cdiv(g, n)


def _row_launches(r: int, BM: int) -> list[tuple[int, int, int]]:
    """(row block, first row, blocks per study) of the forward's launches over a study's r rows: as
    many full blocks of BM as fit, then one block of the next power of two ≥ 16 for the rest.

    Training's balanced batches have r = batch_size // M rows a study (85 at batch 512 and 6 studies),
    which blocks of 64 alone would pad to 128, a third of the forward's products spent on padding;
    64 + 32 pads to 96, as the backward's 16-row blocks do.
    """
    full, rest = divmod(r, BM)
    launches = [(BM, 0, full)] if full else []
    if rest:
        launches.append((min(BM, _pow2(rest)), full * BM, 1))
    return launches


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _n_sm(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def _compute_dtype(device: torch.device):
    tl = _kernels().tl
    if hasattr(torch, "get_autocast_dtype"):   # torch ≥ 2.4
        on, autocast_dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    else:
        on, autocast_dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    if device.type == "cuda" and not _interpreted() and on and autocast_dtype == torch.bfloat16:
        return tl.bfloat16, torch.bfloat16
    return tl.float32, torch.float32


def _precision(dt) -> str:
    return "ieee" if dt == _kernels().tl.float32 else "tf32"


class _FusedHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, store, zg, Wg, V1g, V2, b2, vh):
        k = _kernels()
        dtype = zg.dtype   # the kernels compute in fp32 (bf16 products on a GPU) and return this
        M, r, Kg = zg.shape
        g, H1, H2 = Wg.shape[1], V1g.shape[2], V2.shape[0]
        blk = _blocks("fwd", Kg, H1, H2)
        dt, torch_dt = _compute_dtype(zg.device)
        zg, Wg, V1g, b2, vh = (t.detach().float().contiguous() for t in (zg, Wg, V1g, b2, vh))
        V2t = V2.detach().float().t().contiguous()            # (H1, H2)
        out = torch.empty(M, g, r, device=zg.device, dtype=torch.float32)   # a program's rows contiguous
        h2 = torch.empty((M * g * r, blk["H2P"]) if store else (1,), device=zg.device, dtype=torch_dt)
        try:   # Triton raises before it launches a kernel that does not fit (out is then dropped)
            for BM, row0, n_mb in _row_launches(r, blk["BM"]):
                n_runs, per = _runs(g, M * n_mb, zg.device, per_sm=2)   # long runs: the weights are read once a run
                k._hidden_fwd[(M * n_mb, n_runs)](zg, Wg, V1g, V2t, b2, vh, out, h2, r, g, Kg, H1, H2, n_mb, per,
                                                  row0, DT=dt, PREC=_precision(dt), STORE_H2=store, **dict(blk, BM=BM))
        except k.OutOfResources as err:
            _UNFIT.add(_fit_key(zg.device, Kg, H1, H2, torch_dt.itemsize))
            raise DoesNotFit(f"the fused decoder ({ENV}=1) does not fit this GPU at fused_decoder.CONFIG['fwd'] = "
                             f"{CONFIG['fwd']}: {err}") from err
        if store:
            ctx.save_for_backward(zg, Wg, V1g, V2t, vh, h2)
            ctx.sizes = (M, r, g, Kg, H1, H2, dt, blk["H2P"])
        return out.transpose(1, 2).to(dtype)

    @staticmethod
    def backward(ctx, dF):
        k = _kernels()
        zg, Wg, V1g, V2t, vh, h2 = ctx.saved_tensors
        M, r, g, Kg, H1, H2, dt, h2_stride = ctx.sizes
        blk = _blocks("bwd", Kg, H1, H2)
        BM, KP, H2P = blk["BM"], blk["KP"], blk["H2P"]
        assert H2P == h2_stride
        n_mb = _cdiv(r, BM)
        n_bh = _cdiv(H1, blk["BH1"])
        P = M * n_mb
        # Enough programs to fill the GPU (~4 per SM), each looping over a run of features so that
        # its weight-gradient partials are summed on chip, not written per feature.
        n_gs, per = _runs(g, n_bh * P, zg.device, per_sm=4)
        dev, f32 = zg.device, torch.float32
        dz = torch.empty(n_bh, n_gs, P, BM, KP, device=dev, dtype=f32)
        dW = torch.empty(n_bh, P, g, KP, device=dev, dtype=f32)
        dV1 = torch.empty(P * n_gs, H1, KP, device=dev, dtype=f32)
        dV2 = torch.empty(P * n_gs, H2P, H1, device=dev, dtype=f32)
        dvh = torch.empty(P, g, H2P, device=dev, dtype=f32)
        db2 = torch.empty(P * n_gs, H2P, device=dev, dtype=f32)
        dF = dF.float().transpose(1, 2).contiguous()          # (M, g, r), as the forward wrote F
        try:
            k._hidden_bwd[(n_bh, P, n_gs)](zg, Wg, V1g, V2t, vh, dF, h2,
                                            dz, dW, dV1, dV2, dvh, db2, r, g, Kg, H1, H2, n_mb, per,
                                            DT=dt, PREC=_precision(dt), **blk)
        except k.OutOfResources as err:   # the default needs 43 KiB, so this is a CONFIG set by hand
            raise RuntimeError(f"the fused decoder's backward ({ENV}=1) does not fit this GPU at "
                               f"fused_decoder.CONFIG['bwd'] = {CONFIG['bwd']}: {err} Choose smaller tiles "
                               f"or unset {ENV}.") from err
        d_zg = dz.sum((0, 1)).view(M, n_mb * BM, KP)[:, :r, :Kg]
        d_Wg = dW.sum(0).view(M, n_mb, g, KP).sum(1)[..., :Kg]
        d_V1g = dV1.view(M, n_mb * n_gs, H1, KP).sum(1)[..., :Kg].transpose(1, 2)
        d_V2 = dV2.sum(0)[:H2]
        d_b2 = db2.sum(0)[:H2]
        d_vh = dvh.sum(0)[:, :H2]
        return None, d_zg, d_Wg, d_V1g, d_V2, d_b2, d_vh


def _largest_buffer(M: int, r: int, g: int, Kg: int, H1: int, H2: int) -> int:
    """Entries of the largest buffer a call writes with int32 offsets: h2 (M·r·g rows of H2, padded)
    or the backward's partial dW sums (one row of K per block of H1, block of rows and feature)."""
    blk = _blocks("bwd", Kg, H1, H2)
    partial_dW = _cdiv(H1, blk["BH1"]) * M * _cdiv(r, blk["BM"]) * g * blk["KP"]
    return max(M * r * g * blk["H2P"], partial_dW)


def hidden(zg: torch.Tensor, Wg: torch.Tensor, V1g: torch.Tensor, V2: torch.Tensor, b2: torch.Tensor,
           v_hidden: torch.Tensor) -> torch.Tensor:
    """F (M, r, g) with F[m, i, j] = v_hidden[j] · ReLU(V2 ReLU(V1g[m]ᵀ (zg[m, i] ⊙ Wg[m, j])) + b2).

    zg (M, r, Kg): each study's rows and columns of z~; Wg (M, g, Kg): the same columns of W;
    V1g (M, Kg, H1): the same rows of V1ᵀ; V2 (H2, H1), b2 (H2,), v_hidden (g, H2).  The plain
    layout is M = 1 with every column.  Differentiable in all six.  The kernels compute in fp32, or with
    bf16 products under CUDA autocast, and return F in zg's dtype.
    """
    M, r, _ = zg.shape
    if r == 0 or Wg.shape[1] == 0:
        return zg.new_zeros(M, r, Wg.shape[1])
    # h2 is kept for the backward only when one will run (a forward under no_grad writes F alone).
    store = torch.is_grad_enabled() and any(t.requires_grad for t in (zg, Wg, V1g, V2, b2, v_hidden))
    g = Wg.shape[1]
    if store and g > 1 and _largest_buffer(M, r, g, zg.shape[2], V1g.shape[2], V2.shape[0]) >= INT32_LIMIT:
        half = g // 2
        return torch.cat([hidden(zg, Wg[:, :half], V1g, V2, b2, v_hidden[:half]),
                          hidden(zg, Wg[:, half:], V1g, V2, b2, v_hidden[half:])], dim=2)
    return _FusedHidden.apply(store, zg, Wg, V1g, V2, b2, v_hidden)
