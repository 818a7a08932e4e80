"""The decoder's hidden path as one fused GPU kernel (issue 9, goal 4): opt-in, needs Triton.

Switched on by the environment variable ``MSSVAE_FUSED_DECODER=1`` for tensors on a CUDA device
(or anywhere under Triton's CPU interpreter, ``TRITON_INTERPRET=1``, which the tests use).  It
computes what :func:`mssvae.module.decoder_output` computes with its two large matrix products;
the values agree up to float rounding (``tests/test_fused_decoder.py``: loss and every gradient).
Off by default: it has not yet been timed on a GPU (docs/performance.md, "Fused decoder").
"""
from __future__ import annotations

import math
import os
from functools import lru_cache

import torch

ENV = "MSSVAE_FUSED_DECODER"


@lru_cache(maxsize=1)
def _kernels():
    try:
        from . import _triton_decoder
    except ImportError as err:
        raise RuntimeError(f"{ENV}=1 needs the 'triton' package, which is not installed ({err})") from err
    return _triton_decoder


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def active(z: torch.Tensor) -> bool:
    """Whether :func:`mssvae.module.decoder_output` takes the fused path for this latent tensor."""
    return os.environ.get(ENV, "0") == "1" and (z.is_cuda or _interpreted())


def _pow2(n: int, lo: int = 16) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def _blocks(Kg: int, H1: int, H2: int) -> dict:
    # tl.dot needs every dimension ≥ 16; the row tile and H1 block are first guesses, to be tuned
    # on a GPU (benchmarks/decoder_speed.py --fused).
    return dict(BM=64, KP=_pow2(Kg), BH1=min(64, _pow2(H1)), H2P=_pow2(H2))


def _compute_dtype(device: torch.device):
    tl = _kernels().tl
    if device.type == "cuda" and not _interpreted() and torch.is_autocast_enabled("cuda") \
            and torch.get_autocast_dtype("cuda") == torch.bfloat16:
        return tl.bfloat16, torch.bfloat16
    return tl.float32, torch.float32


class _FusedHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, zg, Wg, V1g, V2, b2, vh):
        k = _kernels()
        dtype = zg.dtype   # the kernels compute in fp32 (bf16 products on a GPU) and return this
        M, r, Kg = zg.shape
        g, H1, H2 = Wg.shape[1], V1g.shape[2], V2.shape[0]
        blk = _blocks(Kg, H1, H2)
        dt, torch_dt = _compute_dtype(zg.device)
        zg, Wg, V1g, b2, vh = (t.detach().float().contiguous() for t in (zg, Wg, V1g, b2, vh))
        V2t = V2.detach().float().t().contiguous()            # (H1, H2)
        n_mb = triton_cdiv(r, blk["BM"])
        out = torch.empty(M, r, g, device=zg.device, dtype=torch.float32)
        store = any(ctx.needs_input_grad)
        h2 = torch.empty((M * g * r, blk["H2P"]) if store else (1,), device=zg.device, dtype=torch_dt)
        k._hidden_fwd[(M * n_mb, g)](zg, Wg, V1g, V2t, b2, vh, out, h2, r, g, Kg, H1, H2, n_mb,
                                     DT=dt, STORE_H2=store, **blk)
        if store:
            ctx.save_for_backward(zg, Wg, V1g, V2t, vh, h2)
            ctx.sizes = (M, r, g, Kg, H1, H2, n_mb, dt, blk)
        return out.to(dtype)

    @staticmethod
    def backward(ctx, dF):
        k = _kernels()
        zg, Wg, V1g, V2t, vh, h2 = ctx.saved_tensors
        M, r, g, Kg, H1, H2, n_mb, dt, blk = ctx.sizes
        BM, KP, H2P = blk["BM"], blk["KP"], blk["H2P"]
        n_bh = triton_cdiv(H1, blk["BH1"])
        P = M * n_mb
        # Enough programs to fill a large GPU (~4 per SM of an H100/H200), each looping over a run
        # of features so that its weight-gradient partials are summed on chip, not per feature.
        n_gs = max(1, min(g, triton_cdiv(4 * 132, n_bh * P)))
        per = triton_cdiv(g, n_gs)
        n_gs = triton_cdiv(g, per)
        dev, f32 = zg.device, torch.float32
        dz = torch.empty(n_bh, n_gs, P, BM, KP, device=dev, dtype=f32)
        dW = torch.empty(n_bh, P, g, KP, device=dev, dtype=f32)
        dV1 = torch.empty(P * n_gs, H1, KP, device=dev, dtype=f32)
        dV2 = torch.empty(P * n_gs, H2P, H1, device=dev, dtype=f32)
        dvh = torch.empty(P, g, H2P, device=dev, dtype=f32)
        db2 = torch.empty(P * n_gs, H2P, device=dev, dtype=f32)
        k._hidden_bwd[(n_bh, P, n_gs)](zg, Wg, V1g, V2t, vh, dF.float().contiguous(), h2,
                                        dz, dW, dV1, dV2, dvh, db2, r, g, Kg, H1, H2, n_mb, per,
                                        DT=dt, **blk)
        d_zg = dz.sum((0, 1)).view(M, n_mb * BM, KP)[:, :r, :Kg]
        d_Wg = dW.sum(0).view(M, n_mb, g, KP).sum(1)[..., :Kg]
        d_V1g = dV1.view(M, n_mb * n_gs, H1, KP).sum(1)[..., :Kg].transpose(1, 2)
        d_V2 = dV2.sum(0)[:H2]
        d_b2 = db2.sum(0)[:H2]
        d_vh = dvh.sum(0)[:, :H2]
        return d_zg, d_Wg, d_V1g, d_V2, d_b2, d_vh


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def hidden(zg: torch.Tensor, Wg: torch.Tensor, V1g: torch.Tensor, V2: torch.Tensor, b2: torch.Tensor,
           v_hidden: torch.Tensor) -> torch.Tensor:
    """F (M, r, g) with F[m, i, j] = v_hidden[j] · ReLU(V2 ReLU(V1g[m]ᵀ (zg[m, i] ⊙ Wg[m, j])) + b2).

    zg (M, r, Kg): each study's rows and columns of z~; Wg (M, g, Kg): the same columns of W;
    V1g (M, Kg, H1): the same rows of V1ᵀ; V2 (H2, H1), b2 (H2,), v_hidden (g, H2).  The plain
    layout is M = 1 with every column.  Differentiable in all six.
    """
    return _FusedHidden.apply(zg, Wg, V1g, V2, b2, v_hidden)
