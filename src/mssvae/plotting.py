"""Figures: the masks (paper Fig. 2(b)/(c)), true vs estimated masks, training curves, and
replicate box plots (Fig. 2(a)).

Every function builds its own :class:`matplotlib.figure.Figure` (or draws on a given ``ax``) and
returns the Figure; nothing here calls ``plt.show``, so it works with the non-interactive Agg
backend (scripts, servers, tests).  Save with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment

from .metrics import jaccard_matrix, support

__all__ = [
    "REPLICATE_METRICS",
    "match_columns",
    "plot_history",
    "plot_masks",
    "plot_masks_comparison",
    "plot_replicates",
]

# The seven scores of Fig. 2(a), in the paper's order.
REPLICATE_METRICS = (
    "shared_consensus",
    "group_consensus",
    "shared_relevance",
    "shared_recovery",
    "group_relevance",
    "group_recovery",
    "dci",
)
_METRIC_LABELS = {
    "shared_consensus": "Shared\nconsensus",
    "group_consensus": "Group\nconsensus",
    "shared_relevance": "Shared\nrelevance",
    "shared_recovery": "Shared\nrecovery",
    "group_relevance": "Group\nrelevance",
    "group_recovery": "Group\nrecovery",
    "dci": "Disentangle-\nment (DCI)",
}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _new_figure(figsize) -> Figure:
    # A bare Figure (not pyplot) is never registered with a GUI manager: no leaks, no backend needs.
    return Figure(figsize=figsize, layout="constrained")


def _as_matrix(W, name: str) -> np.ndarray:
    try:
        arr = np.asarray(W, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a numeric (n_features, n_factors) array") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-d (n_features, n_factors); got shape {arr.shape}")
    return arr


def _blocks(W_shared, W_specific) -> list[tuple[str, np.ndarray]]:
    """[("shared", W^(S)), (study, W^(m)), ...] with shape checks; a sequence of W^(m) is labelled
    study1, study2, ...; W_shared=None means no shared block."""
    blocks = []
    if W_shared is not None:
        blocks.append(("shared", _as_matrix(W_shared, "W_shared")))
    if W_specific is None:
        W_specific = {}
    if isinstance(W_specific, Mapping):
        items = [(str(k), v) for k, v in W_specific.items()]
    elif isinstance(W_specific, Sequence) or isinstance(W_specific, np.ndarray):
        items = [(f"study{m + 1}", v) for m, v in enumerate(W_specific)]
    else:
        raise TypeError("`W_specific` must be a dict {study: (n_features, K_m) array} or a list of arrays")
    blocks += [(lab, _as_matrix(v, f"W_specific[{lab!r}]")) for lab, v in items]
    if not blocks:
        raise ValueError("nothing to plot: no shared and no study-specific matrix given")
    rows = {b.shape[0] for _, b in blocks}
    if len(rows) != 1:
        raise ValueError(f"all matrices must have the same number of features (rows); got {sorted(rows)}")
    return blocks


def match_columns(S_true: np.ndarray, S_est: np.ndarray) -> np.ndarray:
    """Order of the estimated columns that lines them up with the true ones.

    Hungarian matching (:func:`scipy.optimize.linear_sum_assignment`) on the Jaccard indices of
    the supports (:func:`mssvae.metrics.jaccard_matrix`).  Estimated columns matched to a true
    column come first, in the order of their true column; the unmatched ones follow, ordered by
    their first supported feature (empty columns last).

    Parameters
    ----------
    S_true : bool array (G, K_true)
    S_est : bool array (G, K_est)

    Returns
    -------
    ndarray of int, a permutation of ``range(K_est)``
    """
    S_true = np.asarray(S_true, dtype=bool)
    S_est = np.asarray(S_est, dtype=bool)
    k_est = S_est.shape[1]
    if k_est == 0:
        return np.zeros(0, dtype=int)
    matched = []
    if S_true.shape[1] > 0:
        J = jaccard_matrix(S_true, S_est)
        rows, cols = linear_sum_assignment(-J)
        matched = [int(c) for r, c in sorted(zip(rows, cols)) if J[r, c] > 0]
    rest = [c for c in range(k_est) if c not in set(matched)]
    G = S_est.shape[0]
    first = [int(np.argmax(S_est[:, c])) if S_est[:, c].any() else G for c in rest]
    rest = [c for _, c in sorted(zip(first, rest))]
    return np.asarray(matched + rest, dtype=int)


# ----------------------------------------------------------------------------------------------
# masks
# ----------------------------------------------------------------------------------------------


def plot_masks(W_shared, W_specific, threshold: float = 0.5, drop_empty: bool = True, title: str | None = None,
               ax=None, feature_names=None, cmap: str = "Blues", colorbar: bool = True, vmax: float | None = None,
               column_order: Mapping[str, Sequence[int]] | None = None):
    """Heatmap of |W| in the layout of the paper's Fig. 2(b)/(c).

    Features are rows (top to bottom); the columns are ``[W^(S) | W^(1) | W^(2) | ...]``, each block
    labelled underneath ("shared (K)", "<study> (K)") and separated by vertical lines.

    Parameters
    ----------
    W_shared : array (G, K_S) or None
    W_specific : dict {study: array (G, K_m)} (or a list, labelled study1, study2, ...)
    threshold : float
        Support rule |W| > threshold (0.5 everywhere in the package).
    drop_empty : bool
        Remove the columns without any |W| > threshold entry (as in Fig. 2(c)).
    title : str, optional
    ax : matplotlib Axes, optional
        Draw there instead of on a new figure.
    feature_names : sequence of str, optional
        Row labels (shown when there are at most 60 features).
    cmap : str
        Colour map of |W|.
    colorbar : bool
        Add a colour bar (one extra axes).
    vmax : float, optional
        Top of the colour scale (default: the largest |W| shown).
    column_order : dict {block label: column indices}, optional
        Order of the columns within a block ("shared" or a study label), applied before empty
        columns are dropped.

    Returns
    -------
    matplotlib.figure.Figure
    """
    blocks = _blocks(W_shared, W_specific)
    threshold = float(threshold)
    kept, names = [], []
    for lab, W in blocks:
        order = np.arange(W.shape[1])
        if column_order is not None and lab in column_order:
            order = np.asarray(column_order[lab], dtype=int)
        W = np.abs(W[:, order])
        if drop_empty:
            W = W[:, (W > threshold).any(axis=0)]
        kept.append(W)
        names.append(lab)
    M = np.concatenate(kept, axis=1)
    G = M.shape[0]

    if ax is None:
        fig = _new_figure((max(4.0, 1.2 + 0.22 * M.shape[1] + (1.0 if colorbar else 0.0)), 5.0))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    top = vmax if vmax is not None else (float(M.max()) if M.size else 1.0)
    if M.shape[1] == 0:
        ax.set_xlim(-0.5, 0.5)
        ax.set_ylim(G - 0.5, -0.5)
        ax.text(0.5, 0.5, f"no column with |W| > {threshold:g}", ha="center", va="center", transform=ax.transAxes)
        im = None
    else:
        im = ax.imshow(M, aspect="auto", cmap=cmap, vmin=0.0, vmax=max(top, 1e-12), interpolation="nearest")

    widths = [W.shape[1] for W in kept]
    edges = np.concatenate([[0], np.cumsum(widths)])
    for e in edges[1:-1]:
        ax.axvline(e - 0.5, color="black", linewidth=1.2)
    ticks, labels, empty = [], [], []
    for lab, lo, hi in zip(names, edges[:-1], edges[1:]):
        if hi > lo:
            ticks.append((lo + hi - 1) / 2.0)
            labels.append(f"{lab}\n({hi - lo})")
        else:
            empty.append(lab)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=8)
    ax.tick_params(axis="x", length=0)
    ax.set_ylabel("feature")
    if feature_names is not None and len(feature_names) == G and G <= 60:
        ax.set_yticks(np.arange(G))
        ax.set_yticklabels([str(f) for f in feature_names], fontsize=6)
    full_title = title if title is not None else "|W|"
    if empty:
        full_title += f"\n(no active column: {', '.join(empty)})"
    ax.set_title(full_title, fontsize=10)
    if colorbar and im is not None:
        fig.colorbar(im, ax=ax, label="|W|", shrink=0.8)
    return fig


def plot_masks_comparison(true_shared, true_specific, est_shared, est_specific, threshold: float = 0.5,
                          drop_empty: bool = True, feature_names=None, titles=("True W", "Estimated W")):
    """True and estimated masks side by side (Fig. 2(b) next to Fig. 2(c)).

    The estimated columns of each block are reordered to line up with the true ones
    (:func:`match_columns`: Hungarian matching on the Jaccard indices of the supports), so a
    good estimate shows the same picture as the truth.  Study blocks are paired by label; when
    the labels differ but the numbers of studies agree they are paired in order.

    Returns
    -------
    matplotlib.figure.Figure with 4 axes: true, estimated, and their colour bars.
    """
    true_blocks = _blocks(true_shared, true_specific)
    est_blocks = _blocks(est_shared, est_specific)
    if true_blocks[0][1].shape[0] != est_blocks[0][1].shape[0]:
        raise ValueError(f"true and estimated masks have different numbers of features "
                         f"({true_blocks[0][1].shape[0]} vs {est_blocks[0][1].shape[0]})")
    true_map = dict(true_blocks)
    est_labels = [lab for lab, _ in est_blocks]
    if set(true_map) == set(est_labels):
        pairs = {lab: lab for lab in est_labels}
    elif len(true_blocks) == len(est_blocks) and (true_shared is None) == (est_shared is None):
        pairs = {e: t for (t, _), (e, _) in zip(true_blocks, est_blocks)}
    else:
        raise ValueError(f"cannot pair the estimated blocks {est_labels} with the true ones {list(true_map)}")
    order = {lab: match_columns(support(true_map[pairs[lab]], threshold), support(W, threshold))
             for lab, W in est_blocks}
    if isinstance(est_specific, Mapping) and set(est_labels) == set(true_map):  # study blocks in the true order
        by_label = {str(k): v for k, v in est_specific.items()}
        est_specific = {lab: by_label[lab] for lab, _ in true_blocks[(0 if true_shared is None else 1):]}

    n_true = sum(W.shape[1] for _, W in true_blocks)
    n_est = sum(W.shape[1] for _, W in est_blocks)
    fig = _new_figure((max(8.0, 3.0 + 0.2 * (n_true + n_est)), 5.0))
    ax_true, ax_est = fig.subplots(1, 2, sharey=True, width_ratios=[max(n_true, 1), max(n_est, 1)])
    plot_masks(true_shared, true_specific, threshold=threshold, drop_empty=drop_empty, title=titles[0],
               ax=ax_true, feature_names=feature_names)
    plot_masks(est_shared, est_specific, threshold=threshold, drop_empty=drop_empty, title=titles[1],
               ax=ax_est, feature_names=feature_names, column_order=order)
    ax_est.set_ylabel("")
    return fig


# ----------------------------------------------------------------------------------------------
# training curves
# ----------------------------------------------------------------------------------------------


def plot_history(history, title: str | None = None):
    """Training curves from ``MSSVAE.history_`` (or the ``uns["mssvae"]["history"]`` dict).

    Six panels: the loss; the log-likelihood; the KL terms (shared, specific, library); the
    log-priors (masks, noise); the numbers of active shared/specific columns (any |W| > 0.5);
    and λ0.  Changes of the λ0 annealing stage are marked by dashed vertical lines in every
    panel.  Terms not recorded (e.g. ``kl_library`` for a Gaussian fit, where it is 0) are skipped.

    Returns
    -------
    matplotlib.figure.Figure with 6 axes.
    """
    df = pd.DataFrame(history) if not isinstance(history, pd.DataFrame) else history
    if len(df) == 0:
        raise ValueError("`history` is empty: nothing to plot")
    epoch = df["epoch"].to_numpy() if "epoch" in df else np.arange(len(df))
    changes = []
    if "lambda0" in df:
        lam = df["lambda0"].to_numpy()
        changes = [epoch[i] for i in np.flatnonzero(np.diff(lam) != 0) + 1]

    panels = [
        ("loss", ["loss"], None),
        ("log-likelihood", ["log_lik"], None),
        ("KL", ["kl_shared", "kl_specific", "kl_library"], None),
        ("log-prior", ["log_prior_masks", "log_prior_noise"], None),
        ("active columns", ["active_shared", "active_specific"], None),
        ("λ0", ["lambda0"], None),
    ]
    fig = _new_figure((12.0, 6.5))
    axes = fig.subplots(2, 3, sharex=True).ravel()
    for ax, (name, cols, ylabel) in zip(axes, panels):
        drawn = 0
        for c in cols:
            if c not in df:
                continue
            y = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            if len(cols) > 1 and c in ("kl_library", "log_prior_noise") and np.allclose(y, 0):
                continue
            drawn += 1
            kw = {"drawstyle": "steps-post"} if c.startswith("active") or c == "lambda0" else {}
            label = "active_specific (all studies)" if c == "active_specific" else c
            ax.plot(epoch, y, label=label, linewidth=1.2, **kw)
        if drawn == 0:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif len(cols) > 1:
            ax.legend(fontsize=7)
        for e in changes:
            ax.axvline(e, color="grey", linestyle="--", linewidth=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel or name, fontsize=8)
    for ax in axes[3:]:
        ax.set_xlabel("epoch")
    if changes:
        axes[0].text(0.99, 0.98, "dashed: λ0 stage change", ha="right", va="top", fontsize=7, color="grey",
                     transform=axes[0].transAxes)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------
# replicates
# ----------------------------------------------------------------------------------------------


def plot_replicates(df, metrics: Sequence[str] = REPLICATE_METRICS, ax=None, title: str | None = None,
                    seed: int = 0):
    """Box plot of the scores over replicate runs, as in the paper's Fig. 2(a).

    Parameters
    ----------
    df : pandas.DataFrame
        One row per replicate with a column per metric (the output of
        :func:`mssvae.metrics.evaluate`, e.g. ``mssvae evaluate --output`` files concatenated).
    metrics : sequence of str
        Columns to show, left to right.  Missing values (e.g. a DCI not computed) are ignored.
    ax : matplotlib Axes, optional
    title : str, optional
    seed : int
        Seed of the horizontal jitter of the points.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("`metrics` is empty")
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ValueError(f"`df` lacks the metric column(s) {missing}; columns: {list(df.columns)}")
    data = [pd.to_numeric(df[m], errors="coerce").dropna().to_numpy(dtype=float) for m in metrics]
    if ax is None:
        fig = _new_figure((max(5.0, 1.1 * len(metrics) + 1.0), 4.0))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    positions = np.arange(1, len(metrics) + 1)
    shown = [(p, d) for p, d in zip(positions, data) if d.size]
    if shown:
        ax.boxplot([d for _, d in shown], positions=[p for p, _ in shown], widths=0.6, showfliers=False,
                   medianprops={"color": "black"})
    rng = np.random.default_rng(seed)
    for p, d in shown:
        ax.scatter(p + rng.uniform(-0.15, 0.15, d.size), d, s=10, alpha=0.6, color="tab:blue", zorder=3)
    ax.set_xticks(positions)
    ax.set_xticklabels([_METRIC_LABELS.get(m, m) for m in metrics], fontsize=8)
    ax.set_xlim(0.4, len(metrics) + 0.6)
    lo = min([0.0] + [float(d.min()) for _, d in shown])
    hi = max([1.0] + [float(d.max()) for _, d in shown])
    ax.set_ylim(lo - 0.03, hi + 0.03)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title if title is not None else f"{len(df)} replicate(s)", fontsize=10)
    return fig
