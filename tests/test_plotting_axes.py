"""Plotting API and cosmetics: ``ax=`` on the single-axes plots, the variance heat map's colour
scale and labels, distinct colours for many studies, legible study labels and titles with many studies."""

import inspect
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import mssvae.plotting as plotting
from mssvae.plotting import (
    plot_enrichment_dots,
    plot_factor_scores,
    plot_masks,
    plot_masks_comparison,
    plot_variance_explained,
)

matplotlib.use("Agg")

SINGLE_AXES = ["plot_masks", "plot_replicates", "plot_enrichment_dots"]
SEVERAL_PANELS = ["plot_masks_comparison", "plot_history", "plot_variance_explained", "plot_factor_scores",
                  "plot_top_genes"]


def _top_terms():
    return pd.DataFrame({"gene_set": ["shared_0", "shared_0", "a_0"], "term": ["T1", "T2", "T1"],
                         "fold_enrichment": [4.0, 2.0, 8.0], "p_adj": [1e-4, 1e-2, 1e-6]})


def _variance_table():
    # "other columns" as MSSVAE.variance_explained(factors="reported") will report it
    return pd.DataFrame({"a": [0.20, 0.0, -1e-4, 0.05, 0.50], "b": [0.03, 0.30, 0.02, -0.002, 0.60]},
                        index=["shared_0", "b_0", "shared_1", "other columns", "total"])


# ---------------------------------------------------------------------------------------------- ax=


def test_every_plot_either_takes_ax_or_says_why_not():
    public = sorted(n for n in plotting.__all__ if n.startswith("plot_"))
    assert sorted(SINGLE_AXES + SEVERAL_PANELS) == public
    for name in SINGLE_AXES:
        fn = getattr(plotting, name)
        assert inspect.signature(fn).parameters["ax"].default is None, name
        assert "ax : matplotlib Axes, optional" in fn.__doc__, name
    for name in SEVERAL_PANELS:
        fn = getattr(plotting, name)
        assert "ax" not in inspect.signature(fn).parameters, name
        assert "takes no ``ax``" in fn.__doc__, name


def test_plot_enrichment_dots_draws_into_the_given_axes():
    fig = Figure()
    left, right = fig.subplots(1, 2)
    out = plot_enrichment_dots(_top_terms(), ax=right, title="here")
    assert out is right.figure is fig
    assert len(right.collections) == 1 and len(right.collections[0].get_offsets()) == 3
    assert [t.get_text() for t in right.get_yticklabels()] == ["T1", "T2"]
    assert right.get_title() == "here"
    assert not left.collections and not left.texts and left.get_title() == ""  # untouched
    assert len(fig.axes) == 3  # the two given axes + the colour bar
    fig.savefig(__import__("io").BytesIO(), format="png")  # draws without error


def test_plot_enrichment_dots_empty_table_notes_in_the_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_enrichment_dots(_top_terms().iloc[:0], ax=ax)
    assert out is fig and len(fig.axes) == 1
    assert "no significant term" in ax.texts[0].get_text()


def test_plot_enrichment_dots_without_ax_still_makes_its_figure():
    fig = plot_enrichment_dots(_top_terms())
    assert isinstance(fig, Figure) and fig.axes[0].collections


def test_multi_panel_plots_reject_ax():
    fig = Figure()
    ax = fig.add_subplot()
    with pytest.raises(TypeError, match="ax"):
        plot_variance_explained(_variance_table(), ax=ax)
    with pytest.raises(TypeError, match="ax"):
        plot_factor_scores(np.zeros((2, 1)), ["a", "b"], ["f"], ax=ax)


# ---------------------------------------------------------------------------------------------- variance heat map


def _heat_maps(fig):
    return [ax for ax in fig.axes if ax.images]


def test_variance_colour_bar_starts_at_zero_and_reads_in_percent():
    ve = _variance_table()
    fig = plot_variance_explained(ve, threshold=0.01)
    heat, total = _heat_maps(fig)
    assert [t.get_text() for t in heat.get_yticklabels()] == ["shared_0", "b_0", "shared_1", "other columns"]
    assert [t.get_text() for t in total.get_yticklabels()] == ["total"]
    for ax, top, label in [(heat, 30.0, "share of variance (%)"), (total, 60.0, "R² (%)")]:
        im = ax.images[0]
        assert im.norm.vmin == 0.0 and im.norm.vmax == pytest.approx(top)  # in %, from 0
        assert im.colorbar.ax.get_ylabel() == label
        assert im.get_array().max() == pytest.approx(top)  # the image itself is in %
    # a 0.0 cell and a negative one take the lowest colour, exactly like 0
    im = heat.images[0]
    lowest = im.cmap(0.0)
    assert im.to_rgba(np.array([0.0]))[0] == pytest.approx(lowest)
    assert im.to_rgba(np.array([-0.2]))[0] == pytest.approx(lowest)
    assert im.colorbar.extend == "min"  # the "-0.2" cell is clipped: the bar says so
    assert total.images[0].colorbar.extend == "neither"


def test_variance_labels_never_read_minus_zero():
    ve = _variance_table()
    fig = plot_variance_explained(ve, threshold=0.01)
    heat, _ = _heat_maps(fig)
    texts = [t.get_text() for t in heat.texts]
    assert "-0.0" not in texts
    assert texts.count("0.0") == 2  # the exact zero and the -1e-4 (= -0.01 %)
    assert "-0.2" in texts and "20.0" in texts  # a real negative share keeps its sign
    # only the tiny negative: nothing reads below 0, so no clipping triangle
    tiny = pd.DataFrame({"a": [0.1, -1e-4], "b": [-4e-4, 0.2]}, index=["shared_0", "shared_1"])
    heat, = _heat_maps(plot_variance_explained(tiny, threshold=0.0))
    assert sorted(t.get_text() for t in heat.texts) == ["0.0", "0.0", "10.0", "20.0"]
    assert heat.images[0].colorbar.extend == "neither"


# ---------------------------------------------------------------------------------------------- study colours


def _scores(n_studies, per=5, seed=0):
    rng = np.random.default_rng(seed)
    study = np.repeat([f"s{m:02d}" for m in range(n_studies)], per)
    return rng.normal(size=(len(study), 1)), study


def _colours_by_study(fig):
    (ax,) = [ax for ax in fig.axes if ax.get_title()]
    return [tuple(np.round(c.get_facecolor()[0], 6)) for c in ax.collections]


def test_twelve_studies_get_twelve_distinct_colours():
    Z, study = _scores(12)
    colours = _colours_by_study(plot_factor_scores(Z, study, ["f0"]))
    assert len(colours) == 12 and len(set(colours)) == 12
    # the first ten keep the tab10 colours of the <= 10 case
    assert [c[:3] for c in colours[:10]] == [tuple(np.round(to_rgba(f"C{i}")[:3], 6)) for i in range(10)]


def test_twenty_studies_distinct_and_few_studies_unchanged():
    Z, study = _scores(20)
    assert len(set(_colours_by_study(plot_factor_scores(Z, study, ["f0"])))) == 20
    Z, study = _scores(3)
    colours = _colours_by_study(plot_factor_scores(Z, study, ["f0"]))
    assert [c[:3] for c in colours] == [tuple(np.round(to_rgba(f"C{i}")[:3], 6)) for i in range(3)]
    Z, study = _scores(25, per=2)
    assert len(set(_colours_by_study(plot_factor_scores(Z, study, ["f0"])))) == 25


# ---------------------------------------------------------------------------------------------- many studies

# 24 studies named alike, as a user's multi-cohort data: the same prefix, or the same suffix
BATCHES = [f"{t}/Batch {b}" for t in ["breast", "NSCLC", "colorectal", "melanoma", "ovarian", "prostate"]
           for b in range(1, 5)]
TWELVE = ["CRC (n=40)", "Lüneburg", "Study A", "Study B", "GSE12345", "TCGA-BRCA", "Batch 7", "Cohort 2019",
          "Study C", "Study D", "x", "y"]


def _study_masks(studies, G=100, empty=(), seed=0):
    """A shared block of 3 active columns and 1 or 2 active columns per study (none for ``empty``)."""
    rng = np.random.default_rng(seed)
    Ws = rng.normal(0, 0.05, (G, 4))
    Ws[:10, :3] = 2.0
    Wm = {}
    for i, s in enumerate(studies):
        W = rng.normal(0, 0.05, (G, 2))
        if s not in empty:
            W[rng.choice(G, 8, replace=False), : 1 + i % 2] = 2.0
        Wm[s] = W
    return Ws, Wm


def _drawn(fig):
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _boxes(texts, renderer):
    return [t.get_window_extent(renderer) for t in texts if t.get_text()]


def _assert_legible(fig, texts, renderer):
    """The texts' boxes are pairwise apart and inside the figure."""
    boxes = _boxes(texts, renderer)
    assert boxes
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            assert not a.overlaps(boxes[j]), (texts[i].get_text(), texts[j].get_text())
    _assert_inside(fig, boxes)


def _assert_inside(fig, boxes):
    W, H = fig.bbox.width, fig.bbox.height
    for b in boxes:
        assert b.x0 >= -0.5 and b.x1 <= W + 0.5 and b.y0 >= -0.5 and b.y1 <= H + 0.5, (b, W, H)


def test_plot_masks_24_similar_studies_labels_apart_and_title_inside():
    Ws, Wm = _study_masks(BATCHES, empty=BATCHES[::3])  # 8 studies without an active column
    fig = plot_masks(Ws, Wm)
    r = _drawn(fig)
    ax = fig.axes[0]
    ticks = ax.get_xticklabels()
    _assert_legible(fig, ticks, r)
    _assert_inside(fig, [ax.title.get_window_extent(r)])
    shown = [s for s in BATCHES if s not in BATCHES[::3]]
    assert [t.get_text().replace("\n", " ") for t in ticks] == (
        ["shared (3)"] + [f"{s} ({1 + BATCHES.index(s) % 2})" for s in shown])  # whole names, told apart
    title = ax.get_title()
    assert all(s in title.replace("\n", " ") for s in BATCHES[::3])  # every empty study still named


def test_plot_masks_twelve_studies_with_odd_names():
    # "CRC (n=40)" sat on top of "Lüneburg"; a CJK name renders as boxes (a font matter) but must not fail
    names = TWELVE[:-1] + ["東京"]
    Ws, Wm = _study_masks(names, empty=["x"])
    fig = plot_masks(Ws, Wm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Glyph ... missing from font(s)"
        r = _drawn(fig)
        ax = fig.axes[0]
        _assert_legible(fig, ax.get_xticklabels(), r)
        _assert_inside(fig, [ax.title.get_window_extent(r)])
    assert "東京 (2)" in [t.get_text() for t in ax.get_xticklabels()]


def test_plot_masks_long_similar_names_cut_apart_and_long_notes_wrapped():
    names = [f"GSE123456_breast_cancer_cohort_batch_{m:02d}" for m in range(24)]
    Ws, Wm = _study_masks(names, empty=names[:12])
    fig = plot_masks(Ws, Wm, title="Estimated |W| of a fit with a rather long input file name results_final.h5ad")
    r = _drawn(fig)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(labels)) == len(labels) == 13
    assert all(len(t) <= len("x" * 30 + " (2)") for t in labels)
    _assert_legible(fig, ax.get_xticklabels(), r)
    _assert_inside(fig, [ax.title.get_window_extent(r)])
    # every study without an active column: a short list, then how many more
    Ws, Wm = _study_masks(BATCHES, empty=BATCHES)
    fig = plot_masks(Ws, Wm)
    r = _drawn(fig)
    title = fig.axes[0].get_title()
    assert "breast/Batch 1" in title and "more)" in title and title.count("\n") <= 3
    _assert_inside(fig, [fig.axes[0].title.get_window_extent(r)])


def test_plot_masks_few_short_studies_keep_their_look():
    Ws, Wm = _study_masks(["a", "b", "c", "d", "e", "f"], G=30)
    Wm = {k: v[:, :1] * 2 for k, v in Wm.items()}  # one wide-enough column each
    fig = plot_masks(Ws, Wm)
    ticks = fig.axes[0].get_xticklabels()
    assert [t.get_text() for t in ticks][:2] == ["shared\n(3)", "a\n(1)"]
    assert {t.get_rotation() for t in ticks} == {0.0} and {t.get_fontsize() for t in ticks} == {8.0}
    assert fig.get_figheight() == 5.0
    _assert_legible(fig, ticks, _drawn(fig))


def test_plot_masks_comparison_24_studies_labels_apart():
    Ws, Wm = _study_masks(BATCHES, G=60)
    fig = plot_masks_comparison(Ws, Wm, Ws, Wm)
    r = _drawn(fig)
    for ax in fig.axes[:2]:
        _assert_legible(fig, ax.get_xticklabels(), r)


def test_plot_factor_scores_24_studies_distinct_ticks_apart():
    rng = np.random.default_rng(0)
    study = rng.choice(BATCHES, 280)
    fig = plot_factor_scores(rng.normal(size=(280, 2)), study, ["shared_0", "breast/Batch 3_0"])
    r = _drawn(fig)
    for ax in [ax for ax in fig.axes if ax.get_title()]:
        labels = [t.get_text() for t in ax.get_xticklabels()]
        assert len(labels) == 24 and len(set(labels)) == 24
        assert labels == sorted(BATCHES)  # short enough to be shown whole
        _assert_legible(fig, ax.get_xticklabels(), r)
    _assert_inside(fig, [fig._suptitle.get_window_extent(r)])


def test_plot_factor_scores_cut_labels_stay_distinct():
    # few studies: still slanted and cut to 12 characters, but in the middle
    names = [f"GSE123456_breast_cancer_batch_{m}" for m in range(6)]
    rng = np.random.default_rng(1)
    fig = plot_factor_scores(rng.normal(size=(60, 1)), np.repeat(names, 10), ["f0"])
    (ax,) = [ax for ax in fig.axes if ax.get_title()]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(labels)) == 6 and all(len(t) <= 12 for t in labels)
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {45.0}
    # many studies differing only in the middle: numbered, still distinct
    names = [f"the_consortium_cohort_{m:02d}_of_the_consortium_study" for m in range(30)]
    fig = plot_factor_scores(rng.normal(size=(60, 1)), np.repeat(names, 2), ["f0"])
    (ax,) = [ax for ax in fig.axes if ax.get_title()]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert len(set(labels)) == 30 and all(len(t) <= 20 for t in labels) and labels[0].startswith("1: ")
    _assert_legible(fig, ax.get_xticklabels(), _drawn(fig))


def test_distinct_labels_keep_both_ends_then_number():
    assert plotting._distinct_labels(["a", "bb"], 12) == ["a", "bb"]
    cut = plotting._distinct_labels(["breast/Batch 10", "breast/Batch 11", "NSCLC/Batch 10"], 12)
    assert len(set(cut)) == 3 and all(len(t) <= 12 and "…" in t for t in cut)
    same_ends = [f"{'a' * 12}{m}{'a' * 12}" for m in range(3)]  # no 11 characters from the ends tell them apart
    numbered = plotting._distinct_labels(same_ends, 12)
    assert len(set(numbered)) == 3 and numbered[0].startswith("1: ")


def test_variance_study_labels_cut_apart():
    names = [f"GSE123456_breast_cancer_cohort_batch_{m:02d}" for m in range(8)]
    ve = pd.DataFrame(np.full((2, 8), 0.2), columns=names, index=["shared_0", "total"])
    heat, _ = _heat_maps(plot_variance_explained(ve))
    labels = [t.get_text() for t in heat.get_xticklabels()]
    assert len(set(labels)) == 8 and all(len(t) <= 20 for t in labels)


def test_plot_masks_into_an_axes_of_a_subfigure():
    # a SubFigure has no figure size of its own: the layout reads the root figure's
    fig = Figure(figsize=(10, 5))
    FigureCanvasAgg(fig)
    ax = fig.subfigures(1, 2)[0].subplots()
    W = np.abs(np.random.default_rng(0).normal(0, 1, (20, 3))) * 2
    plot_masks(W, {"a": W[:, :1]}, ax=ax)
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()][0].startswith("shared")
