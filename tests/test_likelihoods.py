"""Likelihoods and KL terms against torch.distributions / scipy."""

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D

from mssvae import likelihoods as lk


def test_nb_log_lik_matches_torch_distributions():
    x = torch.tensor([0.0, 1.0, 5.0, 250.0, 3000.0], dtype=torch.float64)
    mu = torch.tensor([0.5, 2.0, 5.0, 300.0, 1500.0], dtype=torch.float64)
    phi = torch.tensor([0.3, 1.0, 10.0, 2.0, 50.0], dtype=torch.float64)
    # torch's NegativeBinomial(total_count=φ, probs=μ/(φ+μ)) has mean μ and inverse dispersion φ.
    ref = D.NegativeBinomial(total_count=phi, probs=mu / (phi + mu)).log_prob(x)
    assert torch.allclose(lk.nb_log_lik(x, mu, phi, eps=0.0), ref, rtol=1e-9, atol=1e-9)


def test_gaussian_log_lik_matches_torch_distributions():
    x = torch.randn(4, 3, dtype=torch.float64)
    mean = torch.randn(4, 3, dtype=torch.float64)
    log_var = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    ref = D.Normal(mean, torch.exp(0.5 * log_var)).log_prob(x)
    assert torch.allclose(lk.gaussian_log_lik(x, mean, log_var), ref)


def test_inverse_gamma_prior_and_its_beta_rule():
    variances = np.random.default_rng(0).gamma(2.0, 1.0, size=500)
    beta = lk.inverse_gamma_beta(variances, alpha=1.5)
    q05 = np.quantile(variances, 0.05)
    # the 5 % quantile of the sample variances is the prior's 90 % quantile (Appendix C.2.1)
    assert np.isclose(stats.invgamma(1.5, scale=beta).cdf(q05), 0.9)
    log_var = torch.tensor([-1.0, 0.5], dtype=torch.float64)
    ref = stats.invgamma(1.5, scale=beta).logpdf(np.exp(log_var.numpy()))
    assert np.allclose(lk.inverse_gamma_log_prior(log_var, 1.5, beta).numpy(), ref)


def test_kl_terms_match_torch_distributions():
    mu, log_var = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    ref = D.kl_divergence(D.Normal(mu, torch.exp(0.5 * log_var)), D.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(lk.kl_standard_normal(mu, log_var), ref)
    ref_ln = D.kl_divergence(D.LogNormal(mu, torch.exp(0.5 * log_var)), D.LogNormal(12.0, 0.7)).numpy()
    assert np.allclose(lk.kl_lognormal(mu, log_var, 12.0, 0.49).numpy(), ref_ln)


def test_nb_dispersion_start_is_the_moment_estimator():
    rng = np.random.default_rng(0)
    phi_true, mu = 4.0, 50.0
    X = rng.negative_binomial(phi_true, phi_true / (phi_true + mu), size=(20000, 1)).astype(float)
    assert abs(lk.nb_inverse_dispersion_init(X)[0] - phi_true) / phi_true < 0.1
    poisson = rng.poisson(5.0, size=(2000, 1)).astype(float)
    assert lk.nb_inverse_dispersion_init(poisson)[0] >= 100  # no over-dispersion: nearly Poisson


def test_nb_fisher_information_matches_the_variance_of_the_score():
    # Information about the pre-softplus output o of μ = ℓ·softplus(o): E[(∂ log p / ∂o)²], summed over x.
    ell, phi = 50.0, 3.0
    o = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    x = torch.arange(0, 2000, dtype=torch.float64)
    mu = ell * torch.nn.functional.softplus(o)
    logp = lk.nb_log_lik(x, mu, torch.tensor(phi, dtype=torch.float64))
    score = torch.stack([torch.autograd.grad(lp, o, retain_graph=True)[0] for lp in logp[:400]])
    info_mc = float((logp[:400].exp().detach() * score**2).sum())
    rate = torch.nn.functional.softplus(o.detach())
    info = float(lk.nb_fisher_info(ell * rate, rate, torch.tensor(phi, dtype=torch.float64)))
    assert info == pytest.approx(info_mc, rel=1e-4)


def test_gaussian_fisher_information_is_the_precision():
    log_var = torch.log(torch.tensor([0.25, 4.0]))
    assert torch.allclose(lk.gaussian_fisher_info(log_var), torch.tensor([4.0, 0.25]))
