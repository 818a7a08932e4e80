"""Spike-and-slab lasso E/M steps (Appendix B.2.1) against hand computations."""

import math

import numpy as np
import torch

from mssvae.spike_slab import (
    LAMBDA1_SPIKE_RATIO,
    Lambda0Schedule,
    e_step,
    m_step_eta,
    m_step_lambda1,
    ssl_log_density,
    ssl_log_prior,
)


def hand_p_star(w, eta, lam0, lam1):
    slab = eta * lam1 / 2 * math.exp(-lam1 * abs(w))
    spike = (1 - eta) * lam0 / 2 * math.exp(-lam0 * abs(w))
    return slab / (slab + spike)


def test_e_step_matches_the_formula_entry_by_entry():
    W = torch.tensor([[0.0, 0.3], [1.5, -2.0], [0.05, 0.8]], dtype=torch.float64)
    eta = torch.tensor([0.2, 0.6], dtype=torch.float64)
    p, lam = e_step(W, eta, lambda0=10.0, lambda1=0.1)
    for j in range(3):
        for k in range(2):
            expected = hand_p_star(float(W[j, k]), float(eta[k]), 10.0, 0.1)
            assert math.isclose(float(p[j, k]), expected, rel_tol=1e-10)
            assert math.isclose(float(lam[j, k]), 0.1 * expected + 10.0 * (1 - expected), rel_tol=1e-10)


def test_e_step_is_stable_for_large_weights_and_extreme_eta():
    W = torch.tensor([[200.0, 0.0]])
    p, lam = e_step(W, torch.tensor([1e-30, 1.0]), lambda0=15.0, lambda1=0.1)
    assert torch.isfinite(p).all() and torch.isfinite(lam).all()
    assert p[0, 0] > 0.99  # a huge weight is in the slab even when η is tiny


def test_m_step_is_the_closed_form_beta_bernoulli_update():
    p = torch.tensor([[0.9, 0.0], [0.8, 0.1], [0.1, 0.0], [0.0, 0.0]])
    G, a, b = 4, 1.0, 4.0
    eta = m_step_eta(p, a, b)
    expected = (p.sum(0) + a - 1) / (G + a + b - 2)
    assert torch.allclose(eta, expected.clamp(1e-12, 1 - 1e-12))
    # ...which maximises the η terms of the objective: check against a grid.
    grid = torch.linspace(1e-3, 1 - 1e-3, 2001)
    n_in = float(p[:, 0].sum())
    obj = (n_in + a - 1) * torch.log(grid) + (G - n_in + b - 1) * torch.log1p(-grid)
    assert abs(float(grid[obj.argmax()]) - float(eta[0])) < 1e-3


def test_penalty_gradient_is_minus_lambda_star_sign_w():
    W = torch.tensor([[0.5, -1.0], [0.0, 2.0]], requires_grad=True)
    eta = torch.tensor([0.5, 0.5])
    p, lam = e_step(W.detach(), eta, 10.0, 0.1)
    ssl_log_prior(W, p, lam, eta, 1.0, 2.0, 10.0, 0.1).backward()
    assert torch.allclose(W.grad, -lam * torch.sign(W.detach()))


def test_per_feature_weights_scale_each_row_of_the_penalty_gradient():
    W = torch.tensor([[0.5, -1.0], [0.3, 2.0]], requires_grad=True)
    eta = torch.tensor([0.5, 0.5])
    p, lam = e_step(W.detach(), eta, 10.0, 0.1)
    rows = torch.tensor([0.5, 1.5])
    ssl_log_prior(W, p, lam, eta, 1.0, 2.0, 10.0, 0.1, row_weight=rows).backward()
    assert torch.allclose(W.grad, -rows[:, None] * lam * torch.sign(W.detach()))


def test_lambda0_annealing_follows_appendix_c2():
    s = Lambda0Schedule()
    values = np.array([s(e, 100) for e in range(100)])
    assert (values[:5] == 1).all() and (values[5:30] == 10).all() and (values[30:] == 15).all()


def test_empirical_lambda1_maximises_the_slab_terms_and_stays_below_the_spike():
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(50, 4, generator=gen, dtype=torch.float64) * 3.0
    p, _ = e_step(W, torch.full((4,), 0.3, dtype=torch.float64), lambda0=15.0, lambda1=0.1)
    lam = float(m_step_lambda1(W, p, lambda0=15.0))

    def slab_terms(x):   # Σ p* (log x/2 − x|w|), the λ1-dependent part of Appendix B.2.1
        return float((p * (math.log(x / 2) - x * W.abs())).sum())
    grid = np.linspace(0.5 * lam, 1.5 * lam, 101)
    assert max(grid, key=slab_terms) == min(grid, key=lambda x: abs(x - lam))
    # Entries far inside the spike's scale would ask for λ1 above λ0 / 10: held at the cap.
    tiny = torch.full((5, 2), 1e-3, dtype=torch.float64)
    assert float(m_step_lambda1(tiny, torch.ones(5, 2, dtype=torch.float64), 15.0)) == 15.0 / LAMBDA1_SPIKE_RATIO


def test_a_lambda1_on_the_device_gives_the_same_prior_as_a_number():
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(30, 3, generator=gen, dtype=torch.float64)
    eta = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    lam_t = torch.tensor(0.37, dtype=torch.float64)
    p_f, l_f = e_step(W, eta, 15.0, 0.37)
    p_t, l_t = e_step(W, eta, 15.0, lam_t)
    assert torch.allclose(p_f, p_t) and torch.allclose(l_f, l_t)
    assert torch.allclose(ssl_log_prior(W, p_f, l_f, eta, 1.0, 30.0, 15.0, 0.37),
                          ssl_log_prior(W, p_t, l_t, eta, 1.0, 30.0, 15.0, lam_t))
    assert torch.allclose(ssl_log_density(W, eta, 15.0, 0.37), ssl_log_density(W, eta, 15.0, lam_t))
