"""The training loop's optimiser (issue 9): on a CPU, Adam's fused kernel, the same update as per tensor."""

import numpy as np
import pytest
import torch
from conftest import two_block_data

import mssvae.model
from mssvae import MSSVAE
from mssvae.module import MSSVAEModule
from mssvae.training import _adam, lr_factor_at, param_groups


def test_cpu_training_uses_fused_adam_with_the_per_tensor_update():
    torch.manual_seed(0)
    a = MSSVAEModule(30, 3, [2, 2], (8, 8), "nb")
    b = MSSVAEModule(30, 3, [2, 2], (8, 8), "nb")
    b.load_state_dict(a.state_dict())
    before = [p.detach().clone() for p in a.parameters()]
    fused = _adam([{"params": list(a.parameters()), "lr": 0.01}], torch.device("cpu"), graphs=False)
    plain = torch.optim.Adam([{"params": list(b.parameters()), "lr": 0.01}], foreach=False)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn_like(p) for p in a.parameters()]
        for m, opt in ((a, fused), (b, plain)):
            for p, g in zip(m.parameters(), grads):
                p.grad = g.clone()
            opt.step()
    moved = [(pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters())]
    assert max(moved) < 1e-6                      # the same arithmetic, up to float rounding
    assert min((p - p0).abs().max().item() for p, p0 in zip(a.parameters(), before)) > 0.01  # 5 steps of lr 0.01


def test_subsampled_feature_rows_move_per_step_as_with_every_feature():
    """A share f of the features per step, their gradients scaled 1/f (unbiased): Adam alone would move
    each row √f as far per step; the groups' 1/√f learning rates restore the full-cost pace."""
    torch.manual_seed(0)
    module = MSSVAEModule(400, 3, [2, 2], (8, 8), "nb")
    rows = ["W", "log_phi", "decoder.v_hidden", "decoder.v_skip", "decoder.bias"]
    named = dict(module.named_parameters())
    full = param_groups(module, lr=1e-3, lr_W=1e-2)
    assert sorted(id(p) for g in full for p in g["params"]) == sorted(id(p) for p in module.parameters())
    assert [g["lr"] for g in full] == [1e-2, 1e-3, 1e-3]   # f = 1: the plain learning rates
    # f = 1/4: the per-feature groups at 2× their rate; the encoders (read every feature, every step) keep theirs.
    assert [g["lr"] for g in param_groups(module, 1e-3, 1e-2, 0.25)] == [2e-2, 2e-3, 1e-3]

    def pace(f: float, correct: bool) -> float:
        """Mean movement per step of the per-feature rows under a constant true gradient of 1, in lr units."""
        gen = torch.Generator().manual_seed(1)
        params = {n: named[n].detach().clone().requires_grad_() for n in rows}
        groups = param_groups(module, 1e-3, 1e-2, f if correct else 1.0)
        by_id = {id(named[n]): params[n] for n in rows}
        opt = torch.optim.Adam([dict(g, params=[by_id[id(p)] for p in g["params"] if id(p) in by_id])
                                for g in groups])
        start = {n: params[n].detach().clone() for n in rows}
        steps = 1500
        for _ in range(steps):
            seen = (torch.rand(400, generator=gen) < f).float() / f
            for p in params.values():
                p.grad = seen.view(-1, *[1] * (p.dim() - 1)).expand_as(p).clone()
            opt.step()
        lr = {n: 1e-2 if n in ("W", "log_phi") else 1e-3 for n in rows}
        return float(torch.stack([((start[n] - params[n].detach()) / (lr[n] * steps)).mean() for n in rows]).mean())

    assert abs(pace(1.0, correct=True) - 1.0) < 0.01
    assert abs(pace(0.1, correct=False) - 0.1**0.5) < 0.03          # Adam alone: √f as far per step
    assert abs(pace(0.1, correct=True) - 1.0) < 0.1                 # with the groups' learning rates


def test_learning_rates_fall_linearly_over_the_last_share_of_the_epochs():
    assert [lr_factor_at(e, 10, 0.3) for e in range(10)] == [1.0] * 7 + [3 / 4, 2 / 4, 1 / 4]
    assert {lr_factor_at(e, 10, 0.0) for e in range(10)} == {1.0}   # 0: the paper's constant rates
    assert lr_factor_at(0, 10, 1.0) == 10 / 11                       # 1: from the first epoch on


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (there the rates are tensors the graphs read)"))])
def test_the_decayed_rates_shrink_the_steps_of_the_last_epochs(monkeypatch, device):
    X, study, _, _ = two_block_data(n=240)
    counts = np.random.default_rng(0).poisson(np.exp(2 + X.clip(-3, 3) / 2)).astype(np.float32)
    real_train = mssvae.model.train

    def moves_per_epoch(decay: float) -> np.ndarray:
        """Mean |ΔW| over each epoch of one fit (W after each epoch, through the epoch-end hook)."""
        moves = []

        def spy(module, *args, on_epoch_end=None, **kw):
            last = [module.W.detach().clone()]

            def record(epoch, state):
                moves.append(float((module.W.detach() - last[0]).abs().mean()))
                last[0] = module.W.detach().clone()
            return real_train(module, *args, on_epoch_end=record, **kw)

        monkeypatch.setattr(mssvae.model, "train", spy)
        MSSVAE(likelihood="nb", n_shared=3, n_specific=1, hidden=(16, 16), max_epochs=40, batch_size=64,
               kl_free=0.5, feature_subsample=0.5, lr_decay=decay, device=device, random_state=0).fit(counts, study)
        return np.asarray(moves)

    ratio = {d: (m := moves_per_epoch(d))[-5:].mean() / m[15:20].mean() for d in (0.0, 0.5)}
    # 0.5: the last 20 epochs decay, the last 5 at 5/21 ... 1/21 of the rate (mean 0.14).
    assert ratio[0.5] < 0.4 * ratio[0.0], ratio
