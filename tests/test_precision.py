"""Mixed precision: bf16 autocast (the GPU default) computes the same objective as fp32."""

import numpy as np
import pytest
import torch
from conftest import two_block_data

from mssvae import MSSVAE
from mssvae.training import autocast


def _data(likelihood):
    X, study, _, _ = two_block_data(n=100)
    if likelihood == "nb":
        X = np.random.default_rng(0).poisson(np.exp(2 + X.clip(-3, 3) / 2)).astype(np.float32)
    return X, study


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_bf16_autocast_loss_matches_fp32(likelihood):
    # Run on the CPU here through the same context manager training uses on CUDA (slow on a CPU, but exact
    # enough to check the arithmetic path: every op that autocast moves to bf16, and the casts back).
    X, study = _data(likelihood)
    m = MSSVAE(likelihood=likelihood, n_shared=3, n_specific=1, hidden=(16, 16), max_epochs=3, batch_size=64,
               device="cpu")
    m.fit(X, study)
    mod = m.module_.train()
    args = (torch.as_tensor(X[:64]), torch.as_tensor((study[:64] == "s1").astype(np.int64)), torch.ones(64),
            200, 10.0, 0.1, 1.0, 40.0, 1.0, m._data_priors.get("noise"), m._data_priors.get("library"), None)
    torch.manual_seed(0)
    fp32, _ = mod.loss(*args)
    torch.manual_seed(0)
    with autocast(torch.device("cpu"), torch.bfloat16):
        bf16, _ = mod.loss(*args)
    bf16.loss.backward()
    assert bf16.loss.dtype == torch.float32
    assert bf16.loss.item() == pytest.approx(fp32.loss.item(), rel=5e-3)
    assert torch.isfinite(mod.W.grad).all() and mod.W.grad.dtype == torch.float32


def test_precision_defaults_to_fp32_on_cpu_and_refuses_bf16_there():
    X, study = _data("gaussian")
    m = MSSVAE(n_shared=2, n_specific=1, hidden=(4, 4), max_epochs=1)
    assert m._autocast_dtype(torch.device("cpu")) is None
    assert m._autocast_dtype(torch.device("cuda")) is torch.bfloat16
    with pytest.raises(ValueError, match="`precision='bf16'` needs a CUDA device"):
        MSSVAE(n_shared=2, n_specific=1, hidden=(4, 4), max_epochs=1, precision="bf16", device="cpu").fit(X, study)
    with pytest.raises(ValueError, match="`precision` must be 'auto', 'fp32' or 'bf16'"):
        MSSVAE(precision="fp16").fit(X, study)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fit_in_bf16_is_finite_and_close_to_fp32():
    X, study = _data("nb")
    kw = dict(likelihood="nb", n_shared=3, n_specific=1, hidden=(16, 16), max_epochs=20, batch_size=64,
              device="cuda")
    a = MSSVAE(precision="bf16", **kw).fit(X, study)
    b = MSSVAE(precision="fp32", **kw).fit(X, study)
    assert np.isfinite(a.history_["loss"]).all()
    assert a.history_["loss"].iloc[-1] == pytest.approx(b.history_["loss"].iloc[-1], rel=0.05)
