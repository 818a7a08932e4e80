"""Starting masks W from the data: varimax-rotated principal components (``mask_init="varimax"``).

Appendix C.2.2 starts every mask entry at 1, so at the first step every column sees every gene and
the columns differ only by the networks' random weights.  On the §4.2 simulation at the GSE68086
shape, fits from that start end with pairs of shared columns that each hold the union of two true
modules, their factors rotated mixtures of the two (docs/design.md, "Counts (NB)", item 23).  Linear
factor analysis breaks the same rotational freedom with varimax (Kaiser 1958): among the rotations of
the leading principal components it picks the one whose loadings are most concentrated on few
variables per component.  Here those components only give the starting masks; training then
proceeds as from the paper's start.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.extmath import randomized_svd

# A component is specific to a study when its scores vary there more than this many times as much as
# in the median of the other studies.  On the §4.2 simulation at the GSE68086 shape (seeds 1 and 4),
# the components matching true shared modules had ratios 1.1-1.6 and those matching a study's own
# modules 48-131, so any value between a few and ~40 separates them.
SPECIFIC_RATIO = 10.0
# A gene starts inside a column (w = 1) when its |loading| is at least this share of the column's
# largest; below it, w falls linearly to 0.  0.3 gave the best Jaccard against the true modules of
# the two seeds above (0.83-1.00 with 20 components, against 0.57-0.93 at 0.5).
SUPPORT_SHARE = 0.3


def varimax(L: np.ndarray, max_iter: int = 200, tol: float = 1e-7) -> np.ndarray:
    """Varimax rotation of a loading matrix L (p, k): the rotated loadings L R, R orthogonal (k, k).

    Kaiser's criterion, maximised by the usual SVD iteration (as in R's ``stats::varimax`` without
    row normalisation)."""
    p, k = L.shape
    R = np.eye(k)
    d = 0.0
    for _ in range(max_iter):
        Lr = L @ R
        u, s, vt = np.linalg.svd(L.T @ (Lr ** 3 - Lr * ((Lr ** 2).sum(0) / p)))
        R = u @ vt
        d_old, d = d, s.sum()
        if d_old and d < d_old * (1 + tol):
            break
    return L @ R


def _standardised(X: np.ndarray, codes: np.ndarray, likelihood: str) -> np.ndarray:
    """Log-normalised counts (NB) or the values (Gaussian), centred within each study, unit variance per feature.

    Centring within studies keeps differences of study means (batch offsets) out of the components."""
    Y = np.asarray(X, dtype=np.float64)
    if likelihood == "nb":
        lib = np.maximum(Y.sum(1, keepdims=True), 1.0)
        Y = np.log1p(Y / lib * np.median(lib))
    Y = Y.copy()
    for m in np.unique(codes):
        Y[codes == m] -= Y[codes == m].mean(0)
    sd = Y.std(0)
    return Y / np.where(sd > 0, sd, 1.0)


def varimax_masks(X: np.ndarray, codes: np.ndarray, n_shared: int, n_specific: list[int], likelihood: str,
                  random_state: int = 0) -> np.ndarray:
    """Starting W (G, K_S + Σ K_m) in the z~ layout: each column a varimax component's |loadings|.

    X (N, G) values or counts; codes (N,) study index in [0, M).  The K_S + Σ K_m leading principal
    components (at most N − M and G) of the study-centred data are varimax-rotated.  A component whose
    scores vary in one study at least ``SPECIFIC_RATIO`` times as much as in the median other study
    goes to that study's block (most specific first, while it has room); the others fill the shared
    block in order of variance; components left over fill the columns still empty, and a column that
    none fills starts at 1 (Appendix C.2.2).  Column entries: min(1, |loading| / (SUPPORT_SHARE ·
    the column's largest |loading|)).
    """
    N, G = X.shape
    M = len(n_specific)
    K_total = n_shared + sum(n_specific)
    Y = _standardised(X, codes, likelihood)
    k = int(min(K_total, N - M, G))
    W0 = np.ones((G, K_total))
    if k < 1:
        return W0
    # randomized_svd takes seeds below 2**32; a model's seed (a restart's too) may be any integer
    _, s, vt = randomized_svd(Y, k, random_state=int(random_state) % 2**32)
    L = varimax(vt.T * s)
    scores = Y @ np.linalg.pinv(L).T                          # (N, k)
    var = np.stack([scores[codes == m].var(0) if (codes == m).sum() > 1 else np.full(k, np.nan)
                    for m in range(M)])                        # (M, k)
    top = np.nanargmax(var, axis=0)
    others = np.array([np.nanmedian(np.delete(var[:, c], top[c])) if M > 1 else np.nan for c in range(k)])
    ratio = var[top, np.arange(k)] / np.maximum(others, 1e-12)
    order = np.argsort(-(L ** 2).sum(0))                       # by variance
    starts = np.cumsum([n_shared] + list(n_specific))[:-1]
    free = {m: list(range(starts[m], starts[m] + n_specific[m])) for m in range(M)}
    shared_free = list(range(n_shared))
    placed, assign = set(), {}
    for c in sorted(np.flatnonzero(ratio >= SPECIFIC_RATIO), key=lambda c: -ratio[c]):
        if free[top[c]]:
            assign[free[top[c]].pop(0)] = c
            placed.add(c)
    for c in order:
        if c not in placed and ratio[c] < SPECIFIC_RATIO and shared_free:
            assign[shared_free.pop(0)] = c
            placed.add(c)
    rest = [c for c in order if c not in placed]
    for col in shared_free + [col for m in range(M) for col in free[m]]:
        if rest:
            assign[col] = rest.pop(0)
    for col, c in assign.items():
        a = np.abs(L[:, c])
        W0[:, col] = np.minimum(1.0, a / max(SUPPORT_SHARE * a.max(), 1e-12))
    return W0
