"""Triton kernels of the fused decoder (issue 9, goal 4). Imported only by :mod:`mssvae.fused_decoder`.

The hidden path of Appendix B.1's decoder for every (sample i, feature j) pair,

    F_ij = v_j · ReLU(V2 ReLU(V1 (z_i ⊙ W_j)) + b2),

in the grouped layout of :func:`mssvae.module.decoder_output`: M studies of r rows each, study m
seeing Kg columns (zg (M, r, Kg), Wg (M, g, Kg), V1g (M, Kg, H1)); the plain layout is M = 1.
Unfused, the (B·g, H1) and (B·g, H2) activations go through memory between every product, which
keeps the decoder memory-bound on a GPU (8 % of an H200's bf16 peak: docs/performance.md). Here a
tile of BM rows of one feature goes through both layers on chip. The forward stores only F and
h2 (needed by the backward, H2 ≤ H1 values a row); the backward recomputes layer 1 block by block.

Offsets are int32 (int64 ones cost the forward ~200 bytes of spills a thread): the caller keeps
every buffer (h2, B·g·H2; the partial dW sums) under 2^31 entries.  Every partial sum is written to
its own slot of a buffer and summed by the caller, never accumulated with atomics, so results are
deterministic.  ``DT`` is the dtype the products take
their inputs in (bf16 on a GPU, fp32 in Triton's CPU interpreter, whose bf16 is not usable);
accumulation is always fp32.  ``PREC`` is "ieee" for fp32 products (as torch's matmul, which does not
use TF32 unless asked to) and "tf32" (ignored) for bf16 ones.
"""
import triton
import triton.language as tl

try:   # what a launch raises when a kernel needs more shared memory or threads than the GPU has
    from triton.runtime.errors import OutOfResources
except ImportError:   # older Triton kept it with the autotuner
    from triton.runtime.autotuner import OutOfResources  # noqa: F401  (fused_decoder reads it)


@triton.jit
def _hidden_fwd(zg, Wg, V1g, V2t, b2, vh, F_out, H2_out,
                r, g, Kg, H1, H2, n_mb, genes_per, row0,
                BM: tl.constexpr, KP: tl.constexpr, H1P: tl.constexpr, H2P: tl.constexpr,
                DT: tl.constexpr, PREC: tl.constexpr, STORE_H2: tl.constexpr):
    # program: (study m, block of BM rows from row0 on) × a run of features [j0, j1); F_out is (M, g, r).
    # The caller covers a study's r rows with blocks of BM and, for the rest, one smaller block
    # (fused_decoder._row_launches): row0 is the first row of this launch's blocks.
    # V1 and V2 are read once and stay on chip for every feature of the run (they are the same for
    # all features): only W_j and v_j change from one feature to the next.  Tiles are transposed
    # (hidden units × rows) so that the hidden sizes, not the rows, are the products' M dimension,
    # the one Hopper's wgmma needs ≥ 64 (results/fused_ptxas.csv: no spills at 64 rows;
    # fused_ptxas_rows_first.csv: 24 bytes a thread with rows-first tiles).
    pid = tl.program_id(0)
    m = pid // n_mb
    rows = row0 + (pid % n_mb) * BM + tl.arange(0, BM)
    rk = tl.arange(0, KP)
    rh1 = tl.arange(0, H1P)
    rh2 = tl.arange(0, H2P)
    row_ok = rows < r
    k_ok = rk < Kg
    h1_ok = rh1 < H1
    h2_ok = rh2 < H2

    zT = tl.load(zg + (m * r + rows[None, :]) * Kg + rk[:, None], mask=row_ok[None, :] & k_ok[:, None], other=0.0)
    v1T = tl.load(V1g + (m * Kg + rk[None, :]) * H1 + rh1[:, None],
                  mask=k_ok[None, :] & h1_ok[:, None], other=0.0).to(DT)                 # (H1P, KP)
    v2 = tl.load(V2t + rh1[None, :] * H2 + rh2[:, None],
                 mask=h1_ok[None, :] & h2_ok[:, None], other=0.0).to(DT)                 # (H2P, H1P)
    bias = tl.load(b2 + rh2, mask=h2_ok, other=0.0)
    j0 = tl.program_id(1) * genes_per
    j1 = tl.minimum(j0 + genes_per, g)
    for j in range(j0, j1):
        w = tl.load(Wg + (m * g + j) * Kg + rk, mask=k_ok, other=0.0)
        h1T = tl.maximum(tl.dot(v1T, (zT * w[:, None]).to(DT), input_precision=PREC), 0.0)      # (H1P, BM)
        h2T = tl.maximum(tl.dot(v2, h1T.to(DT), input_precision=PREC) + bias[:, None], 0.0)     # (H2P, BM)
        v = tl.load(vh + j * H2 + rh2, mask=h2_ok, other=0.0)
        tl.store(F_out + (m * g + j) * r + rows, tl.sum(h2T * v[:, None], axis=0), mask=row_ok)
        if STORE_H2:
            tl.store(H2_out + ((m * g + j) * r + rows[None, :]) * H2P + rh2[:, None], h2T.to(DT),
                     mask=row_ok[None, :])


@triton.jit
def _hidden_bwd(zg, Wg, V1g, V2t, vh, dF, H2_in,
                dz_part, dW_part, dV1_part, dV2_part, dvh_part, db2_part,
                r, g, Kg, H1, H2, n_mb, genes_per,
                BM: tl.constexpr, KP: tl.constexpr, BH1: tl.constexpr, H2P: tl.constexpr, DT: tl.constexpr,
                PREC: tl.constexpr):
    # program: block bh of H1 × (study m, row block mb) × a run of features [j0, j1); dF is (M, g, r).
    # Transposed tiles, as in the forward: every product has BH1, H2P or KP as its M dimension, so
    # when all three are ≥ 64 (the RNA configuration) all five use wgmma even at 16 rows, where the
    # accumulators fit in registers (results/fused_ptxas.csv: no spills at 16 rows and H1 block 64;
    # fused_ptxas_rows_first.csv: 24 bytes at 32 rows and H1 block 32, mostly the older mma.sync).
    bh = tl.program_id(0)
    pid = tl.program_id(1)
    gs = tl.program_id(2)
    n_gs = tl.num_programs(2)
    m = pid // n_mb
    mb = pid % n_mb
    rows = mb * BM + tl.arange(0, BM)
    rk = tl.arange(0, KP)
    rh2 = tl.arange(0, H2P)
    rh1 = bh * BH1 + tl.arange(0, BH1)
    row_ok = rows < r
    k_ok = rk < Kg
    h2_ok = rh2 < H2
    h1_ok = rh1 < H1

    v1T = tl.load(V1g + (m * Kg + rk[None, :]) * H1 + rh1[:, None],
                  mask=k_ok[None, :] & h1_ok[:, None], other=0.0).to(DT)                 # (BH1, KP)
    v2b = tl.load(V2t + rh1[:, None] * H2 + rh2[None, :],
                  mask=h1_ok[:, None] & h2_ok[None, :], other=0.0).to(DT)                # (BH1, H2P)
    zT_ptr = zg + (m * r + rows[None, :]) * Kg + rk[:, None]
    zT_ok = row_ok[None, :] & k_ok[:, None]
    dzT = tl.zeros((KP, BM), dtype=tl.float32)
    dV1 = tl.zeros((BH1, KP), dtype=tl.float32)
    dV2 = tl.zeros((H2P, BH1), dtype=tl.float32)
    db2 = tl.zeros((H2P,), dtype=tl.float32)
    j0 = gs * genes_per
    j1 = tl.minimum(j0 + genes_per, g)
    for j in range(j0, j1):
        # z is read again for every feature (from cache) rather than held: registers are the limit here.
        zT = tl.load(zT_ptr, mask=zT_ok, other=0.0)
        w = tl.load(Wg + (m * g + j) * Kg + rk, mask=k_ok, other=0.0)
        cT = (zT * w[:, None]).to(DT)                                                    # (KP, BM)
        h1T = tl.maximum(tl.dot(v1T, cT, input_precision=PREC), 0.0)                    # (BH1, BM)
        h2T = tl.load(H2_in + ((m * g + j) * r + rows[None, :]) * H2P + rh2[:, None],
                      mask=row_ok[None, :], other=0.0)                                   # (H2P, BM), DT
        d = tl.load(dF + (m * g + j) * r + rows, mask=row_ok, other=0.0)                 # (BM,)
        v = tl.load(vh + j * H2 + rh2, mask=h2_ok, other=0.0)
        da2T = tl.where(h2T > 0.0, v[:, None] * d[None, :], 0.0).to(DT)                # (H2P, BM)
        da1T = tl.where(h1T > 0.0, tl.dot(v2b, da2T, input_precision=PREC), 0.0).to(DT)  # (BH1, BM)
        dV2 += tl.dot(da2T, tl.trans(h1T.to(DT)), input_precision=PREC)
        dV1 += tl.dot(da1T, tl.trans(cT), input_precision=PREC)
        dcT = tl.dot(tl.trans(v1T), da1T, input_precision=PREC)                         # (KP, BM)
        dzT += dcT * w[:, None]
        tl.store(dW_part + ((bh * tl.num_programs(1) + pid) * g + j) * KP + rk, tl.sum(dcT * zT, axis=1))
        if bh == 0:
            tl.store(dvh_part + (pid * g + j) * H2P + rh2, tl.sum(h2T.to(tl.float32) * d[None, :], axis=1))
            db2 += tl.sum(da2T.to(tl.float32), axis=1)
    slot = pid * n_gs + gs
    tl.store(dz_part + ((bh * n_gs + gs) * tl.num_programs(1) * BM + pid * BM + tl.arange(0, BM)[None, :]) * KP
             + rk[:, None], dzT)
    tl.store(dV1_part + (slot * H1 + rh1[:, None]) * KP + rk[None, :], dV1, mask=h1_ok[:, None])
    tl.store(dV2_part + (slot * H2P + rh2[:, None]) * H1 + rh1[None, :], dV2, mask=h1_ok[None, :])
    if bh == 0:
        tl.store(db2_part + slot * H2P + rh2, db2)
