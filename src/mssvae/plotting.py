"""Figures: the masks (paper Fig. 2(b)/(c)), true vs estimated masks, training curves, replicate
box plots (Fig. 2(a)), and for reading a fit: variance explained, factor scores by study, top genes
per factor and the enriched-term dot plot (Figs. 4-5).

Every function returns a :class:`matplotlib.figure.Figure`.  The single-axes plots
(:func:`plot_masks`, :func:`plot_replicates`, :func:`plot_enrichment_dots`) take ``ax=``: given a
matplotlib Axes they draw there and return its figure (``ax.figure``), as scanpy's plots do;
without one they build a new figure.  The plots with several panels (:func:`plot_masks_comparison`,
:func:`plot_history`, :func:`plot_variance_explained`, :func:`plot_factor_scores`,
:func:`plot_top_genes`) always build their own figure and take no ``ax``.  Nothing here calls
``plt.show``, so it works with the non-interactive Agg backend (scripts, servers, tests).  Save
with ``fig.savefig(path)``.
"""

from __future__ import annotations

import textwrap
import unicodedata
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment

from .metrics import jaccard_matrix, support

__all__ = [
    "REPLICATE_METRICS",
    "match_columns",
    "plot_enrichment_dots",
    "plot_factor_scores",
    "plot_history",
    "plot_masks",
    "plot_masks_comparison",
    "plot_replicates",
    "plot_top_genes",
    "plot_variance_explained",
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


def _names(values, n: int, arg: str, what: str) -> list[str]:
    """``values`` as n strings, or a ValueError naming ``arg``."""
    names = [str(v) for v in values]
    if len(names) != n:
        raise ValueError(f"`{arg}` has {len(names)} names for {n} {what}")
    return names


def _study_colours(studies: Sequence[str]) -> dict:
    """One colour per study, distinct for up to 20 studies.

    Up to 10 studies: the property cycle's ``C0``..``C9`` (matplotlib's tab10 by default), as
    before.  11 to 20: tab20, its ten tab10 hues first and then their ten light versions, so the
    first ten studies keep the tab10 colours.  More than 20: evenly spaced along ``turbo``
    (distinct, but neighbours get harder to tell apart).
    """
    n = len(studies)
    if n <= 10:
        colours = [f"C{i}" for i in range(n)]
    elif n <= 20:
        tab20 = colormaps["tab20"].colors
        colours = [tab20[i] for i in [*range(0, 20, 2), *range(1, 20, 2)][:n]]
    else:
        colours = [tuple(c) for c in colormaps["turbo"](np.linspace(0.0, 1.0, n))]
    return dict(zip(studies, colours))


def _text_width(text: str, fontsize: float) -> float:
    """Rough width in inches of one line of ``text``.

    An estimate from the characters, not a measurement: the layout is decided before anything is
    drawn (and a figure without a canvas has no renderer).  DejaVu Sans averages about 0.55 em per
    character; capitals and digits run wider and CJK glyphs take a full em, so this errs wide.
    """
    ems = 0.0
    for ch in str(text):
        if unicodedata.east_asian_width(ch) in ("W", "F"):
            ems += 1.0
        elif ch.isupper() or ch.isdigit():
            ems += 0.7
        else:
            ems += 0.58
    return ems * fontsize / 72.0


def _line_height(fontsize: float) -> float:
    """Height in inches of one line of text (its box; the glyphs' full height plus descent)."""
    return 1.15 * fontsize / 72.0


def _cut_middle(text: str, width: int, tail: int) -> str:
    return text if len(text) <= width else text[: width - 1 - tail] + "…" + text[len(text) - tail:]


def _distinct_labels(labels, width: int) -> list[str]:
    """``labels`` cut to at most ``width`` characters, still telling them apart.

    Study names often differ only at the end ("breast/Batch 1", "breast/Batch 2") or only at the
    start ("NSCLC/Batch 1", "breast/Batch 1"), so cutting the end (:func:`_shorten`) can give many
    studies the same label.  Cut in the middle instead, keeping both ends; if labels still
    coincide, keep more of the end; failing that, number them ("3: breas…").
    """
    labels = [str(s) for s in labels]
    width = max(int(width), 4)
    n_distinct = len(set(labels))
    keep = width - 1
    for tail in [keep // 2, *range(keep // 2 + 1, keep), *range(keep // 2 - 1, 0, -1)]:
        out = [_cut_middle(s, width, tail) for s in labels]
        if len(set(out)) == n_distinct:
            return out
    digits = len(str(len(labels)))
    rest = max(width - digits - 2, 4)
    return [s if len(s) <= width else f"{i + 1}: {_cut_middle(s, rest, (rest - 1) // 2)}"
            for i, s in enumerate(labels)]


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines at most ``width_in`` inches wide (its own line breaks kept), so a
    long title wraps instead of running off both edges of the figure."""
    chars = max(10, int(width_in * 72.0 / (0.62 * fontsize)))  # a little wider than the average character
    lines = []
    for line in str(text).split("\n"):
        lines += textwrap.wrap(line, chars, break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _listing(head: str, names: Sequence[str], width_in: float, fontsize: float, max_lines: int = 3) -> str:
    """"(head: a, b, c)" wrapped to ``width_in``; when it would take more than ``max_lines`` lines,
    only the first names and how many more ("..., and 12 more")."""
    for n in range(len(names), 0, -1):
        more = f", and {len(names) - n} more" if n < len(names) else ""
        text = _wrap(f"({head}: {', '.join(names[:n])}{more})", width_in, fontsize)
        if text.count("\n") < max_lines:
            return text
    return _wrap(f"({head}: {len(names)})", width_in, fontsize)


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
    labelled underneath ("shared (K)", "<study> (K)") and separated by vertical lines.  When the
    labels would not fit side by side (many studies, narrow blocks, long names) they stand upright,
    in a smaller font if the columns are very narrow, and a new figure grows taller to hold them;
    names longer than 30 characters are cut in the middle, so similar names stay apart.  A long
    title, and the note listing the studies without an active column, are wrapped to the figure.

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
        Draw there instead of on a new figure (the returned figure is then ``ax.figure``).
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
    G, n_cols = M.shape
    widths = [W.shape[1] for W in kept]
    edges = np.concatenate([[0], np.cumsum(widths)])
    short = dict(zip(names, _distinct_labels(names, 30)))
    shown = [(short[lab], lo, hi) for lab, lo, hi in zip(names, edges[:-1], edges[1:]) if hi > lo]
    empty = [short[lab] for lab, lo, hi in zip(names, edges[:-1], edges[1:]) if hi == lo]
    ticks = [(lo + hi - 1) / 2.0 for _, lo, hi in shown]

    # The layout is chosen before drawing, from the room per column (inches): the axes' width
    # less the colour bar, estimated from the figure size we pick or from the given axes.
    if ax is None:
        fig_width = max(4.0, 1.2 + 0.22 * n_cols + (1.0 if colorbar else 0.0))
        left = 0.55   # feature axis label and tick labels; wider with feature names
        if feature_names is not None and len(feature_names) == G and 0 < G <= 60:
            left += max(_text_width(str(f), 6) for f in feature_names)
        axes_in = max(fig_width - left - (0.95 if colorbar else 0.05), 0.5)
        centre = left + axes_in / 2.0
    else:
        fig = ax.figure
        # An Axes in a SubFigure: the sizes are the root figure's (a SubFigure has no figsize), and
        # get_position is in the root figure's coordinates too.
        root = fig
        while not hasattr(root, "get_figwidth") and getattr(root, "figure", root) is not root:
            root = root.figure
        fig_width = root.get_figwidth()
        pos = ax.get_position()
        axes_in = pos.width * fig_width * (0.85 if colorbar else 1.0)
        centre = pos.x0 * fig_width + axes_in / 2.0
    pitch = axes_in / max(n_cols, 1)
    gaps = np.diff(ticks) * pitch   # inches between neighbouring block labels' centres
    fontsize, rotation = 8.0, 0
    labels = [f"{lab}\n({hi - lo})" for lab, lo, hi in shown]
    half = [max(_text_width(line, fontsize) for line in text.split("\n")) / 2.0 for text in labels]
    if any(g < a + b + 0.06 for g, a, b in zip(gaps, half[:-1], half[1:])):
        # Side by side they would overlap (many or narrow blocks, long names): stand them upright on
        # one line, where each needs only a line's height, and shrink the font if even that is too much.
        labels = [f"{lab} ({hi - lo})" for lab, lo, hi in shown]
        rotation = 90
        fontsize = float(np.clip((gaps.min() - 0.03) / _line_height(1.0), 5.0, 8.0))
    extra = 0.0
    if rotation and labels:
        extra = max(0.0, max(_text_width(t, fontsize) for t in labels) - 2 * _line_height(8.0))

    if ax is None:
        fig = _new_figure((fig_width, 5.0 + extra))  # taller by what the upright labels take
        ax = fig.add_subplot()
    top = vmax if vmax is not None else (float(M.max()) if M.size else 1.0)
    if M.shape[1] == 0:
        ax.set_xlim(-0.5, 0.5)
        ax.set_ylim(G - 0.5, -0.5)
        ax.text(0.5, 0.5, f"no column with |W| > {threshold:g}", ha="center", va="center", transform=ax.transAxes)
        im = None
    else:
        im = ax.imshow(M, aspect="auto", cmap=cmap, vmin=0.0, vmax=max(top, 1e-12), interpolation="nearest")

    for e in edges[1:-1]:
        ax.axvline(e - 0.5, color="black", linewidth=1.2)
    ax.set_xticks(ticks)
    ax.set_xticklabels(labels, fontsize=fontsize, rotation=rotation)
    ax.tick_params(axis="x", length=0)
    ax.set_ylabel("feature")
    if feature_names is not None and len(feature_names) == G and G <= 60:
        ax.set_yticks(np.arange(G))
        ax.set_yticklabels([str(f) for f in feature_names], fontsize=6)
    # The title is centred over the axes: lines wider than twice the distance to the nearer edge of
    # the figure run off it, so wrap to that (a long list of empty studies is cut to "and N more").
    title_in = max(1.0, 2.0 * min(centre, fig_width - centre) - 0.2)
    full_title = _wrap(title if title is not None else "|W|", title_in, 10)
    if empty:
        full_title += "\n" + _listing("no active column", empty, title_in, 10)
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

    It makes its own figure with two panels, so it takes no ``ax``.

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
    # Block labels stood upright (many studies) hang below the axes: make room for them rather
    # than squeezing the heat maps.
    upright = [t for a in (ax_true, ax_est) for t in a.get_xticklabels() if t.get_rotation() and t.get_text()]
    if upright:
        longest = max(_text_width(t.get_text(), t.get_fontsize()) for t in upright)
        fig.set_figheight(5.0 + max(0.0, longest - 2 * _line_height(8.0)))
    return fig


# ----------------------------------------------------------------------------------------------
# training curves
# ----------------------------------------------------------------------------------------------


def plot_history(history, title: str | None = None):
    """Training curves from ``MSSVAE.history_`` (or the ``uns["mssvae"]["history"]`` dict).

    Six panels: the loss; the log-likelihood; the KL terms (shared, specific, library); the
    log-priors (masks, noise); the numbers of active shared/specific columns (any |W| > 0.5);
    and the penalties λ0 and λ1 (log scale; λ1 moves only with ``lambda1="empirical"``).  Changes of
    the λ0 annealing stage are marked by dashed vertical lines in every panel.  Terms not recorded
    (e.g. ``kl_library`` for a Gaussian fit, where it is 0) are skipped.

    It makes its own figure with these six panels, so it takes no ``ax``.

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
        ("penalties", ["lambda0", "lambda1"], "λ0, λ1"),
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
            label = {"active_specific": "active_specific (all studies)", "lambda0": "λ0 (spike)",
                     "lambda1": "λ1 (slab)"}.get(c, c)
            ax.plot(epoch, y, label=label, linewidth=1.2, **kw)
        if drawn == 0:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
        elif len(cols) > 1:
            ax.legend(fontsize=7)
        for e in changes:
            ax.axvline(e, color="grey", linestyle="--", linewidth=0.8)
        if name == "penalties" and drawn:
            ax.set_yscale("log")
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
        Draw there instead of on a new figure (the returned figure is then ``ax.figure``).
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



# ----------------------------------------------------------------------------------------------
# factors: variance explained, scores, top genes, enrichment dot plot
# ----------------------------------------------------------------------------------------------


def _no_data(fig: Figure, message: str, ax=None) -> Figure:
    ax = fig.add_subplot() if ax is None else ax
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_axis_off()
    return fig


def _shorten(text, width: int) -> str:
    text = str(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def _pick_factors(factors, factor_names: list[str], default: np.ndarray, max_factors: int | None):
    """Column indices to draw (from names or indices), capped at ``max_factors``; and how many were cut."""
    if factors is None:
        idx = [int(i) for i in default]
    else:
        lookup = {n: i for i, n in enumerate(factor_names)}
        idx = []
        for f in factors:
            if isinstance(f, (int, np.integer)) and not isinstance(f, bool):
                if not 0 <= f < len(factor_names):
                    raise ValueError(f"factor index {f} is out of range for {len(factor_names)} factors")
                idx.append(int(f))
            elif str(f) in lookup:
                idx.append(lookup[str(f)])
            else:
                raise ValueError(f"unknown factor {f!r}; factors: {factor_names[:10]}")
    cut = 0
    if max_factors is not None and len(idx) > max_factors:
        cut = len(idx) - max_factors
        idx = idx[:max_factors]
    return idx, cut


def _grid(fig: Figure, n: int, ncols: int):
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_axis_off()
    return axes[:n]


def _percent_label(fraction: float) -> str:
    """A fraction as a percentage with one decimal ("12.3"); never "-0.0" (a share just below 0
    that rounds to zero reads "0.0")."""
    text = f"{100.0 * fraction:.1f}"
    return "0.0" if text == "-0.0" else text


def plot_variance_explained(table, threshold: float = 0.01, annotate: bool = True, title: str | None = None,
                            cmap: str = "Purples"):
    """Heat map of the share of each study's variance that each factor explains.

    Parameters
    ----------
    table : pandas.DataFrame, shape (K [+ 1], M)
        Output of :meth:`mssvae.MSSVAE.variance_explained`: one row per factor (index = factor
        names; any row name but ``"total"``, e.g. ``"other columns"``, is drawn as a factor row),
        optionally a row ``"total"`` (the R² of the whole model in each study), one column per
        study.  Values are fractions (0.1 = 10 %).
    threshold : float
        Factor rows whose largest value is at most ``threshold`` are left out: most columns of a
        sparse fit explain nothing, and dozens of empty rows would hide the few that matter.
    annotate : bool
        Write each cell's value (in %, one decimal) in the cell.
    title : str, optional
    cmap : str
        Colour map of the factor rows.

    Returns
    -------
    matplotlib.figure.Figure
        A heat map (factors kept × studies) with a colour bar in %; a ``"total"`` row is drawn as
        a second one-row heat map underneath, on its own scale.  Each colour scale starts at 0 %:
        a negative share (possible with a nonlinear decoder, where setting a factor to 0 can fit
        a study slightly better) is drawn in the lowest colour, like 0, while its label keeps
        its sign; the colour bar then gets a triangle at its lower end.

    It makes its own figure (two panels when there is a ``"total"`` row), so it takes no ``ax``.
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`table` must be the DataFrame of MSSVAE.variance_explained; got {type(table).__name__}")
    values = table.apply(pd.to_numeric, errors="coerce")
    total = values.loc[["total"]] if "total" in values.index else None
    factors = values.drop(index="total", errors="ignore")
    threshold = float(threshold)
    kept = factors.loc[factors.max(axis=1) > threshold]
    studies = [str(c) for c in values.columns]
    n_rows = max(len(kept), 1) + (0 if total is None else 1)
    fig = _new_figure((max(4.5, 2.6 + 0.9 * len(studies)), max(2.5, 1.5 + 0.32 * n_rows)))
    if values.shape[1] == 0 or (kept.empty and total is None):
        return _no_data(fig, f"no factor explains more than {100 * threshold:g} % in any study")
    heights = [max(len(kept), 1)] + ([1] if total is not None else [])
    axes = fig.subplots(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0]

    def draw(ax, frame: pd.DataFrame, colour_map: str, label: str) -> None:
        F = frame.to_numpy(dtype=float)
        P = 100.0 * F   # drawn in %, like the labels
        top = float(np.nanmax(P)) if np.isfinite(P).any() else 0.0
        top = top if top > 0 else 1.0
        # vmin=0: values below 0 take the lowest colour (the colour map's default "under" colour)
        im = ax.imshow(P, aspect="auto", cmap=colour_map, vmin=0.0, vmax=top, interpolation="nearest")
        ax.set_yticks(np.arange(P.shape[0]))
        ax.set_yticklabels(_distinct_labels(frame.index, 30), fontsize=8)
        ax.set_xticks(np.arange(P.shape[1]))
        ax.set_xticklabels(_distinct_labels(studies, 20), fontsize=8, rotation=30, ha="right")
        labels = {(r, c): _percent_label(v) for (r, c), v in np.ndenumerate(F) if np.isfinite(v)}
        if annotate:
            for (r, c), text in labels.items():
                ax.text(c, r, text, ha="center", va="center", fontsize=7,
                        color="white" if P[r, c] > 0.6 * top else "black")
        # a triangle at the bottom of the bar when a cell reads below 0 (clipped to the lowest colour)
        clipped = any(float(t) < 0 for t in labels.values())
        fig.colorbar(im, ax=ax, label=label, shrink=0.9, extend="min" if clipped else "neither")

    if kept.empty:
        _no_data(fig, f"no factor above {100 * threshold:g} %", ax=axes[0])
    else:
        draw(axes[0], kept, cmap, "share of variance (%)")
        axes[0].set_ylabel("factor")
    if total is not None:
        draw(axes[-1], total, "Greys", "R² (%)")
    omitted = len(factors) - len(kept)
    note = f"\n({omitted} factor(s) at most {100 * threshold:g} % everywhere not shown)" if omitted else ""
    axes[0].set_title((title if title is not None else "Variance explained (%)") + note, fontsize=10)
    return fig


def plot_factor_scores(Z, study, factor_names, owner=None, factors=None, ncols: int = 4,
                       max_factors: int | None = 48, max_points: int = 300, seed: int = 0, title: str | None = None):
    """Factor scores of the samples by study: one small panel per factor, a box and points per study.

    Parameters
    ----------
    Z : array, shape (N, K)
        Factor scores, e.g. ``model.transform(X, study)``.
    study : array, shape (N,)
        Study label of each sample; studies are drawn in sorted order, each in its own colour:
        ``C0``..``C9`` (tab10) for up to 10 studies, tab20 for 11 to 20 (the tab10 hues, then
        their light versions), evenly spaced ``turbo`` colours beyond.  Tick labels are cut to 12
        characters up to 10 studies (level up to 3, slanted from 4); with more they stand upright,
        cut to 20, and the panels widen with the number of studies.  Names are cut in the middle, so
        studies named alike ("breast/Batch 1", "breast/Batch 2") keep distinct labels.
    factor_names : sequence of str, length K
        Names of the columns of ``Z`` (``model.factor_names_``).
    owner : bool array, shape (N, K), optional
        Which samples own which factor (a study's own factors are 0 for the other studies'
        samples by construction, which would draw a meaningless spike at 0); default: all.
    factors : sequence of str or int, optional
        Factors to draw (names or column indices).  Default: every column with any non-zero
        owned score, e.g. pass the active factors of a fit.
    ncols : int
        Panels per row.
    max_factors : int or None
        At most this many panels (the first ones), so a fit with many factors stays readable.
    max_points : int
        At most this many jittered points per study and panel (a random subset; the box uses all).
    seed : int
        Seed of the jitter and of the subset.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure with one axes per factor drawn (plus blank ones filling the grid).

    It makes its own figure with one panel per factor, so it takes no ``ax``.
    """
    Z = _as_matrix(Z, "Z")
    N, K = Z.shape
    labels = np.asarray(study).astype(str)
    if labels.shape != (N,):
        raise ValueError(f"`study` must have one label per row of Z ({N}); got shape {labels.shape}")
    names = _names(factor_names, K, "factor_names", "columns of Z")
    own = np.ones((N, K), dtype=bool) if owner is None else np.asarray(owner, dtype=bool)
    if own.shape != (N, K):
        raise ValueError(f"`owner` must have the shape of Z {(N, K)}; got {own.shape}")
    default = np.flatnonzero(((Z != 0) & own).any(axis=0))
    idx, cut = _pick_factors(factors, names, default, max_factors)
    studies = sorted(set(labels))
    n = len(studies)
    # A 2.6-inch panel holds about ten studies' labels at 45°; with more, stand them upright (each
    # then needs a line's height) and widen the panels so each study keeps that much room.
    upright = n > 10
    ticks = _distinct_labels(studies, 20 if upright else 12)
    panel = max(2.6, 0.7 + 1.3 * _line_height(7) * n) if upright else 2.6
    extra = max(0.0, max(_text_width(t, 7) for t in ticks) - 0.8) if upright else 0.0
    fig = _new_figure((panel * max(1, min(ncols, len(idx))) + 0.4,
                       0.6 + (2.3 + extra) * max(1, int(np.ceil(len(idx) / max(1, ncols))))))
    if not idx:
        return _no_data(fig, "no factor to draw")
    rng = np.random.default_rng(seed)
    colours = _study_colours(studies)
    panel_titles = dict(zip(idx, _distinct_labels([names[k] for k in idx], 30)))
    for ax, k in zip(_grid(fig, len(idx), ncols), idx):
        data, pos = [], []
        for j, s in enumerate(studies):
            z = Z[(labels == s) & own[:, k], k]
            z = z[np.isfinite(z)]
            if z.size == 0:
                continue
            data.append(z)
            pos.append(j)
            shown = z if z.size <= max_points else rng.choice(z, max_points, replace=False)
            ax.scatter(j + rng.uniform(-0.18, 0.18, shown.size), shown, s=4, alpha=0.5, color=colours[s],
                       linewidths=0, zorder=3)
        if data:
            ax.boxplot(data, positions=pos, widths=0.6, showfliers=False, medianprops={"color": "black"})
        ax.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xticks(np.arange(len(studies)))
        ax.set_xticklabels(ticks, fontsize=7, rotation=90 if upright else 45 if n > 3 else 0,
                           ha="right" if 3 < n <= 10 else "center")
        ax.set_xlim(-0.6, n - 0.4)
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(panel_titles[k], fontsize=9)
    head = title if title is not None else "Factor scores by study"
    if cut:
        head += f" (first {len(idx)} factors; {cut} more not shown)"
    fig.suptitle(_wrap(head, fig.get_figwidth() - 0.4, 10), fontsize=10)
    return fig


def plot_top_genes(W, feature_names, factor_names, n: int = 10, factors=None, threshold: float = 0.5,
                   ncols: int = 4, max_factors: int | None = 48, title: str | None = None):
    """Top genes of each factor by |weight|: one small bar panel per factor.

    Parameters
    ----------
    W : array, shape (G, K)
        Loadings, e.g. ``np.hstack([model.W_shared_, *model.W_specific_.values()])`` (the column
        order of ``model.factor_names_``).
    feature_names : sequence of str, length G
    factor_names : sequence of str, length K
    n : int
        Genes per factor (the ``n`` largest |W_gk|).
    factors : sequence of str or int, optional
        Factors to draw (names or column indices).  Default: the columns with a gene above
        ``threshold`` (the active factors).
    threshold : float
        Support rule |W| > threshold: bars of genes below it (not in the factor's gene set) are
        drawn pale, and dashed lines mark ±threshold.
    ncols : int
        Panels per row.
    max_factors : int or None
        At most this many panels (the first ones).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure with one axes per factor drawn (plus blank ones filling the grid).

    It makes its own figure with one panel per factor, so it takes no ``ax``.
    """
    W = _as_matrix(W, "W")
    G, K = W.shape
    genes = _names(feature_names, G, "feature_names", "rows of W")
    names = _names(factor_names, K, "factor_names", "columns of W")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive integer; got {n!r}")
    threshold = float(threshold)
    idx, cut = _pick_factors(factors, names, np.flatnonzero((np.abs(W) > threshold).any(axis=0)), max_factors)
    n = min(int(n), G)
    fig = _new_figure((2.8 * max(1, min(ncols, len(idx))) + 0.4,
                       0.6 + (0.45 + 0.17 * n) * max(1, int(np.ceil(len(idx) / max(1, ncols))))))
    if not idx:
        return _no_data(fig, f"no factor with |W| > {threshold:g}")
    panel_titles = dict(zip(idx, _distinct_labels([names[k] for k in idx], 24)))
    for ax, k in zip(_grid(fig, len(idx), ncols), idx):
        w = W[:, k]
        top = np.argsort(-np.abs(w), kind="stable")[:n]
        y = np.arange(len(top))
        inside = np.abs(w[top]) > threshold
        colours = [to_rgba("tab:red" if v >= 0 else "tab:blue", 0.9 if keep else 0.3)
                   for v, keep in zip(w[top], inside)]
        ax.barh(y, w[top], color=colours)
        for t in (-threshold, threshold):
            ax.axvline(t, color="grey", linewidth=0.6, linestyle="--")
        ax.axvline(0.0, color="black", linewidth=0.6)
        ax.set_yticks(y)
        ax.set_yticklabels([_shorten(genes[g], 16) for g in top], fontsize=7)
        ax.set_ylim(len(top) - 0.5, -0.5)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{panel_titles[k]} ({int((np.abs(w) > threshold).sum())} genes)", fontsize=9)
    head = title if title is not None else f"Top {n} genes per factor by |W| (pale: |W| ≤ {threshold:g})"
    if cut:
        head += f"; first {len(idx)} factors, {cut} more not shown"
    fig.suptitle(head, fontsize=10)
    return fig


def plot_enrichment_dots(top_terms_table, size: str = "fold_enrichment", color: str = "neg_log10_p_adj",
                         max_terms: int | None = 60, term_width: int = 60, title: str | None = None, ax=None):
    """Dot plot of the top enriched terms per factor gene set, like the paper's Figs. 4-5.

    Rows are terms, columns gene sets (factors); a dot marks a significant (set, term) pair, its
    area grows with ``size`` and its colour with ``color``.  Terms are ordered by the first
    gene set listing them, so each factor's terms form a block along the diagonal.

    Parameters
    ----------
    top_terms_table : pandas.DataFrame
        Output of :func:`mssvae.enrichment.top_terms` (the ``top_terms.csv`` of ``mssvae
        enrich``), one row per dot: columns ``gene_set``, ``term``, ``fold_enrichment``,
        ``p_adj``, ``neg_log10_p_adj`` (computed from ``p_adj`` when absent), ...
    size : str
        Column giving the dot area (``"fold_enrichment"`` or ``"neg_log10_p_adj"``).
    color : str
        Column giving the dot colour (−log10 of the adjusted p-value by default).
    max_terms : int or None
        Draw at most this many terms (the first ones in row order).
    term_width : int
        Longer term names are cut to this many characters.
    title : str, optional
    ax : matplotlib Axes, optional
        Draw there instead of on a new figure (the returned figure is then ``ax.figure``).  The
        colour bar takes its room from ``ax`` (as in :func:`plot_masks`); the size legend is drawn
        just outside the right edge of ``ax``.

    Returns
    -------
    matplotlib.figure.Figure with the dot plot axes and a colour bar (a note when the table is empty).
    """
    if not isinstance(top_terms_table, pd.DataFrame):
        raise TypeError(f"`top_terms_table` must be a DataFrame (enrichment.top_terms); "
                        f"got {type(top_terms_table).__name__}")
    df = top_terms_table.copy()
    if "neg_log10_p_adj" not in df and "p_adj" in df:
        df["neg_log10_p_adj"] = -np.log10(np.maximum(pd.to_numeric(df["p_adj"], errors="coerce"),
                                                     np.finfo(float).tiny))
    missing = {"gene_set", "term", size, color} - set(df.columns)
    if missing:
        raise ValueError(f"`top_terms_table` lacks the column(s) {sorted(missing)} (expected enrichment.top_terms)")
    df = df.dropna(subset=["gene_set", "term", size, color])
    df["gene_set"] = df["gene_set"].astype(str)
    df["term"] = df["term"].astype(str)
    sets = list(dict.fromkeys(df["gene_set"]))
    terms = list(dict.fromkeys(df["term"]))  # row order: first gene set naming the term
    cut = 0
    if max_terms is not None and len(terms) > max_terms:
        cut = len(terms) - max_terms
        terms = terms[:max_terms]
        df = df.loc[df["term"].isin(terms)]
        sets = [s for s in sets if s in set(df["gene_set"])]
    if ax is None:
        fig = _new_figure((max(5.0, 0.07 * min(term_width, max((len(t) for t in terms), default=10))
                               + 0.42 * len(sets) + 2.5), max(2.5, 1.6 + 0.24 * len(terms))))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if df.empty:
        return _no_data(fig, "no significant term to draw", ax=ax)
    x = df["gene_set"].map({s: i for i, s in enumerate(sets)}).to_numpy(dtype=float)
    y = df["term"].map({t: i for i, t in enumerate(terms)}).to_numpy(dtype=float)
    v = df[size].to_numpy(dtype=float)
    vmax = float(np.nanmax(np.abs(v))) if v.size else 1.0
    scale = 220.0 / max(vmax, 1e-12)
    sc = ax.scatter(x, y, s=np.clip(v, 0, None) * scale + 8, c=df[color].to_numpy(dtype=float), cmap="viridis",
                    edgecolors="black", linewidths=0.4)
    ax.set_xticks(np.arange(len(sets)))
    ax.set_xticklabels([_shorten(s, 24) for s in sets], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(len(terms)))
    ax.set_yticklabels([_shorten(t, term_width) for t in terms], fontsize=7)
    ax.set_xlim(-0.6, len(sets) - 0.4)
    ax.set_ylim(len(terms) - 0.5, -0.5)
    ax.grid(alpha=0.25)
    ax.set_axisbelow(True)
    labels = {"fold_enrichment": "fold enrichment", "neg_log10_p_adj": "−log10 FDR"}
    # Colour bar in the top half of the right margin, size legend in the bottom half: no overlap.
    fig.colorbar(sc, ax=ax, label=labels.get(color, color), shrink=0.45, anchor=(0.0, 1.0))
    handles, texts = sc.legend_elements(prop="sizes", num=4, func=lambda s: (s - 8) / scale, fmt="{x:.3g}",
                                        color="grey")
    if handles:
        ax.legend(handles, texts, title=labels.get(size, size), fontsize=7, title_fontsize=7,
                  loc="lower left", bbox_to_anchor=(1.02, 0.0), frameon=False)
    head = title if title is not None else "Top enriched terms per gene set"
    if cut:
        head += f" (first {len(terms)} terms; {cut} more not shown)"
    ax.set_title(head, fontsize=10)
    return fig
