"""Evaluation metrics of Moran & Krishnan, "Nonlinear multi-study factor analysis", App. C.1.

Support rule (used by every function here)
------------------------------------------
Feature/gene ``j`` is in the support of factor ``k`` iff ``|W_jk| > 0.5`` (:func:`support`),
the same rule the paper uses to read gene sets off the estimated ``W`` in §5.  A different
``threshold`` can be passed everywhere, but the default should be kept for comparability.
True simulated weights are ~8-12 on their support and exactly 0 elsewhere, so the rule is
exact for them; boolean masks are also accepted (``|True| > 0.5``).

Column conventions
------------------
* All-zero columns carry no support: the set metrics (:func:`relevance`, :func:`recovery`,
  :func:`consensus`) drop all-zero columns of both arguments before scoring.
* When either collection is empty after that (e.g. an estimate with no active column), the
  three set metrics return ``0.0`` -- nothing was recovered and nothing is relevant.
* :func:`evaluate` additionally keeps only estimated columns passing
  :func:`active_columns` (e.g. ``max_density=0.25`` for the §4.2 RNA-seq experiment, which
  drops estimated columns with more than 25 % non-zeros).

Disentanglement follows Eastwood & Williams (2018) as specified in App. C.1 (Eq. C.5).
Two readings of ours, where the paper is silent or loose (:func:`evaluate`):

* DCI is scored **per study and averaged**: study m's samples, its true factors
  [shared | study m] (entropy in log base K_S + K_m) against its estimated [shared | study m]
  columns.  The paper's "over all factors" could also mean one pooled score over K_S + M·K_m
  true factors (log base 14 in §4.1); the two differ only for entangled factors (a factor
  split evenly over two true factors scores 1 − log 2 / log 10 = 0.70 here, 0.74 pooled), and
  the study-specific factors are only defined within their study.
* The estimated factors entering DCI are the **active columns** of the set metrics: empty
  columns, and with ``max_density`` (§4.2) the dense ones, are left out of DCI too.  The paper
  keeps every estimated factor (an irrelevant one gets ρ ≈ 0) and names the 25 % filter only for
  the set metrics.  With 10 true factors estimated with noise, 25 extra near-constant columns
  moved DCI from 0.961 to 0.970 (``benchmarks/probes/dci_inactive_columns.py``), so the choice
  moves a reported DCI by about 0.01.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.ensemble import GradientBoostingRegressor

if TYPE_CHECKING:  # pragma: no cover
    from mssvae.simulate import SimulatedData

__all__ = [
    "active_columns",
    "consensus",
    "dci_disentanglement",
    "evaluate",
    "evaluate_simulation",
    "find_replicated_specific",
    "jaccard_matrix",
    "merge_replicated_specific",
    "recovery",
    "relevance",
    "support",
]


# ----------------------------------------------------------------------------------------------
# supports and Jaccard scores
# ----------------------------------------------------------------------------------------------


def support(W: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Boolean support ``|W| > threshold`` (the package-wide support rule).

    Parameters
    ----------
    W : array_like, shape (G, K)
        Loading/mask matrix (real or boolean).
    threshold : float
        Magnitude above which an entry counts as non-zero.

    Returns
    -------
    ndarray of bool, shape (G, K)
    """
    return np.abs(np.asarray(W, dtype=float)) > threshold


def active_columns(S: np.ndarray, max_density: float | None = None) -> np.ndarray:
    """Indices of the columns of a support matrix that are kept for scoring.

    A column is active iff it has at least one non-zero entry and, when ``max_density`` is
    given, a fraction of non-zero entries ``<= max_density`` (§4.2 uses 0.25 to drop the
    dense columns induced by the per-sample normalisation).

    Parameters
    ----------
    S : array_like of bool, shape (G, K)
        Support matrix (any non-zero entry counts as in the support).
    max_density : float or None
        Maximal fraction of non-zero entries per column.

    Returns
    -------
    ndarray of int, shape (K_active,)
    """
    S = np.asarray(S, dtype=bool)
    counts = S.sum(axis=0)
    keep = counts > 0
    if max_density is not None:
        keep &= counts <= max_density * S.shape[0]
    return np.flatnonzero(keep)


def _nonempty(S: np.ndarray) -> np.ndarray:
    S = np.asarray(S, dtype=bool)
    if S.ndim != 2:
        raise ValueError(f"support matrices must be 2-D (G, K), got shape {S.shape}")
    return S[:, S.any(axis=0)]


def jaccard_matrix(S_true: np.ndarray, S_est: np.ndarray) -> np.ndarray:
    """Jaccard index (Eq. C.1) between every true and every estimated column support.

    Parameters
    ----------
    S_true : array_like of bool, shape (G, K_true)
    S_est : array_like of bool, shape (G, K_est)

    Returns
    -------
    ndarray of float, shape (K_true, K_est)
        ``|C_k ∩ Ĉ_k'| / |C_k ∪ Ĉ_k'|``; 0 where both columns are empty.
    """
    A = np.asarray(S_true, dtype=bool).astype(float)
    B = np.asarray(S_est, dtype=bool).astype(float)
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(f"S_true {A.shape} and S_est {B.shape} must be 2-D with the same number of rows")
    inter = A.T @ B
    union = A.sum(axis=0)[:, None] + B.sum(axis=0)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def relevance(S_true: np.ndarray, S_est: np.ndarray) -> float:
    """Relevance (Eq. C.2): mean over estimated columns of the best Jaccard with a true column.

    All-zero columns are dropped; 0.0 if no (true or estimated) column remains.

    Parameters
    ----------
    S_true : array_like of bool, shape (G, K_true)
    S_est : array_like of bool, shape (G, K_est)

    Returns
    -------
    float in [0, 1]
    """
    J = jaccard_matrix(_nonempty(S_true), _nonempty(S_est))
    if J.size == 0:
        return 0.0
    return float(J.max(axis=0).mean())


def recovery(S_true: np.ndarray, S_est: np.ndarray) -> float:
    """Recovery (Eq. C.3): mean over true columns of the best Jaccard with an estimated column.

    All-zero columns are dropped; 0.0 if no (true or estimated) column remains.

    Parameters
    ----------
    S_true : array_like of bool, shape (G, K_true)
    S_est : array_like of bool, shape (G, K_est)

    Returns
    -------
    float in [0, 1]
    """
    J = jaccard_matrix(_nonempty(S_true), _nonempty(S_est))
    if J.size == 0:
        return 0.0
    return float(J.max(axis=1).mean())


def consensus(S_true: np.ndarray, S_est: np.ndarray) -> float:
    """Consensus score (Eq. C.4) of Hochreiter et al. (2010).

    True and estimated columns are matched one-to-one by the Hungarian algorithm maximising
    the total Jaccard index, and the matched Jaccards are summed and divided by
    ``max(|C_t|, |C_f|)``, so unmatched surplus (or missing) columns count as 0.
    All-zero columns are dropped; 0.0 if no (true or estimated) column remains.

    Parameters
    ----------
    S_true : array_like of bool, shape (G, K_true)
    S_est : array_like of bool, shape (G, K_est)

    Returns
    -------
    float in [0, 1]
    """
    J = jaccard_matrix(_nonempty(S_true), _nonempty(S_est))
    if J.size == 0:
        return 0.0
    rows, cols = linear_sum_assignment(J, maximize=True)
    return float(J[rows, cols].sum() / max(J.shape))


# ----------------------------------------------------------------------------------------------
# disentanglement
# ----------------------------------------------------------------------------------------------


def dci_disentanglement(
    Z_true: np.ndarray,
    Z_est: np.ndarray,
    random_state: int | None = 0,
    n_estimators: int = 50,
    max_depth: int = 3,
    max_samples: int | None = 1000,
) -> float:
    """Disentanglement score of Eastwood & Williams (2018), App. C.1 steps 1-4 (Eq. C.5).

    1. For each true factor ``k`` fit a gradient boosted regressor predicting ``z_k`` from
       all estimated factors ``ẑ``.
    2. ``R[k', k]`` = impurity importance of ``ẑ_k'`` in that model.
    3. ``D_k' = 1 - H_K(P_k'.)`` with ``P_k'k = R_k'k / sum_k R_k'k`` and the entropy in
       log base ``K = K_true``.
    4. ``D = sum_k' rho_k' D_k'`` with ``rho_k' = sum_k R_k'k / sum_{k,k'} R_k'k``.

    Estimated factors with zero total importance get ``rho = 0`` (they do not contribute).
    With ``K_true == 1`` the base-1 entropy is undefined; every estimated factor is then
    trivially specific to the single true factor and the score is defined as 1.0.  If no
    estimated factor has any importance (e.g. constant ``Z_est``) the score is 0.0.

    The boosted trees are deliberately small (``n_estimators=50, max_depth=3``, sklearn's
    default learning rate): importances only need to rank relevance, and this keeps the
    score at about a second for N=3000, K≈10.  At most ``max_samples`` rows (chosen at random
    with ``random_state``) are used.

    Parameters
    ----------
    Z_true : array_like, shape (N, K_true)
    Z_est : array_like, shape (N, K_est)
    random_state : int or None
        Seed for row subsampling and the boosted trees.
    n_estimators, max_depth : int
        Passed to :class:`sklearn.ensemble.GradientBoostingRegressor`.
    max_samples : int or None
        Maximal number of rows used; None uses all.

    Returns
    -------
    float in [0, 1]
    """
    Z_true = np.asarray(Z_true, dtype=float)
    Z_est = np.asarray(Z_est, dtype=float)
    if Z_true.ndim == 1:
        Z_true = Z_true[:, None]
    if Z_est.ndim == 1:
        Z_est = Z_est[:, None]
    if Z_true.shape[0] != Z_est.shape[0]:
        raise ValueError(f"Z_true has {Z_true.shape[0]} rows but Z_est has {Z_est.shape[0]}")
    n, k_true = Z_true.shape
    if k_true == 0 or Z_est.shape[1] == 0 or n == 0:
        raise ValueError("Z_true and Z_est need at least one row and one column each")
    if k_true == 1:
        return 1.0
    rng = np.random.default_rng(random_state)
    if max_samples is not None and n > max_samples:
        rows = np.sort(rng.choice(n, size=max_samples, replace=False))
        Z_true, Z_est = Z_true[rows], Z_est[rows]
    seed = None if random_state is None else int(rng.integers(2**31 - 1))

    R = np.empty((Z_est.shape[1], k_true))
    for k in range(k_true):  # one regressor per true factor (App. C.1 step 1)
        model = GradientBoostingRegressor(n_estimators=n_estimators, max_depth=max_depth, random_state=seed)
        model.fit(Z_est, Z_true[:, k])
        R[:, k] = model.feature_importances_

    row_tot = R.sum(axis=1)
    total = row_tot.sum()
    if total <= 0:
        return 0.0
    P = np.divide(R, row_tot[:, None], out=np.zeros_like(R), where=row_tot[:, None] > 0)
    # 0 log 0 = 0; rows of all-zero importance get entropy 0 but weight rho = 0 below.
    plogp = np.where(P > 0, P * np.log(np.where(P > 0, P, 1.0)), 0.0)
    H = -plogp.sum(axis=1) / np.log(k_true)
    D = 1.0 - H
    rho = row_tot / total
    return float(np.clip(rho @ D, 0.0, 1.0))


# ----------------------------------------------------------------------------------------------
# full evaluation
# ----------------------------------------------------------------------------------------------


def _set_scores(S_true: np.ndarray, S_est: np.ndarray) -> tuple[float, float, float]:
    return consensus(S_true, S_est), relevance(S_true, S_est), recovery(S_true, S_est)


def evaluate(
    W_shared_true: np.ndarray,
    W_specific_true: Mapping[str, np.ndarray],
    W_shared_est: np.ndarray,
    W_specific_est: Mapping[str, np.ndarray],
    Z_shared_true: np.ndarray | None = None,
    Z_specific_true: Mapping[str, np.ndarray] | None = None,
    Z_est: np.ndarray | None = None,
    study: np.ndarray | None = None,
    threshold: float = 0.5,
    max_density: float | None = None,
    random_state: int | None = 0,
    dci_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Consensus, relevance, recovery (shared and group) and disentanglement of an estimate.

    Supports are ``support(W, threshold)``; estimated columns are restricted to
    ``active_columns(support(W_est), max_density)`` (pass ``max_density=0.25`` for §4.2).

    * ``shared_*``: Eq. C.2-C.4 between ``W_shared_true`` and the active ``W_shared_est``.
    * ``group_*``: Eq. C.2-C.4 computed per study between ``W_specific_true[m]`` and the
      active columns of ``W_specific_est[m]``, then averaged over studies (so each study
      counts equally whatever its number of factors).
    * ``dci``: for each study ``m``, :func:`dci_disentanglement` on that study's rows with
      true factors ``[Z_shared_true | Z_specific_true[m]]`` and, as estimated factors, the
      active shared columns plus the active study-``m`` columns of ``Z_est``; averaged over
      studies.  ``nan`` when the factors are not given.

    Parameters
    ----------
    W_shared_true : array_like, shape (G, K_S)
    W_specific_true : mapping str -> array_like, shape (G, K_m)
        Keyed by study label; the keys define the studies that are scored.
    W_shared_est : array_like, shape (G, K_S_est)
    W_specific_est : mapping str -> array_like, shape (G, K_m_est)
        Must contain every key of ``W_specific_true``.
    Z_shared_true : array_like, shape (N, K_S), optional
    Z_specific_true : mapping str -> array_like, shape (n_m, K_m), optional
        Rows in the order of the samples with ``study == label``.
    Z_est : array_like, shape (N, K_S_est + sum_m K_m_est), optional
        "z-tilde" layout of the model's ``transform``: [shared block | study blocks in the
        key order of ``W_specific_est``], zeros outside a sample's own study block.
    study : array_like of str, shape (N,), optional
        Study label of each row of ``Z_est``.
    threshold : float
        Support threshold.
    max_density : float or None
        Drop estimated columns denser than this (see :func:`active_columns`).
    random_state : int or None
        Seed for :func:`dci_disentanglement`.
    dci_kwargs : mapping, optional
        Extra keyword arguments for :func:`dci_disentanglement` (``n_estimators`` ...).

    Returns
    -------
    dict
        Keys ``shared_consensus, shared_relevance, shared_recovery, group_consensus,
        group_relevance, group_recovery, dci`` (floats), ``n_shared_est`` (int) and
        ``n_specific_est`` (dict label -> int), the numbers of active estimated columns.
    """
    labels = list(W_specific_true)
    missing = [lab for lab in labels if lab not in W_specific_est]
    if missing:
        raise ValueError(f"W_specific_est lacks the studies {missing}")

    S_sh_est = support(W_shared_est, threshold)
    act_sh = active_columns(S_sh_est, max_density)
    out: dict[str, Any] = {}
    out["shared_consensus"], out["shared_relevance"], out["shared_recovery"] = _set_scores(
        support(W_shared_true, threshold), S_sh_est[:, act_sh]
    )

    act_sp = {}
    group = []
    for lab in labels:  # per study: W^(m) columns are only comparable within a study
        S_est = support(W_specific_est[lab], threshold)
        act_sp[lab] = active_columns(S_est, max_density)
        group.append(_set_scores(support(W_specific_true[lab], threshold), S_est[:, act_sp[lab]]))
    g = np.mean(np.asarray(group), axis=0) if group else np.zeros(3)
    out["group_consensus"], out["group_relevance"], out["group_recovery"] = (float(v) for v in g)

    if Z_est is None or Z_shared_true is None or Z_specific_true is None or study is None:
        out["dci"] = float("nan")
    else:
        out["dci"] = _dci_by_study(
            Z_shared_true,
            Z_specific_true,
            Z_est,
            np.asarray(study),
            W_shared_est,
            W_specific_est,
            act_sh,
            act_sp,
            labels,
            random_state,
            dict(dci_kwargs or {}),
        )
    out["n_shared_est"] = int(act_sh.size)
    out["n_specific_est"] = {lab: int(act_sp[lab].size) for lab in labels}
    return out


def _dci_by_study(
    Z_shared_true,
    Z_specific_true,
    Z_est,
    study,
    W_shared_est,
    W_specific_est,
    act_sh,
    act_sp,
    labels,
    random_state,
    dci_kwargs,
) -> float:
    Z_shared_true = np.asarray(Z_shared_true, dtype=float)
    Z_est = np.asarray(Z_est, dtype=float)
    widths = [np.shape(W_shared_est)[1]] + [np.shape(W_specific_est[lab])[1] for lab in W_specific_est]
    if Z_est.ndim != 2 or Z_est.shape[1] != sum(widths):
        raise ValueError(
            f"Z_est must have {sum(widths)} columns (shared {widths[0]} + study blocks {widths[1:]}), "
            f"got shape {Z_est.shape}"
        )
    if not (Z_est.shape[0] == Z_shared_true.shape[0] == study.shape[0]):
        raise ValueError("Z_est, Z_shared_true and study must have the same number of rows")
    offsets = dict(zip(W_specific_est, np.cumsum(widths)[:-1]))
    scores = []
    for lab in labels:
        rows = study == lab
        Zt = np.concatenate([Z_shared_true[rows], np.asarray(Z_specific_true[lab], dtype=float)], axis=1)
        cols = np.concatenate([act_sh, offsets[lab] + act_sp[lab]])
        if cols.size == 0 or not rows.any():
            scores.append(0.0)  # nothing estimated for this study: nothing disentangled
            continue
        Ze = Z_est[np.ix_(rows, cols)]
        scores.append(dci_disentanglement(Zt, Ze, random_state=random_state, **dci_kwargs))
    return float(np.mean(scores)) if scores else float("nan")


def evaluate_simulation(
    sim: SimulatedData,
    W_shared_est: np.ndarray,
    W_specific_est: Mapping[str, np.ndarray],
    Z_est: np.ndarray | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """:func:`evaluate` against the ground truth stored in a :class:`~mssvae.simulate.SimulatedData`.

    ``max_density`` is not inferred: pass ``max_density=0.25`` for RNA-seq (§4.2) data.

    Parameters
    ----------
    sim : SimulatedData
    W_shared_est : array_like, shape (G, K_S_est)
    W_specific_est : mapping str -> array_like, shape (G, K_m_est)
    Z_est : array_like, shape (N, K_S_est + sum_m K_m_est), optional
        Rows in the sample order of ``sim.X``.
    **kw
        Further keyword arguments of :func:`evaluate`.

    Returns
    -------
    dict
        See :func:`evaluate`.
    """
    from mssvae.simulate import SimulatedData  # local: keeps metrics importable on its own

    if not isinstance(sim, SimulatedData):
        raise TypeError(f"sim must be a SimulatedData, got {type(sim).__name__}")
    return evaluate(
        sim.W_shared,
        sim.W_specific,
        W_shared_est,
        W_specific_est,
        Z_shared_true=sim.Z_shared,
        Z_specific_true=sim.Z_specific,
        Z_est=Z_est,
        study=sim.study,
        **kw,
    )


# ----------------------------------------------------------------------------------------------
# post-processing of the Fig. 6 failure mode
# ----------------------------------------------------------------------------------------------


def find_replicated_specific(
    W_specific: Mapping[str, np.ndarray],
    threshold: float = 0.5,
    min_jaccard: float = 0.8,
) -> list[dict[str, int]]:
    """Groups of study-specific columns that replicate one column across ALL studies.

    App. C.3 / Fig. 6: in the worst §4.1 replicate a shared block was estimated as one column
    in each study's ``W^(m)`` instead of a column of ``W^(S)``.  Since a shared factor is, by
    Theorem 2, the one whose support appears in every study, such a group -- one non-empty
    column per study whose supports pairwise have Jaccard ``>= min_jaccard`` -- signals that
    failure.  Each column is used in at most one group.  Groups are searched from the columns
    of the first study; among valid combinations the one with the largest total pairwise
    Jaccard is chosen.

    Parameters
    ----------
    W_specific : mapping str -> array_like, shape (G, K_m)
        Estimated study-specific matrices keyed by study label.
    threshold : float
        Support threshold (:func:`support`).
    min_jaccard : float
        Minimal pairwise Jaccard index within a group.

    Returns
    -------
    list of dict str -> int
        One ``{label: column index}`` per group, covering every study; empty when there are
        fewer than two studies.
    """
    labels = list(W_specific)
    if len(labels) < 2:
        return []
    S = {lab: support(W_specific[lab], threshold) for lab in labels}
    first, others = labels[0], labels[1:]
    used: dict[str, set[int]] = {lab: set() for lab in labels}
    groups = []
    for c0 in active_columns(S[first]):  # loops over columns only, a handful at most
        cand = []
        for lab in others:
            j = jaccard_matrix(S[first][:, [c0]], S[lab])[0]
            ok = [int(c) for c in np.flatnonzero(j >= min_jaccard) if c not in used[lab]]
            cand.append(ok)
        if any(len(c) == 0 for c in cand):
            continue
        best, best_score = None, -np.inf
        for combo in itertools.product(*cand):
            cols = np.stack([S[first][:, c0]] + [S[lab][:, c] for lab, c in zip(others, combo)], axis=1)
            J = jaccard_matrix(cols, cols)
            off = J[~np.eye(len(labels), dtype=bool)]
            if off.min() >= min_jaccard and off.sum() > best_score:
                best, best_score = combo, off.sum()
        if best is None:
            continue
        group = {first: int(c0), **{lab: int(c) for lab, c in zip(others, best)}}
        for lab, c in group.items():
            used[lab].add(c)
        groups.append(group)
    return groups


def merge_replicated_specific(
    W_shared: np.ndarray,
    W_specific: Mapping[str, np.ndarray],
    threshold: float = 0.5,
    min_jaccard: float = 0.8,
    Z_est: np.ndarray | None = None,
):
    """Move replicated study-specific columns (Fig. 6 failure) into the shared matrix.

    Every group from :func:`find_replicated_specific` becomes one new column appended to
    ``W_shared`` (the elementwise mean of the group's columns), and the group's columns are
    zeroed in the study matrices (their shapes are kept so column indices stay valid; the
    zeroed columns are inactive for :func:`evaluate`).  Inputs are not modified.

    Parameters
    ----------
    W_shared : array_like, shape (G, K_S)
    W_specific : mapping str -> array_like, shape (G, K_m)
    threshold, min_jaccard : float
        See :func:`find_replicated_specific`.
    Z_est : array_like, shape (N, K_S + sum_m K_m), optional
        Factors in the z-tilde layout of :func:`evaluate`.  If given, it is returned in the
        new layout: the merged factor of a sample is its own study's column of the group
        (the sum over the group, since other studies' blocks are zero), appended after the
        shared block; the moved study columns are zeroed.

    Returns
    -------
    W_shared_new : ndarray, shape (G, K_S + n_groups)
    W_specific_new : dict str -> ndarray, shape (G, K_m)
    Z_est_new : ndarray, shape (N, K_S + n_groups + sum_m K_m)
        Only when ``Z_est`` is given.
    """
    W_shared = np.asarray(W_shared, dtype=float)
    W_new = {lab: np.array(W, dtype=float, copy=True) for lab, W in W_specific.items()}
    groups = find_replicated_specific(W_specific, threshold=threshold, min_jaccard=min_jaccard)
    merged = (
        np.stack([np.mean([W_new[lab][:, c] for lab, c in g.items()], axis=0) for g in groups], axis=1)
        if groups
        else np.zeros((W_shared.shape[0], 0))
    )
    for g in groups:
        for lab, c in g.items():
            W_new[lab][:, c] = 0.0
    W_shared_new = np.concatenate([W_shared, merged], axis=1)
    if Z_est is None:
        return W_shared_new, W_new

    Z_est = np.array(Z_est, dtype=float, copy=True)
    k_s = W_shared.shape[1]
    widths = [W_new[lab].shape[1] for lab in W_new]
    if Z_est.ndim != 2 or Z_est.shape[1] != k_s + sum(widths):
        raise ValueError(f"Z_est must have {k_s + sum(widths)} columns, got shape {Z_est.shape}")
    offsets = dict(zip(W_new, k_s + np.cumsum([0] + widths[:-1])))
    z_cols = [np.array([offsets[lab] + c for lab, c in g.items()]) for g in groups]
    Z_merged = np.stack([Z_est[:, cols].sum(axis=1) for cols in z_cols], axis=1) if groups else Z_est[:, :0]
    for cols in z_cols:
        Z_est[:, cols] = 0.0
    Z_new = np.concatenate([Z_est[:, :k_s], Z_merged, Z_est[:, k_s:]], axis=1)
    return W_shared_new, W_new, Z_new


def merge_duplicate_columns(W: np.ndarray, threshold: float = 0.5, min_jaccard: float = 0.9) -> np.ndarray:
    """Collapse columns of one mask block whose supports are (near) identical.

    A failure mode seen on §4.1 (benchmarks/README.md): one true factor estimated as two columns
    of the same block with the same support (two latent dimensions for one gene program).  For
    reporting gene programs those columns are one set.  Columns are visited from the largest
    support down; each later column whose support has Jaccard ≥ ``min_jaccard`` with a kept
    column is merged into it (elementwise max of |W|).  This is post-processing for reports and
    diagnostics: the fitted model itself keeps every column.

    Parameters
    ----------
    W : array_like, shape (G, K)

    Returns
    -------
    ndarray, shape (G, K'), K' ≤ K: kept columns (all-zero columns are dropped).
    """
    W = np.abs(np.asarray(W, dtype=float))
    S = support(W, threshold)
    order = [int(k) for k in np.argsort(-S.sum(0), kind="stable") if S[:, k].any()]
    kept: list[int] = []
    merged: dict[int, np.ndarray] = {}
    J = jaccard_matrix(S, S)
    for k in order:
        match = next((c for c in kept if J[c, k] >= min_jaccard), None)
        if match is None:
            kept.append(k)
            merged[k] = W[:, k].copy()
        else:
            merged[match] = np.maximum(merged[match], W[:, k])
    return np.stack([merged[k] for k in kept], axis=1) if kept else np.zeros((W.shape[0], 0))
