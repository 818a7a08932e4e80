"""Spike-and-slab lasso prior on the masks W (paper §2.2, Appendix B.2.1, Appendix C.2.1).

Each mask entry w_jk has the prior
    p(w | γ) = γ λ1/2 exp(-λ1 |w|) + (1 - γ) λ0/2 exp(-λ0 |w|),  γ | η_k ~ Bernoulli(η_k),
    η_k ~ Beta(a, b).
Training alternates an E-step (posterior inclusion probability p*_jk and the adaptive penalty
λ*_jk, from the current W and η, held fixed during the gradient step) with a closed-form M-step
for η.  Everything here acts on a whole (G, K) block at once: no loop over factors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# η is kept away from 0 and 1 so the logits below stay finite; a column at η = 1e-12 can still come
# back to life if its entries grow past ~2 (see `e_step`), which is the behaviour we want.
_ETA_EPS = 1e-12

# The empirical slab penalty is kept at least this many times below the spike's, so that "slab" and
# "spike" stay two distinct scales (at λ0 = 1, the first annealing stage, this is the paper's 0.1).
LAMBDA1_SPIKE_RATIO = 10.0
LAMBDA1_MIN = 1e-3


def _log(x):
    """log of a float or of a 0-dim tensor (an empirical λ1 stays on the device)."""
    return torch.log(x) if torch.is_tensor(x) else math.log(x)


@dataclass(frozen=True)
class Lambda0Schedule:
    """Annealing of the spike penalty λ0 (Appendix C.2.1).

    λ0 = values[0] for the first ``fractions[0]`` of the epochs, values[1] for the next
    ``fractions[1]``, values[2] for the rest (the paper: 1 → 10 → 15 over 5 % / 25 % / 70 %).
    """

    values: tuple[float, float, float] = (1.0, 10.0, 15.0)
    fractions: tuple[float, float] = (0.05, 0.25)

    def stage(self, epoch: int, max_epochs: int) -> int:
        """0, 1 or 2: the annealing stage of ``epoch``."""
        progress = epoch / max_epochs
        if progress < self.fractions[0]:
            return 0
        return 1 if progress < self.fractions[0] + self.fractions[1] else 2

    def __call__(self, epoch: int, max_epochs: int) -> float:
        return float(self.values[self.stage(epoch, max_epochs)])


def e_step(W: torch.Tensor, eta: torch.Tensor, lambda0: float, lambda1: float):
    """E-step of Appendix B.2.1: p*_jk = E[γ_jk | w_jk, η_k] and λ*_jk.

    Parameters
    ----------
    W : (G, K) tensor, current mask (treated as a constant: pass ``W.detach()``).
    eta : (K,) tensor, current column inclusion rates.
    lambda1 : float or 0-dim tensor (an empirical λ1, see :func:`m_step_lambda1`).

    Returns
    -------
    p_star : (G, K) posterior inclusion probabilities.
    lambda_star : (G, K) adaptive penalty λ1 p* + λ0 (1 - p*).
    """
    eta = eta.clamp(_ETA_EPS, 1.0 - torch.finfo(eta.dtype).eps)
    # The ratio of slab to spike density, written as a logit so that λ0|w| in the hundreds does not
    # overflow exp(): logit p* = log η/(1-η) + log λ1/λ0 + (λ0 - λ1)|w|.
    logit = (
        torch.log(eta) - torch.log1p(-eta)
        + _log(lambda1 / lambda0)
        + (lambda0 - lambda1) * W.abs()
    )
    p_star = torch.sigmoid(logit)
    lambda_star = lambda1 * p_star + lambda0 * (1.0 - p_star)
    return p_star, lambda_star


def m_step_eta(p_star: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Closed-form M-step for η_k (maximiser of the η terms of Appendix B.2.1).

    η_k = (Σ_j p*_jk + a - 1) / (G + a + b - 2), with the Beta(a, b) prior; the paper uses a = 1,
    b = G, which gives η_k = Σ_j p*_jk / (2G - 1) and lets unused columns die out.
    """
    G = p_star.shape[0]
    eta = (p_star.sum(0) + a - 1.0) / (G + a + b - 2.0)
    return eta.clamp(_ETA_EPS, 1.0 - torch.finfo(eta.dtype).eps)


def m_step_lambda1(W: torch.Tensor, p_star: torch.Tensor, lambda0: float) -> torch.Tensor:
    """Empirical-Bayes M-step for the slab penalty: λ1 = Σ p*_jk / Σ p*_jk |w_jk|.

    The maximiser of the slab terms of Appendix B.2.1, Σ p* (log λ1/2 − λ1|w|), over λ1: one over
    the p*-weighted mean |w| of the entries in the slab.  The paper fixes λ1 = 0.1, a Laplace slab
    of mean 10, while the slab entries of NB models fitted with it average |w| ≈ 2.6–2.9
    (docs/design.md, items 23–24).  Kept in [LAMBDA1_MIN, λ0 / LAMBDA1_SPIKE_RATIO].  Meaningful only when the
    likelihood fixes the scale of W (``normalize_decoder=True``): otherwise a smaller W costs
    nothing, and λ1 would chase it.

    W, p_star : (G, K).  Returns a 0-dim tensor on W's device (no host sync).
    """
    W = W.detach()
    lam = p_star.sum() / (p_star * W.abs()).sum().clamp_min(1e-12)
    return lam.clamp(LAMBDA1_MIN, lambda0 / LAMBDA1_SPIKE_RATIO)


def ssl_log_density(w: torch.Tensor, eta: torch.Tensor, lambda0: float, lambda1: float) -> torch.Tensor:
    """log p(w | η) = log[η λ1/2 e^{−λ1|w|} + (1 − η) λ0/2 e^{−λ0|w|}] (§2.2), elementwise: the prior of one
    entry with γ summed out (mssvae.pruning compares it at w and at 0)."""
    slab = torch.log(eta) + _log(lambda1 / 2.0) - lambda1 * w.abs()
    spike = torch.log1p(-eta) + math.log(lambda0 / 2.0) - lambda0 * w.abs()
    return torch.logaddexp(slab, spike)


def ssl_log_prior(
    W: torch.Tensor,
    p_star: torch.Tensor,
    lambda_star: torch.Tensor,
    eta: torch.Tensor,
    a: float,
    b: float,
    lambda0: float,
    lambda1: float,
    row_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """E_{Γ | W_old, η_old}[log p(W | Γ) p(Γ | η) p(η)] of Eq. 2.4 for one mask block.

    The paper prints ``+ Σ λ* |w|``; the log-density of a Laplace is ``-λ|w|``, so the penalty
    enters with a minus sign here.  The Laplace normalisers and the η terms do not depend on W;
    they are included so that the reported objective is the full lower bound (up to the Beta
    normaliser, a constant).  Only the first term carries a gradient to W.

    Parameters
    ----------
    W : (G, K) mask (with gradient); p_star, lambda_star : (G, K) from :func:`e_step`;
    eta : (K,).
    row_weight : (G,), optional
        Relative weights (mean 1) of each feature's penalty row, for a prior calibrated per feature.
    """
    G = W.shape[0]
    eta = eta.clamp(_ETA_EPS, 1.0 - torch.finfo(eta.dtype).eps)
    scaled = lambda_star if row_weight is None else lambda_star * row_weight.unsqueeze(-1)
    penalty = -(scaled * W.abs()).sum()
    normalisers = (p_star * _log(lambda1 / 2.0) + (1.0 - p_star) * math.log(lambda0 / 2.0)).sum()
    n_in = p_star.sum(0)
    eta_terms = ((n_in + a - 1.0) * torch.log(eta) + (G - n_in + b - 1.0) * torch.log1p(-eta)).sum()
    return penalty + normalisers + eta_terms
