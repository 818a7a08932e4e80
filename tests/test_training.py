"""The training loop's optimiser (issue 9): on a CPU, Adam's fused kernel, the same update as per tensor."""

import torch

from mssvae.module import MSSVAEModule
from mssvae.training import _adam


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
