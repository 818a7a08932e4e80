"""Columns that are not separate factors, found after fitting, block by block.

Three rules, applied in this order (:func:`block_plan`).

1. Factors that are functions of one another: one nonlinear factor split over two columns.

On the §4.2 simulation a third of each module's genes respond to sin(3π/4 · z) rather than to z.
The fitted NB model often gives those genes a column of their own, whose factor is (nearly) a
function of the factor of the module's other column: the encoder learnt sin(c z) as a second latent
instead of the decoder learning the curve.  In a nonlinear factor model z and g(z) are one factor,
so such columns can be put back together.  ``MSSVAE(merge_dependent=...)`` does this after fitting
(by default); measured on the simulations: docs/design.md, "Counts (NB)", item 11.

The test of dependence is nonparametric and symmetric: the leave-one-out R² of predicting one
factor's posterior means from the k nearest samples in the other factor, the larger of the two
directions.  For independent factors it is below 0; for y = sin(3π/4 x) with x ~ N(0, 1) it is
0.9 at 40 samples (0.4–0.5 at 14).

2. Columns without two anchor genes (the paper's Assumption 1).  The model is identified when every
factor has at least two anchor features: features that depend on that factor alone.  A column
whose gene set (|W| > 0.5) has fewer than two genes outside the block's other gene sets is not a
factor the data can tell apart from the columns it overlaps: the fit has spread one factor over
several columns (a duplicate, or a mixture of two gene sets that have columns of their own).  Such
a column is reported as redundant, smallest first, recounting the anchors after each: its genes
are already in the block's other gene sets (all but at most one).  Folding it into the column it
overlaps most instead would add another factor's genes to that column; re-scored on saved fits,
dropping was as good or better (docs/design.md, "Counts (NB)", item 14).  Anchors are counted within the
block (a shared column against the other shared columns).  A column that shares no gene with
another (a single gene) is left alone.

3. Composites: a factor that is a function of two other factors jointly.  Where two modules share
genes (in the §4.2 simulation any two of a study's modules share 20-38), a fit can give the shared
genes a column of their own whose factor mixes the two modules' factors: neither alone predicts it
(R² 0.28-0.47 in the fits we read), the pair does (0.74-0.97), and its genes are in no other gene
set, so rules 1 and 2 keep it.  Its genes depend on both factors, so the smaller column is folded into both parents
(docs/design.md, "Counts (NB)", item 22).  The joint test is rule 1's in the plane of the two
parents, each scaled to unit variance.
"""

from __future__ import annotations

import numpy as np

MAX_SAMPLES = 2000


def dependence_r2(x: np.ndarray, y: np.ndarray, k: int = 3) -> float:
    """Leave-one-out R² of y predicted by the mean y of the k nearest other samples in x: (n,), (n,).

    Above MAX_SAMPLES samples, a fixed random subset of that size is used."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) > MAX_SAMPLES:   # the distance matrix is n × n; a fixed subsample keeps it small
        keep = np.random.default_rng(0).choice(len(x), MAX_SAMPLES, replace=False)
        x, y = x[keep], y[keep]
    n = len(x)
    if n <= k or np.ptp(y) == 0 or np.ptp(x) == 0:   # a constant x predicts nothing
        return -np.inf
    # In one dimension a point's k nearest neighbours lie within k places of it in sorted order,
    # so n · 2k distances replace the n × n matrix (about 280× faster at n = 1463:
    # benchmarks/probes/merge_null.py).  Exact for distinct values; with ties at the k-th
    # distance it may take another of the equally near points.
    order = np.argsort(x, kind="stable")
    xs = x[order]
    window = np.arange(n)[:, None] + np.r_[-k:0, 1:k + 1][None, :]
    inside = (window >= 0) & (window < n)
    window = np.clip(window, 0, n - 1)
    dist = np.where(inside, np.abs(xs[window] - xs[:, None]), np.inf)
    pick = np.lexsort((order[window], dist), axis=-1)[:, :k]
    neighbours = np.empty((n, k), dtype=np.int64)
    neighbours[order] = order[np.take_along_axis(window, pick, axis=1)]
    residual = y - y[neighbours].mean(1)
    return float(1.0 - (residual**2).sum() / ((y - y.mean()) ** 2).sum())


def joint_dependence_r2(X: np.ndarray, y: np.ndarray, k: int = 3) -> float:
    """Leave-one-out R² of y (n,) predicted by the mean y of the k nearest other samples in X (n, d),
    each column of X scaled to unit variance; :func:`dependence_r2` in d dimensions.

    Above MAX_SAMPLES samples, a fixed random subset of that size is used.  Ties at the k-th
    distance are broken arbitrarily."""
    y = np.asarray(y, float)
    X = np.asarray(X, float).reshape(len(y), -1)
    if len(y) > MAX_SAMPLES:
        keep = np.random.default_rng(0).choice(len(y), MAX_SAMPLES, replace=False)
        X, y = X[keep], y[keep]
    sd = X.std(0)
    if len(y) <= k or np.ptp(y) == 0 or np.any(sd == 0):
        return -np.inf
    X = X / sd
    sq = (X**2).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * X @ X.T
    np.fill_diagonal(dist, np.inf)
    neighbours = np.argpartition(dist, k - 1, axis=1)[:, :k]
    residual = y - y[neighbours].mean(1)
    return float(1.0 - (residual**2).sum() / ((y - y.mean()) ** 2).sum())


# A composite holds the genes two modules share, a small part of each (2-12 % of the smaller parent in
# the fits of docs/design.md item 22).  A column with as many genes as its would-be parents is more
# likely a true factor that two rotated columns happen to predict, and is left alone.
MAX_COMPOSITE_SHARE = 0.5


def composite_columns(Z: np.ndarray, S: np.ndarray, columns, threshold: float = 0.5, k: int = 3,
                      candidates: int = 6) -> list[tuple[int, int, int]]:
    """Columns of one block whose factor is a function of two other factors of the block jointly.

    Z (n, K): posterior means; S (G, K) bool: supports; ``columns``: the active ones (after merging
    pairs).  Smallest gene set first, each column c is tested against every pair of the
    ``candidates`` remaining columns most correlated with it whose gene sets are more than
    1 / MAX_COMPOSITE_SHARE times as large as c's;
    the pair (a, b) with the largest :func:`joint_dependence_r2` of c from (a, b), if ≥
    ``threshold``, makes c their composite, and c is not a candidate parent afterwards.  Returns
    (c, a, b) triples in that order."""
    sizes = S.sum(0)
    remaining = sorted((int(c) for c in columns), key=lambda c: (sizes[c], c))
    out = []
    for c in list(remaining):
        parents = [p for p in remaining if p != c and MAX_COMPOSITE_SHARE * sizes[p] > sizes[c]]
        if len(parents) < 2 or np.ptp(Z[:, c]) == 0:   # a constant factor is a function of nothing
            continue
        corr = [abs(np.corrcoef(Z[:, c], Z[:, p])[0, 1]) if np.ptp(Z[:, p]) > 0 else 0.0 for p in parents]
        top = [parents[i] for i in np.argsort(corr)[::-1][:candidates]]
        best = max((joint_dependence_r2(Z[:, [a, b]], Z[:, c], k), a, b)
                   for i, a in enumerate(top) for b in top[i + 1:])
        if best[0] >= threshold:
            out.append((c, *sorted(best[1:])))
            remaining.remove(c)
    return out


def fold_composites(W: np.ndarray, composites, *others: np.ndarray):
    """Copies of W (G, K) and of each array in ``others`` (the same shape, e.g. inclusion
    probabilities) with each composite (c, a, b) folded into its parents: where |W_c| exceeds a
    parent's |W|, the parent takes c's entry (so c's genes join both gene sets), then c becomes 0."""
    W = np.array(W, dtype=float, copy=True)
    others = [np.array(M, dtype=float, copy=True) for M in others]
    for c, *parents in composites:
        for p in parents:
            take = np.abs(W[:, c]) > np.abs(W[:, p])
            for M in others:
                M[take, p] = M[take, c]
            W[take, p] = W[take, c]
        for M in [W, *others]:
            M[:, c] = 0.0
    return (W, *others) if others else W


def dependent_groups(Z: np.ndarray, columns, threshold: float = 0.5, k: int = 3) -> list[list[int]]:
    """Groups of ``columns`` of Z (n, K) whose factors depend on one another (connected components of
    the pairs with max(R²(a→b), R²(b→a)) ≥ threshold).  Singletons are included."""
    columns = [int(c) for c in columns]
    parent = {c: c for c in columns}

    def root(c):
        while parent[c] != c:
            c = parent[c]
        return c

    for i, a in enumerate(columns):
        for b in columns[i + 1:]:
            r2 = max(dependence_r2(Z[:, a], Z[:, b], k), dependence_r2(Z[:, b], Z[:, a], k))
            if r2 >= threshold:
                parent[root(b)] = root(a)
    groups: dict[int, list[int]] = {}
    for c in columns:
        groups.setdefault(root(c), []).append(c)
    return list(groups.values())


def anchor_counts(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For supports A (G, K) bool: each column's anchor genes (in no other column) and the (K, K)
    counts of genes shared between columns (0 on the diagonal)."""
    anchors = (A & (A.sum(1) == 1)[:, None]).sum(0)
    shared = A.T.astype(int) @ A.astype(int)
    np.fill_diagonal(shared, 0)
    return anchors, shared


def redundant_columns(S: np.ndarray, min_anchors: int = 2, first=None) -> list[int]:
    """Columns of one block's supports S (G, K) bool that lack ``min_anchors`` anchor genes.

    Repeatedly, the smallest active column with fewer than ``min_anchors`` anchor genes (genes in
    no other active column) that shares a gene with another active column is set aside, and the
    anchors of the rest are counted again.  Returns the columns set aside, in that order.
    ``first(lacking, A, shared)`` (for probes of other orders): which of the lacking columns (indices
    into the active supports A, with the (K, K) shared-gene counts) goes first; default the smallest.
    """
    if first is None:
        def first(lacking, A, shared):
            return min(lacking, key=lambda i: (A[:, i].sum(), i))
    S = np.array(S, dtype=bool, copy=True)
    out: list[int] = []
    while True:
        active = np.flatnonzero(S.any(0))
        if len(active) < 2:
            return out
        A = S[:, active]
        anchors, shared = anchor_counts(A)
        shares = shared.max(1) > 0
        lacking = [i for i in range(len(active)) if anchors[i] < min_anchors and shares[i]]
        if not lacking:
            return out
        out.append(int(active[first(lacking, A, shared)]))
        S[:, out[-1]] = False


def merge_plan(W: np.ndarray, groups: list[list[int]], threshold: float = 0.5) -> list:
    """For each group of columns of W (G, K) to merge, a tuple (kept column, group, (G,) column of
    the group with the largest |W| in each row).  The kept column is the one with the largest support."""
    plan = []
    for group in groups:
        if len(group) < 2:
            continue
        sizes = (np.abs(W[:, group]) > threshold).sum(0)
        keep = group[int(np.argmax(sizes))]
        plan.append((keep, list(group), np.asarray(group)[np.abs(W[:, group]).argmax(1)]))
    return plan


def apply_merge_plan(M: np.ndarray, plan) -> np.ndarray:
    """A copy of M (G, K) (a mask, or its inclusion probabilities) with each planned group put into
    its kept column, row by row from the group's column of largest |W|; the other columns become 0."""
    M = np.array(M, dtype=float, copy=True)
    rows = np.arange(M.shape[0])
    for keep, group, source in plan:
        merged = M[rows, source]
        M[:, group] = 0.0
        M[:, keep] = merged
    return M


def merge_columns(W: np.ndarray, groups: list[list[int]], threshold: float = 0.5) -> np.ndarray:
    """W (G, K) with each group's columns merged into the one with the largest support.

    A merged entry is the group's entry of largest |W| (sign kept), so the merged gene set is the
    union of the group's gene sets; the other columns of the group become zero.
    """
    return apply_merge_plan(W, merge_plan(np.asarray(W, dtype=float), groups, threshold))


def block_groups(Z: np.ndarray, codes: np.ndarray, W: np.ndarray, n_shared: int, n_specific, threshold: float = 0.5,
                 k: int = 3) -> list[list[int]]:
    """Groups (global column indices, of 2 or more) of dependent active factors, block by block.

    Z (N, K) and W (G, K) in the layout of ``MSSVAE.transform`` (shared columns, then each study's);
    ``codes`` (N,): each sample's study index into ``n_specific``.  Shared factors are compared over
    all samples, a study's factors over that study's samples.
    """
    active = (np.abs(W) > 0.5).any(0)
    out = []
    for start, width, m in _blocks(n_shared, n_specific):
        rows = np.ones(len(codes), bool) if m is None else codes == m
        columns = [c for c in range(start, start + width) if active[c]]
        if len(columns) > 1 and rows.sum() > k:
            out += [g for g in dependent_groups(Z[rows], columns, threshold, k) if len(g) > 1]
    return out


def block_composites(Z: np.ndarray, codes: np.ndarray, W: np.ndarray, n_shared: int, n_specific,
                     threshold: float = 0.5, k: int = 3) -> list[tuple[int, int, int]]:
    """:func:`composite_columns` block by block, in global column indices; Z, codes and W as in
    :func:`block_groups`.  Pass W after merging dependent pairs."""
    S = np.abs(W) > 0.5
    out = []
    for start, width, m in _blocks(n_shared, n_specific):
        rows = np.ones(len(codes), bool) if m is None else codes == m
        columns = [c for c in range(start, start + width) if S[:, c].any()]
        if len(columns) > 2 and rows.sum() > k:
            out += composite_columns(Z[rows], S, columns, threshold, k)
    return out


def block_redundant(W: np.ndarray, n_shared: int, n_specific, min_anchors: int = 2) -> list[int]:
    """Global indices of the columns of W (G, K) (layout of ``MSSVAE.transform``) that
    :func:`redundant_columns` sets aside, block by block.  Pass W after merging dependent factors."""
    out = []
    for start, width, _ in _blocks(n_shared, n_specific):
        out += [start + c for c in redundant_columns(np.abs(W[:, start:start + width]) > 0.5, min_anchors)]
    return out


def block_plan(W: np.ndarray, Z, codes: np.ndarray, n_shared: int, n_specific, threshold: float | None = 0.5,
               min_anchors: int = 2, k: int = 3):
    """What the reported masks make of a fitted W (G, K), in the order applied: the groups of dependent
    factors merged (:func:`block_groups`), then the columns set aside for lack of ``min_anchors``
    anchor genes (:func:`block_redundant`), then the composites folded into their parents
    (:func:`block_composites`).  ``threshold=None`` merges and folds nothing (Z is then not read);
    ``min_anchors=0`` sets nothing aside.  Returns (groups, redundant, composites)."""
    groups = [] if threshold is None else block_groups(Z, codes, W, n_shared, n_specific, threshold, k)
    merged = merge_columns(W, groups)
    redundant = block_redundant(merged, n_shared, n_specific, min_anchors) if min_anchors else []
    merged[:, redundant] = 0.0
    composites = [] if threshold is None else block_composites(Z, codes, merged, n_shared, n_specific, threshold, k)
    return groups, redundant, composites


def _blocks(n_shared: int, n_specific):
    """(first column, width, study index or None for the shared block) of each block."""
    yield 0, n_shared, None
    start = n_shared
    for m, k_m in enumerate(n_specific):
        yield start, k_m, m
        start += k_m


def merge_dependent_factors(model, X, study, threshold: float = 0.5, k: int = 3, min_anchors: int = 0):
    """Merge, block by block, the active columns of a fitted MSSVAE whose factors depend on one another.

    Parameters
    ----------
    model : fitted MSSVAE;  X (N, G), study (N,): the data to read the factors on (the training data).
    threshold : dependence R² above which two factors count as one.
    min_anchors : then zero the columns with fewer anchor genes than this (0: none); :func:`redundant_columns`.
    Composites are then folded into their parents (:func:`block_composites`), as ``MSSVAE`` reports them.

    Returns
    -------
    W_shared : (G, K_S) merged copy;  W_specific : dict {study: (G, K_m)};  groups : dict
        {block: list of column groups (indices within the block) that were merged}.
    Shared factors are compared over all samples, a study's factors over that study's samples.
    """
    return merge_blocks(model.W_shared_, model.W_specific_, model.transform(X, study), np.asarray(study),
                        threshold, k, min_anchors)


def merge_blocks(W_shared, W_specific: dict, Z: np.ndarray, study: np.ndarray, threshold: float = 0.5,
                 k: int = 3, min_anchors: int = 0):
    """:func:`merge_dependent_factors` from arrays: masks, factors Z (N, K_S + Σ K_m) in the layout of
    ``MSSVAE.transform`` (studies in the order of ``W_specific``), and the study label of each row."""
    labels = list(W_specific)
    K_S = W_shared.shape[1]
    n_specific = [W_specific[lab].shape[1] for lab in labels]
    W = np.concatenate([W_shared] + [W_specific[lab] for lab in labels], axis=1)
    codes = np.full(len(study), -1)
    for m, lab in enumerate(labels):
        codes[np.asarray(study) == lab] = m
    groups, redundant, composites = block_plan(W, Z, codes, K_S, n_specific, threshold, min_anchors, k)
    merged = merge_columns(W, groups)
    merged[:, redundant] = 0.0
    merged = fold_composites(merged, composites)
    starts = np.cumsum([K_S] + n_specific)
    by_block = {"shared": [list(g) for g in groups if g[0] < K_S]}
    merged_specific = {}
    for m, lab in enumerate(labels):
        merged_specific[lab] = merged[:, starts[m]:starts[m + 1]]
        by_block[lab] = [[int(c - starts[m]) for c in g] for g in groups if starts[m] <= g[0] < starts[m + 1]]
    return merged[:, :K_S], merged_specific, by_block
