"""Plotting API and cosmetics: ``ax=`` on the single-axes plots, the variance heat map's colour
scale and labels, distinct colours for many studies."""

import inspect

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

import mssvae.plotting as plotting
from mssvae.plotting import plot_enrichment_dots, plot_factor_scores, plot_variance_explained

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
