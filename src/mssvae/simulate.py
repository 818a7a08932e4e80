"""Synthetic multi-study data of Moran & Krishnan, "Nonlinear multi-study factor analysis", §4.

Two generators are provided:

* :func:`simulate_gaussian` -- the Gaussian nonlinear factor model of §4.1;
* :func:`simulate_rnaseq` -- the Splatter-like synthetic bulk RNA-seq counts of §4.2.

Both return a :class:`SimulatedData` holding the data, the study labels and the ground truth
(masks ``W`` and factors ``Z``) needed by :mod:`mssvae.metrics`.  Samples are always ordered
study by study ("study1" rows first, then "study2", ...), and study ``m``'s specific factors
``Z_specific[label]`` are in the row order of ``X[study == label]``.

Indexing convention: the paper numbers features ``j = 1..G`` and makes every feature with
``j ≡ 0 (mod 3)`` nonlinear; with 0-based python indices these are the features with
``j % 3 == 2`` (see :func:`nonlinear_features`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "SimulatedData",
    "block_masks",
    "nonlinear_features",
    "simulate_gaussian",
    "simulate_rnaseq",
    "study_labels",
]


@dataclass(frozen=True)
class SimulatedData:
    """A simulated multi-study data set with its ground truth.

    Attributes
    ----------
    X : ndarray, shape (N, G)
        Observations; float32 for the Gaussian simulation, int64 counts for RNA-seq.
    study : ndarray of str, shape (N,)
        Study label of each sample, ``"study1" .. "studyM"``; samples are ordered study by study.
    W_shared : ndarray, shape (G, K_S)
        True shared loading/mask matrix W^(S) (zero outside the support).
    W_specific : dict of str -> ndarray, shape (G, K_m)
        True study-specific matrices W^(m), keyed by study label.
    Z_shared : ndarray, shape (N, K_S)
        True shared factors z_i of every sample.
    Z_specific : dict of str -> ndarray, shape (n_m, K_m)
        True study-specific factors xi_i of the samples of that study, in the row order of
        ``X[study == label]``.
    library_size : ndarray, shape (N,) or None
        Per-sample library size l_i (RNA-seq only).
    params : dict
        The arguments the generator was called with.
    """

    X: np.ndarray
    study: np.ndarray
    W_shared: np.ndarray
    W_specific: dict[str, np.ndarray]
    Z_shared: np.ndarray
    Z_specific: dict[str, np.ndarray]
    library_size: np.ndarray | None
    params: dict[str, Any]

    @property
    def labels(self) -> list[str]:
        """Study labels in sample order, ``["study1", ..., "studyM"]``."""
        return list(self.W_specific)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def study_labels(n_studies: int) -> list[str]:
    """Labels ``["study1", ..., "study<n_studies>"]``."""
    return [f"study{m + 1}" for m in range(n_studies)]


def nonlinear_features(n_features: int) -> np.ndarray:
    """Boolean mask of the features that depend nonlinearly on the factors.

    The paper's 1-based rule ``j ≡ 0 (mod 3)`` translated to 0-based indices (``j % 3 == 2``).

    Returns
    -------
    ndarray of bool, shape (G,)
    """
    return np.arange(n_features) % 3 == 2


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_positive(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return v


def block_masks(
    n_features: int,
    n_shared: int,
    n_specific: int,
    n_studies: int,
    overlap: int = 1,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Boolean block-sparse supports for W^(S) and each W^(m).

    The ``K = n_shared + n_studies * n_specific`` factors are laid out on contiguous feature
    blocks of equal size ``b = n_features // K`` in the order
    [shared 1..K_S | study-1 specific 1..K_m | study-2 specific ... | study-M specific];
    the ``n_features - K*b`` (< K) trailing features load on nothing (pure noise).
    Within the shared group and within each study's specific group, block ``k`` is extended
    by ``overlap`` features into block ``k + 1``, so those features load on two factors.
    Each factor therefore keeps ``b - overlap`` features loading on it alone, i.e. anchor
    features (Assumption 1), in every study's combined matrix [W^(S) | W^(m)].

    Parameters
    ----------
    n_features, n_shared, n_specific, n_studies : int
        G, K_S, K_m and M.
    overlap : int
        Number of two-factor features between consecutive blocks of a group.

    Returns
    -------
    S_shared : ndarray of bool, shape (G, K_S)
    S_specific : list of ndarray of bool, each shape (G, K_m), one per study

    Raises
    ------
    ValueError
        If ``n_features`` is too small for blocks of ``overlap + 2`` features.
    """
    n_total = n_shared + n_studies * n_specific
    size = n_features // n_total
    if size < overlap + 2:
        raise ValueError(
            f"n_features={n_features} is too small: {n_total} factors need blocks of at least "
            f"{overlap + 2} features (n_features >= {(overlap + 2) * n_total})"
        )
    starts = np.arange(n_total) * size
    stops = starts + size
    # Extend every block except the last of its group so that neighbouring factors of the
    # same group share `overlap` features; groups never overlap each other, which keeps each
    # study's specific features disjoint from the other studies'.
    group_last = np.zeros(n_total, dtype=bool)
    group_last[n_shared - 1] = True
    group_last[n_shared + n_specific - 1 :: n_specific] = True
    stops = stops + np.where(group_last, 0, overlap)
    feat = np.arange(n_features)[:, None]
    S = (feat >= starts) & (feat < stops)  # (G, K)
    S_shared = S[:, :n_shared]
    S_specific = [S[:, n_shared + m * n_specific : n_shared + (m + 1) * n_specific] for m in range(n_studies)]
    return S_shared, S_specific


def _draw_weights(rng: np.random.Generator, support: np.ndarray, mean: float, var: float) -> np.ndarray:
    """Fill the support with iid N(mean, var) entries; zeros elsewhere.  Shape of ``support``."""
    W = np.zeros(support.shape)
    W[support] = rng.normal(mean, np.sqrt(var), size=int(support.sum()))
    return W


# ----------------------------------------------------------------------------------------------
# §4.1 Gaussian nonlinear factor analysis
# ----------------------------------------------------------------------------------------------


def simulate_gaussian(
    n_per_study: int = 1000,
    n_studies: int = 3,
    n_features: int = 100,
    n_shared: int = 8,
    n_specific: int = 2,
    noise_var: float = 0.2,
    factor_sd: float = 0.5,
    random_state: int | None = 0,
) -> SimulatedData:
    """Gaussian nonlinear multi-study factor data (paper §4.1).

    For study m, sample i and feature j (1-based)::

        x_ij = sum_k W^(S)_jk z_ik   + sum_k W^(m)_jk xi_ik   + eps_ij   if j ≢ 0 (mod 3)
        x_ij = sum_k W^(S)_jk z_ik^2 + sum_k W^(m)_jk xi_ik^2 + eps_ij   if j ≡ 0 (mod 3)

    with ``z_i ~ N(0, factor_sd^2 I_{K_S})``, ``xi_i ~ N(0, factor_sd^2 I_{K_m})`` and
    ``eps_ij ~ N(0, noise_var)``.  The paper writes the noise as N(0, 0.2); we read 0.2 as the
    *variance* (as for the N(8, 0.01) weights).  Non-zero weights are
    ``W^(S)_jk ~ N(8, 0.01)`` and ``W^(m)_jk ~ N(10, 0.01)`` (second argument = variance).

    Block design (the paper's Fig. 2(b) is not reproduced here; see :func:`block_masks`):
    the ``K = K_S + M*K_m`` factors own contiguous, equal-sized feature blocks of
    ``b = G // K`` features, shared factors first, then study 1's specific factors, study 2's,
    ... so every study's specific features are disjoint from the other studies'.  Consecutive
    blocks within a group overlap by one feature (a feature loading on two factors), leaving
    ``b - 1 >= 2`` anchor features per factor.  The ``G - K*b`` trailing features are pure
    noise.  With the defaults (G=100, K=14): blocks of 7, 10 two-factor features, 2 noise
    features.

    Parameters
    ----------
    n_per_study : int
        Samples per study, n_m.
    n_studies : int
        Number of studies M.
    n_features : int
        G; must be at least ``3 * (n_shared + n_studies * n_specific)``.
    n_shared, n_specific : int
        K_S and K_m (the same K_m for every study).
    noise_var : float
        Variance of the Gaussian noise.
    factor_sd : float
        Standard deviation of the factors.
    random_state : int or None
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    SimulatedData
        ``X`` float32 of shape (M * n_per_study, G); ``library_size`` is None.

    Raises
    ------
    ValueError
        On non-positive sizes/variances or a too small ``n_features``.
    """
    params = {
        "n_per_study": n_per_study,
        "n_studies": n_studies,
        "n_features": n_features,
        "n_shared": n_shared,
        "n_specific": n_specific,
        "noise_var": noise_var,
        "factor_sd": factor_sd,
        "random_state": random_state,
    }
    n_per_study = _check_positive_int("n_per_study", n_per_study)
    n_studies = _check_positive_int("n_studies", n_studies)
    n_features = _check_positive_int("n_features", n_features)
    n_shared = _check_positive_int("n_shared", n_shared)
    n_specific = _check_positive_int("n_specific", n_specific)
    noise_var = _check_positive("noise_var", noise_var)
    factor_sd = _check_positive("factor_sd", factor_sd)

    S_shared, S_specific = block_masks(n_features, n_shared, n_specific, n_studies, overlap=1)
    rng = np.random.default_rng(random_state)
    labels = study_labels(n_studies)
    W_shared = _draw_weights(rng, S_shared, 8.0, 0.01)
    W_specific = {lab: _draw_weights(rng, S, 10.0, 0.01) for lab, S in zip(labels, S_specific)}

    N = n_studies * n_per_study
    study = np.repeat(np.array(labels), n_per_study)
    Z_shared = rng.normal(0.0, factor_sd, size=(N, n_shared))
    Z_specific = {lab: rng.normal(0.0, factor_sd, size=(n_per_study, n_specific)) for lab in labels}

    nonlin = nonlinear_features(n_features)
    blocks = []
    for m, lab in enumerate(labels):  # loop over studies only: each has its own W^(m)
        z = Z_shared[m * n_per_study : (m + 1) * n_per_study]
        xi = Z_specific[lab]
        linear = z @ W_shared.T + xi @ W_specific[lab].T
        quadratic = (z**2) @ W_shared.T + (xi**2) @ W_specific[lab].T
        blocks.append(np.where(nonlin, quadratic, linear))  # Eq. of §4.1
    X = np.concatenate(blocks, axis=0)
    X += rng.normal(0.0, np.sqrt(noise_var), size=X.shape)

    return SimulatedData(
        X=X.astype(np.float32),
        study=study,
        W_shared=W_shared,
        W_specific=W_specific,
        Z_shared=Z_shared,
        Z_specific=Z_specific,
        library_size=None,
        params=params,
    )


# ----------------------------------------------------------------------------------------------
# §4.2 synthetic bulk RNA-seq
# ----------------------------------------------------------------------------------------------


def _split_counts(n_samples: int, proportions: np.ndarray) -> np.ndarray:
    """Integer study sizes summing to ``n_samples`` (largest-remainder rounding).  Shape (M,)."""
    raw = n_samples * proportions
    counts = np.floor(raw).astype(int)
    short = n_samples - counts.sum()
    counts[np.argsort(-(raw - counts), kind="stable")[:short]] += 1
    return counts


def _mostly_block_masks(
    rng: np.random.Generator,
    n_features: int,
    n_shared: int,
    n_specific: int,
    n_studies: int,
    off_block_fraction: float,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Disjoint contiguous blocks plus random off-block entries (§4.2 "mostly block").

    In every column, ``round(off_block_fraction * #zeros)`` of the zero entries, chosen
    uniformly at random, are switched on.

    Returns
    -------
    S_shared : ndarray of bool, shape (G, K_S)
    S_specific : list of ndarray of bool, each (G, K_m)
    """
    S_shared, S_specific = block_masks(n_features, n_shared, n_specific, n_studies, overlap=0)
    S = np.concatenate([S_shared, *S_specific], axis=1)
    # Rank the zero entries of each column by a random key and keep the lowest ones: a
    # vectorised "choose n_off of the zeros without replacement" for all columns at once.
    n_off = np.rint(off_block_fraction * (~S).sum(axis=0)).astype(int)  # (K,)
    keys = rng.random(S.shape)
    keys[S] = np.inf
    ranks = np.argsort(np.argsort(keys, axis=0), axis=0)
    S = S | (ranks < n_off)
    return S[:, :n_shared], [
        S[:, n_shared + m * n_specific : n_shared + (m + 1) * n_specific] for m in range(n_studies)
    ]


def _biological_cv(rng: np.random.Generator, mean: np.ndarray, phi: float, df: float) -> np.ndarray:
    """BCV from a scaled inverse chi^2 (§4.2; McCarthy et al. 2012, Splatter).

    ``BCV = (phi + 1/sqrt(mean)) * sqrt(df / q)``, ``q ~ chi^2_df`` drawn per entry.
    Shape of ``mean``.
    """
    return (phi + 1.0 / np.sqrt(mean)) * np.sqrt(df / rng.chisquare(df, size=np.shape(mean)))


def _negative_binomial(rng: np.random.Generator, mean: np.ndarray, inv_disp: np.ndarray) -> np.ndarray:
    """NB(mean, inverse dispersion r) counts as a Gamma-Poisson mixture.  Shape of ``mean``.

    ``lambda ~ Gamma(shape=r, scale=mean/r)`` has mean ``mean`` and variance ``mean^2/r``, so
    ``Poisson(lambda)`` has variance ``mean + mean^2/r``; the mixture keeps the paper's
    (mean, inverse dispersion) parameterisation instead of numpy's (n, p) one.
    """
    return rng.poisson(rng.gamma(inv_disp, mean / inv_disp)).astype(np.int64)


def simulate_rnaseq(
    n_samples: int = 3200,
    n_features: int = 5000,
    proportions: tuple[float, ...] = (0.3, 0.3, 0.4),
    n_shared: int = 10,
    n_specific: int = 3,
    off_block_fraction: float = 0.05,
    lib_mean: float = 12.0,
    lib_sd: float = 0.5,
    bcv_phi: float = 0.1,
    bcv_df: float = 60,
    random_state: int | None = 0,
) -> SimulatedData:
    """Synthetic bulk RNA-seq counts in the style of Splatter (paper §4.2).

    For study m, sample i and gene j (1-based), with ``c = 3*pi/4``::

        mu_ij = b_j + sum_k W^(S)_jk z_ik        + sum_k W^(m)_jk xi_ik          if j ≢ 0 (mod 3)
        mu_ij = b_j + sum_k W^(S)_jk sin(c z_ik) + sum_k W^(m)_jk sin(c xi_ik)   if j ≡ 0 (mod 3)
        mu'_ij = softplus(mu_ij) / sum_j' softplus(mu_ij')
        l_i ~ LogNormal(lib_mean, lib_sd^2),   mu~_ij = l_i mu'_ij
        BCV_ij = (phi + 1 / sqrt(mu~_ij)) sqrt(nu / q_ij),   q_ij ~ chi^2_nu
        X_ij ~ NB(mean = mu~_ij, inverse dispersion = 1 / BCV_ij^2)

    with ``b_j ~ N(0, 0.5^2)``.  The negative binomial is drawn as a Gamma-Poisson mixture,
    ``lambda ~ Gamma(shape=r, scale=mu~/r)``, ``X ~ Poisson(lambda)`` with ``r = 1/BCV^2``.
    BCV is drawn per entry (i, j) as the paper's indices say (Splatter draws it per gene).

    Choices where the paper is silent:

    * factors ``z_i ~ N(0, I_{K_S})`` and ``xi_i ~ N(0, I_{K_m})`` (standard normal);
    * the true dimensions default to ``K_S = 10`` and ``K_m = 3`` for every study;
    * masks: the ``K_S + M*K_m`` factors own disjoint contiguous blocks of
      ``G // (K_S + M K_m)`` genes (shared first, then each study's specific factors), and
      in each column a fraction ``off_block_fraction`` of the zero entries is switched on at
      random ("5 % non-block non-zero elements").  Non-zero ``W^(S) ~ N(10, 0.01)``,
      ``W^(m) ~ N(12, 0.01)`` (0.01 = variance).

    Parameters
    ----------
    n_samples : int
        Total number of samples N.
    n_features : int
        Number of genes G; at least ``2 * (n_shared + M * n_specific)``.
    proportions : sequence of float, length M
        Fraction of samples in each study; positive, summing to 1.  Study sizes are rounded
        by largest remainder so that they sum to N.
    n_shared, n_specific : int
        True K_S and K_m.
    off_block_fraction : float in [0, 1)
        Fraction of each column's zero (off-block) entries made non-zero.
    lib_mean, lib_sd : float
        Mean and standard deviation of log library size.
    bcv_phi, bcv_df : float
        phi and nu of the scaled inverse chi-squared BCV.
    random_state : int or None
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    SimulatedData
        ``X`` int64 counts of shape (N, G) and ``library_size`` of shape (N,).

    Raises
    ------
    ValueError
        On invalid arguments (named in the message).
    """
    params = {
        "n_samples": n_samples,
        "n_features": n_features,
        "proportions": tuple(proportions),
        "n_shared": n_shared,
        "n_specific": n_specific,
        "off_block_fraction": off_block_fraction,
        "lib_mean": lib_mean,
        "lib_sd": lib_sd,
        "bcv_phi": bcv_phi,
        "bcv_df": bcv_df,
        "random_state": random_state,
    }
    n_samples = _check_positive_int("n_samples", n_samples)
    n_features = _check_positive_int("n_features", n_features)
    n_shared = _check_positive_int("n_shared", n_shared)
    n_specific = _check_positive_int("n_specific", n_specific)
    props = np.asarray(proportions, dtype=float)
    if props.ndim != 1 or props.size < 1 or np.any(~np.isfinite(props)) or np.any(props <= 0):
        raise ValueError(f"proportions must be a non-empty sequence of positive numbers, got {proportions!r}")
    if not np.isclose(props.sum(), 1.0, atol=1e-6):
        raise ValueError(f"proportions must sum to 1, got sum {props.sum():.6g}")
    if not (0.0 <= float(off_block_fraction) < 1.0):
        raise ValueError(f"off_block_fraction must be in [0, 1), got {off_block_fraction!r}")
    if not np.isfinite(float(lib_mean)):
        raise ValueError(f"lib_mean must be finite, got {lib_mean!r}")
    lib_sd = _check_positive("lib_sd", lib_sd)
    if not (np.isfinite(float(bcv_phi)) and float(bcv_phi) >= 0):
        raise ValueError(f"bcv_phi must be a non-negative number, got {bcv_phi!r}")
    bcv_df = _check_positive("bcv_df", bcv_df)
    n_studies = props.size
    sizes = _split_counts(n_samples, props)
    if np.any(sizes < 1):
        raise ValueError(f"n_samples={n_samples} leaves a study empty with proportions {tuple(proportions)}")
    n_total = n_shared + n_studies * n_specific
    if n_features < 2 * n_total:
        raise ValueError(f"n_features={n_features} is too small for {n_total} blocks (need >= {2 * n_total})")

    rng = np.random.default_rng(random_state)
    labels = study_labels(n_studies)
    S_shared, S_specific = _mostly_block_masks(
        rng, n_features, n_shared, n_specific, n_studies, float(off_block_fraction)
    )
    W_shared = _draw_weights(rng, S_shared, 10.0, 0.01)
    W_specific = {lab: _draw_weights(rng, S, 12.0, 0.01) for lab, S in zip(labels, S_specific)}
    intercept = rng.normal(0.0, 0.5, size=n_features)

    study = np.repeat(np.array(labels), sizes)
    Z_shared = rng.normal(size=(n_samples, n_shared))
    Z_specific = {lab: rng.normal(size=(n, n_specific)) for lab, n in zip(labels, sizes)}
    library_size = rng.lognormal(lib_mean, lib_sd, size=n_samples)

    nonlin = nonlinear_features(n_features)
    lin_idx, nl_idx = np.flatnonzero(~nonlin), np.flatnonzero(nonlin)
    c = 3.0 * np.pi / 4.0
    X = np.empty((n_samples, n_features), dtype=np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    # One pass per study (never per sample/gene) keeps the peak memory at a few (n_m, G)
    # float64 arrays instead of a few (N, G) ones.
    for m, lab in enumerate(labels):
        rows = slice(bounds[m], bounds[m + 1])
        z, xi, Wm = Z_shared[rows], Z_specific[lab], W_specific[lab]
        mu = np.empty((sizes[m], n_features))
        mu[:, lin_idx] = z @ W_shared[lin_idx].T + xi @ Wm[lin_idx].T
        mu[:, nl_idx] = np.sin(c * z) @ W_shared[nl_idx].T + np.sin(c * xi) @ Wm[nl_idx].T
        mu += intercept
        mu = np.logaddexp(0.0, mu, out=mu)  # softplus, stable for large |mu|
        mu /= mu.sum(axis=1, keepdims=True)
        mu *= library_size[rows, None]  # mu~ = l_i mu'
        bcv = _biological_cv(rng, mu, bcv_phi, bcv_df)
        X[rows] = _negative_binomial(rng, mu, 1.0 / bcv**2)

    return SimulatedData(
        X=X,
        study=study,
        W_shared=W_shared,
        W_specific=W_specific,
        Z_shared=Z_shared,
        Z_specific=Z_specific,
        library_size=library_size,
        params=params,
    )
