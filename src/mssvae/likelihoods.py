"""Likelihoods, their priors, and the closed-form KL terms of the MSSVAE objective.

Gaussian: Eq. 2.2 with per-feature σ_j² and the Inverse-Gamma prior of Appendix C.2.1.
Negative binomial: Eq. 2.5 (mean, inverse-dispersion parameterisation) with the LogNormal
library-size prior and posterior of §2.4.
All functions are elementwise / vectorised; they return tensors, not sums, unless stated.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import stats

_LOG_2PI = math.log(2.0 * math.pi)


def gaussian_log_lik(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, σ²) elementwise; ``log_var`` (G,) broadcasts over samples (Eq. 2.2)."""
    return -0.5 * ((x - mean) ** 2 * torch.exp(-log_var) + log_var + _LOG_2PI)


def nb_log_lik(x: torch.Tensor, mu: torch.Tensor, phi: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """log p_NB(x; mean μ, inverse dispersion φ) of §2.4, elementwise.

    Γ(x+φ) / (Γ(x+1) Γ(φ)) · (φ/(φ+μ))^φ · (μ/(φ+μ))^x, written with one log(φ+μ) so that
    large counts (library sizes ~1e6-1e8) do not lose precision.
    """
    log_phi_mu = torch.log(phi + mu + eps)
    return (
        torch.lgamma(x + phi)
        - torch.lgamma(x + 1.0)
        - torch.lgamma(phi)
        + phi * (torch.log(phi + eps) - log_phi_mu)
        + x * (torch.log(mu + eps) - log_phi_mu)
    )


def gaussian_fisher_info(log_var: torch.Tensor) -> torch.Tensor:
    """Fisher information of one Gaussian entry about its mean: 1/σ² (per feature)."""
    return torch.exp(-log_var)


def nb_fisher_info(mu: torch.Tensor, rate: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """Fisher information of one NB entry about the decoder's pre-softplus output, elementwise.

    With μ = ℓ·softplus(o) (Eq. 2.5) and ``rate`` = softplus(o): the information about log μ is
    φμ/(φ+μ), and d log μ / d o = sigmoid(o)/softplus(o) = (1 − e^(−rate))/rate.
    """
    dlog = -torch.expm1(-rate) / rate.clamp_min(1e-30)
    return phi * mu / (phi + mu) * dlog**2


def inverse_gamma_log_prior(log_var: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """log Inverse-Gamma(σ²; α, β) elementwise, in terms of log σ² (Eq. C.6)."""
    return alpha * math.log(beta) - math.lgamma(alpha) - (alpha + 1.0) * log_var - beta * torch.exp(-log_var)


def inverse_gamma_beta(sample_variances: np.ndarray, alpha: float = 1.5, quantile: float = 0.05,
                       prior_quantile: float = 0.9) -> float:
    """β of the noise prior (Appendix C.2.1).

    β is set so that the ``quantile`` (5 %) of the feature sample variances is the
    ``prior_quantile`` (90 %) quantile of Inverse-Gamma(α, β).  If Y ~ IG(α, β) then
    1/Y ~ Gamma(α, rate β), so P(Y ≤ q) = 0.9 ⇔ 1/q is the 10 % quantile of that Gamma, i.e.
    β = q · Gamma(α, 1).ppf(1 - 0.9).
    """
    q = float(np.quantile(sample_variances, quantile))
    q = max(q, 1e-8)  # a constant feature would give β = 0, an improper prior
    return q * float(stats.gamma.ppf(1.0 - prior_quantile, alpha))


def nb_inverse_dispersion_init(X: np.ndarray, max_phi: float = 1e3, min_phi: float = 1e-2) -> np.ndarray:
    """Method-of-moments start for φ_g (Appendix C.2.2).

    The paper prints φ = μ/(σ² - μ); from Var = μ + μ²/φ the moment estimator is
    φ = μ²/(σ² - μ), which we use (the printed form has the wrong units: it does not change
    when counts are rescaled as a dispersion estimate must).  Genes with σ² ≤ μ (no
    over-dispersion) get ``max_phi`` (nearly Poisson); the result is clipped to
    [min_phi, max_phi] so the start is finite.
    """
    mu = X.mean(0)
    var = X.var(0, ddof=1) if X.shape[0] > 1 else np.zeros_like(mu)
    excess = var - mu
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(excess > 0, mu**2 / excess, max_phi)
    return np.clip(np.nan_to_num(phi, nan=max_phi), min_phi, max_phi)


def kl_standard_normal(mu: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) || N(0, I)) per row (Appendix B.2.1; the paper's display drops a sign).

    (n, K) → (n,).  A zero-width K gives zeros.
    """
    return 0.5 * (mu**2 + torch.exp(log_var) - 1.0 - log_var).sum(-1)


def kl_lognormal(mu_q: torch.Tensor, log_var_q: torch.Tensor, mu_p: float, var_p: float) -> torch.Tensor:
    """KL(LogNormal(μ_q, σ_q²) || LogNormal(μ_p, σ_p²)) elementwise (§2.4).

    The KL between log-normals equals the KL between the underlying normals.
    """
    return 0.5 * (math.log(var_p) - log_var_q + (torch.exp(log_var_q) + (mu_q - mu_p) ** 2) / var_p - 1.0)
