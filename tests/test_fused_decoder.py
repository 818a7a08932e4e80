"""The fused decoder kernel (issue 9, goal 4) computes the decoder of Appendix B.1 and its gradients.

Run here under Triton's CPU interpreter, with fp32 products (on a GPU the products take bf16 inputs;
decoder_speed.py --fused measures that agreement there).  Skipped where triton is not installed.
"""
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")   # on a CPU, conftest.py has switched on Triton's interpreter

from test_module import make_module  # noqa: E402  (tests/ is on sys.path under pytest)

from mssvae import fused_decoder  # noqa: E402
from mssvae.module import decoder_output  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def fused_on(monkeypatch):
    monkeypatch.setenv(fused_decoder.ENV, "1")


def hidden_by_layers(zg, Wg, V1g, V2, b2, vh):
    c = zg.unsqueeze(2) * Wg.unsqueeze(1)                                  # (M, r, g, Kg)
    h1 = torch.relu(torch.einsum("mrgk,mkh->mrgh", c, V1g))
    return (torch.relu(h1 @ V2.t() + b2) * vh).sum(-1)


@pytest.mark.parametrize("M,r,Kg,g,H1,H2,bwd_tiles", [
    (1, 20, 16, 5, 32, 16, None),        # every size a multiple of the kernel's blocks
    (3, 70, 17, 7, 130, 20, None),       # padding in every dimension, two row blocks, three blocks of H1
    (2, 40, 17, 9, 64, 16, (16, 16)),    # the backward tiled unlike the forward (the h2 it reads is shared)
])
def test_fused_hidden_path_and_its_six_gradients_equal_the_layer_by_layer_computation(
        monkeypatch, M, r, Kg, g, H1, H2, bwd_tiles):
    if bwd_tiles:
        monkeypatch.setitem(fused_decoder.CONFIG, "bwd", dict(BM=bwd_tiles[0], BH1=bwd_tiles[1], num_warps=4))
        monkeypatch.setitem(fused_decoder.CONFIG, "fwd", dict(BM=16, num_warps=4))
    gen = torch.Generator().manual_seed(0)
    shapes = [(M, r, Kg), (M, g, Kg), (M, Kg, H1), (H2, H1), (H2,), (g, H2)]
    scales = [1.0, 1.0, 0.3, 0.2, 0.1, 1.0]
    ins = [(torch.randn(s, generator=gen) * a).to(DEVICE).requires_grad_() for s, a in zip(shapes, scales)]
    upstream = torch.randn(M, r, g, generator=gen).to(DEVICE)
    out = fused_decoder.hidden(*ins)
    grads = torch.autograd.grad((out * upstream).sum(), ins)
    ref = hidden_by_layers(*ins)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), ins)
    assert out.shape == (M, r, g)
    # Both the ReLUs' kinks and the sums' order differ, so equal up to fp32 rounding.
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-4)
    for name, a, b in zip(["zg", "Wg", "V1g", "V2", "b2", "v_hidden"], grads, ref_grads):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()), msg=name)


@pytest.mark.parametrize("likelihood,normalize,sizes", [
    ("nb", True, (3, 3, 3)),          # grouped first layer (balanced batch)
    ("gaussian", False, (3, 2, 3)),   # plain layout
])
def test_training_objective_and_every_gradient_are_the_same_with_the_fused_decoder(
        monkeypatch, likelihood, normalize, sizes):
    m = make_module(likelihood, normalize).to(DEVICE).train()
    study = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes)).to(DEVICE)
    groups = [slice(e - n, e) for n, e in zip(sizes, torch.tensor(sizes).cumsum(0).tolist())]
    n = len(study)
    x = (torch.rand(n, 7, dtype=torch.float64) * 5).round().to(DEVICE)
    prior = {"gaussian": ((2.0, 1.0), None), "nb": (None, (0.0, 1.0))}[likelihood]
    out = []
    for flag in ("0", "1"):
        monkeypatch.setenv(fused_decoder.ENV, flag)
        m.zero_grad()
        torch.manual_seed(1)
        ones = torch.ones(n, dtype=torch.float64, device=DEVICE)
        terms, _ = m.loss(x, study, ones, n, 10.0, 0.1, 1.0, 7.0, 2.0, *prior, chunk_size=3, groups=groups)
        terms.loss.backward()
        out.append((terms.loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}))
    (loss0, g0), (loss1, g1) = out
    assert loss1 != loss0            # the fused path ran (fp32 kernels against the fp64 module)
    torch.testing.assert_close(loss1, loss0, rtol=1e-5, atol=0)
    assert g0.keys() == g1.keys()
    # fp32 rounding reaches every gradient on the scale of the largest (a bias before a batch norm has
    # an exact gradient of 0, and gets that rounding alone).
    scale = max(float(g.abs().max()) for g in g0.values())
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_the_fused_path_is_off_unless_asked_for_and_never_taken_on_a_plain_cpu(monkeypatch):
    z = torch.zeros(2, 3)
    monkeypatch.delenv(fused_decoder.ENV, raising=False)
    assert not fused_decoder.active(z)
    monkeypatch.setenv(fused_decoder.ENV, "1")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not fused_decoder.active(z)       # a CPU tensor without the interpreter: the matrix products
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert fused_decoder.active(z)


def test_a_decoder_too_large_for_the_kernels_takes_the_matrix_products(fused_on):
    # The forward keeps V1 and V2 on chip: beyond 128 KiB of them it cannot (Table 2's network fits in
    # bf16, the training step's products on a GPU, not in fp32), and decoder_output computes the same
    # function unfused (bit for bit the plain path).
    assert fused_decoder.supports(80, 256, 128, itemsize=2) and fused_decoder.supports(110, 64, 64, itemsize=4)
    assert not fused_decoder.supports(80, 256, 128, itemsize=4)
    assert not fused_decoder.supports(80, 512, 128, itemsize=2)
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5, 3), (5, 128), (5, 3), (5,), (512, 3), (128, 512), (128,)]
    z, W, vh, vs, bias, V1, V2, b2 = (torch.randn(s, generator=gen).to(DEVICE) for s in shapes)
    fused = decoder_output(z, W, vh, vs, bias, V1, V2, b2, normalized=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(fused_decoder.ENV, "0")
        plain = decoder_output(z, W, vh, vs, bias, V1, V2, b2, normalized=True)
    assert torch.equal(fused, plain)


def test_a_short_fit_with_the_fused_decoder_follows_the_unfused_fit(monkeypatch):
    # Training's path end to end: balanced batches (grouped first layer), feature subsets, chunked
    # sums, Adam.  Only float rounding differs, so after a few steps the masks agree closely.
    from conftest import two_block_data

    from mssvae import MSSVAE

    X, study, _, _ = two_block_data(n=48, G=16)
    fits = []
    for flag in ("0", "1"):
        monkeypatch.setenv(fused_decoder.ENV, flag)
        # fp32 on a GPU too: this compares the kernels' arithmetic, not bf16 against fp32
        model = MSSVAE(n_shared=2, n_specific=1, hidden=(16, 16), max_epochs=4, batch_size=32, feature_subsample=0.5,
                       merge_dependent=None, prune_masks=False, min_anchors=0, random_state=0, device=DEVICE,
                       precision="fp32")
        fits.append(model.fit(X, study))
    W0, W1 = (np.hstack([f.W_shared_] + list(f.W_specific_.values())) for f in fits)
    assert not np.array_equal(W0, W1)   # the kernels ran
    np.testing.assert_allclose(W1, W0, atol=1e-4 * np.abs(W0).max())


def test_an_empty_batch_gives_an_empty_output(fused_on):
    out = fused_decoder.hidden(torch.zeros(1, 0, 4), torch.zeros(1, 3, 4), torch.zeros(1, 4, 16), torch.zeros(16, 16),
                               torch.zeros(16), torch.zeros(3, 16))
    assert out.shape == (1, 0, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bf16 products: a GPU")
def test_on_a_gpu_the_bf16_step_at_table_2_size_matches_the_unfused_bf16_step(monkeypatch):
    # The training step's arithmetic on a GPU (bf16 autocast) at the RNA configuration (K 80, hidden
    # 256/128, K padded to 128): both paths round the products' inputs to bf16, in other places.
    from mssvae.module import MaskedDecoder

    torch.manual_seed(0)
    dec = MaskedDecoder(300, 80, (256, 128), normalized=True).cuda()
    z = torch.randn(96, 80, device="cuda")
    W = torch.randn(300, 80, device="cuda", requires_grad=True)
    results = []
    for flag in ("0", "1"):
        monkeypatch.setenv(fused_decoder.ENV, flag)
        W.grad = None
        dec.zero_grad()
        with torch.autocast("cuda", torch.bfloat16):
            out = dec(z, W)
        (out.float() ** 2).mean().backward()
        results.append((out.float().detach(), W.grad.clone(), dec.V1.weight.grad.clone()))
    (o0, gW0, gV0), (o1, gW1, gV1) = results
    assert not torch.equal(o0, o1)
    for a, b in ((o1, o0), (gW1, gW0), (gV1, gV0)):
        assert float((a - b).norm() / b.norm()) < 2e-2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="Triton's own refusal of a kernel: a GPU")
def test_on_a_gpu_a_forward_tiling_beyond_its_shared_memory_falls_back_to_the_matrix_products(monkeypatch, fused_on):
    # 256-row blocks at K 80 -> 128, hidden 256/128 in bf16 need 256 KiB of shared memory (ptxas, sm_90a),
    # beyond a Hopper block's 227 KiB: the launch Triton refuses stands for a smaller GPU's default.
    monkeypatch.setitem(fused_decoder.CONFIG, "fwd", dict(BM=256, num_warps=8, num_stages=1))
    monkeypatch.setattr(fused_decoder, "_UNFIT", set())
    torch.manual_seed(0)
    shapes = [(256, 80), (8, 80), (8, 128), (8, 80), (8,), (256, 80), (128, 256), (128,)]
    args = [torch.randn(s, device="cuda") for s in shapes]
    with torch.autocast("cuda", torch.bfloat16):
        with pytest.warns(RuntimeWarning, match="shared memory"):
            out = decoder_output(*args, normalized=True)
        monkeypatch.setenv(fused_decoder.ENV, "0")
        plain = decoder_output(*args, normalized=True)
    assert torch.equal(out, plain)


def test_a_call_too_large_for_int32_offsets_is_split_by_features(monkeypatch, fused_on):
    # The kernels index h2 with int32 offsets; hidden() halves the features until a call fits (here
    # with the limit lowered so that a small call must be split), and the result is the same.
    gen = torch.Generator().manual_seed(0)
    shapes = [(1, 20, 16), (1, 5, 16), (1, 16, 32), (16, 32), (16,), (5, 16)]
    ins = [torch.randn(s, generator=gen).to(DEVICE).requires_grad_() for s in shapes]
    whole = fused_decoder.hidden(*ins)
    calls = []
    apply = fused_decoder._FusedHidden.apply
    monkeypatch.setattr(fused_decoder._FusedHidden, "apply", lambda *a: calls.append(a[2].shape[1]) or apply(*a))
    monkeypatch.setattr(fused_decoder, "INT32_LIMIT", 20 * 2 * 16 + 1)   # 2 features of 20 rows fit, 3 do not
    split = fused_decoder.hidden(*ins)
    assert sorted(calls) == [1, 2, 2]   # 5 features → 2 + 3 → 2 + (1 + 2)
    torch.testing.assert_close(split, whole)
    torch.testing.assert_close(torch.autograd.grad(split.sum(), ins[1])[0], torch.autograd.grad(whole.sum(), ins[1])[0])


def test_a_call_whose_partial_weight_gradients_pass_int32_offsets_is_split_too(monkeypatch, fused_on):
    # With a wide first layer the backward's partial dW sums (one K row per block of H1, block of rows
    # and feature) outgrow h2; the split must look at them as well.
    gen = torch.Generator().manual_seed(1)
    shapes = [(1, 16, 64), (1, 4, 64), (1, 64, 512), (16, 512), (16,), (4, 16)]
    ins = [(torch.randn(s, generator=gen) * 0.2).to(DEVICE).requires_grad_() for s in shapes]
    whole = fused_decoder.hidden(*ins)
    calls = []
    apply = fused_decoder._FusedHidden.apply
    monkeypatch.setattr(fused_decoder._FusedHidden, "apply", lambda *a: calls.append(a[2].shape[1]) or apply(*a))
    # h2 of 4 features: 16 rows × 4 × 16 = 1024 entries, under the limit; their partial dW sums:
    # 8 blocks of H1 × 1 block of rows × 4 × 64 = 2048, over it; 2 features give 1024.
    monkeypatch.setattr(fused_decoder, "INT32_LIMIT", 1025)
    split = fused_decoder.hidden(*ins)
    assert calls == [2, 2]
    torch.testing.assert_close(split, whole)
    torch.testing.assert_close(torch.autograd.grad(split.sum(), ins[2])[0], torch.autograd.grad(whole.sum(), ins[2])[0])


@pytest.mark.parametrize("BM", [16, 32, 64, 128])
def test_the_forward_covers_each_row_of_a_study_once_with_little_padding(BM):
    # A balanced batch has r = batch_size // M rows a study (85 at batch 512 and 6 studies): full
    # blocks, then one smaller block for the rest, rather than padding the last block to BM.
    for r in range(1, 300):
        launches = fused_decoder._row_launches(r, BM)
        rows = [row0 + i * bm + k for bm, row0, n in launches for i in range(n) for k in range(bm)]
        assert sorted(x for x in rows if x < r) == list(range(r))       # every row once
        rest = r % BM
        assert len(rows) - r <= (max(rest, 16) if rest else 0)           # the padding, at most the rest's size
    assert fused_decoder._row_launches(85, 64) == [(64, 0, 1), (32, 64, 1)]   # 96 rows computed, not 128


def test_runs_of_features_cover_every_feature_and_fill_the_last_wave(monkeypatch):
    # A program holds a whole SM at the default tilings, so a launch runs in waves of one per SM.
    monkeypatch.setattr(fused_decoder, "_n_sm", lambda device: 132)    # an H100 / H200
    for g in (1, 7, 100, 5000):
        for programs in (1, 6, 144, 500):
            n, per = fused_decoder._runs(g, programs, None, per_sm=4)
            assert (n - 1) * per < g <= n * per                    # every feature in one run, no empty run
            assert n == g or programs * n >= 4 * 132               # at least the programs per SM asked for
    # The backward at batch 512 in 6 studies (4 blocks of H1 × 6 studies × 6 blocks of 16 rows): 4 runs
    # (576 programs) would leave the 5th wave 36 % full; the split keeps its waves at least 98 % busy.
    n, per = fused_decoder._runs(5000, 144, None, per_sm=4)
    assert 144 * n / (fused_decoder._cdiv(144 * n, 132) * 132) >= 0.98   # work / waves run
    assert fused_decoder._runs(5000, 10**5, None, per_sm=4)[0] == 1   # many programs: no more partial sums than needed


class _TooLarge:
    """A kernel that, like Triton's launch on a GPU with too little shared memory, raises before it runs."""

    def __init__(self, error):
        self.error, self.calls = error, 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls += 1
            raise self.error(131072, 101376, "shared memory")
        return launch


def test_a_gpu_too_small_for_the_forward_kernel_warns_once_and_takes_the_matrix_products(monkeypatch, fused_on):
    real = fused_decoder._kernels()
    fwd = _TooLarge(real.OutOfResources)
    monkeypatch.setattr(fused_decoder, "_kernels", lambda: SimpleNamespace(
        tl=real.tl, OutOfResources=real.OutOfResources, _hidden_fwd=fwd, _hidden_bwd=real._hidden_bwd))
    monkeypatch.setattr(fused_decoder, "_UNFIT", set())
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5, 3), (5, 16), (5, 3), (5,), (16, 3), (16, 16), (16,)]
    args = [torch.randn(s, generator=gen).to(DEVICE) for s in shapes]
    with pytest.warns(RuntimeWarning, match=f"{fused_decoder.ENV}=1.*shared memory.*matrix products"):
        out = decoder_output(*args, normalized=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")              # no second warning, and no second try of the kernel
        again = decoder_output(*args, normalized=True)
    assert fwd.calls == 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(fused_decoder.ENV, "0")
        plain = decoder_output(*args, normalized=True)
    assert torch.equal(out, plain) and torch.equal(again, plain)


def test_a_backward_tiling_too_large_for_the_gpu_is_a_clear_error(monkeypatch, fused_on):
    real = fused_decoder._kernels()
    monkeypatch.setattr(fused_decoder, "_kernels", lambda: SimpleNamespace(
        tl=real.tl, OutOfResources=real.OutOfResources, _hidden_fwd=real._hidden_fwd,
        _hidden_bwd=_TooLarge(real.OutOfResources)))
    gen = torch.Generator().manual_seed(0)
    shapes = [(1, 4, 16), (1, 3, 16), (1, 16, 16), (16, 16), (16,), (3, 16)]
    ins = [torch.randn(s, generator=gen).to(DEVICE).requires_grad_() for s in shapes]
    out = fused_decoder.hidden(*ins)
    with pytest.raises(RuntimeError, match=r"backward \(MSSVAE_FUSED_DECODER=1\).*CONFIG\['bwd'\].*shared memory"):
        out.sum().backward()
