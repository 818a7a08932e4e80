"""Figures: masks heatmaps, true vs estimated, training curves, replicate box plots."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from mssvae.plotting import (
    REPLICATE_METRICS,
    match_columns,
    plot_history,
    plot_masks,
    plot_masks_comparison,
    plot_replicates,
)


def _masks(G=12):
    Ws = np.zeros((G, 3))
    Ws[0:4, 0] = 8
    Ws[4:8, 2] = 8  # column 1 is empty
    Wm = {"a": np.zeros((G, 2)), "b": np.zeros((G, 1))}
    Wm["a"][8:10, 1] = 10  # column 0 of "a" empty
    Wm["a"][0, 0] = 0.3  # below the 0.5 threshold: still empty
    Wm["b"][10:12, 0] = -10  # |W| is shown
    return Ws, Wm


def _image(fig, i=0):
    return fig.axes[i].images[0].get_array()


def test_plot_masks_drops_empty_columns_and_labels_blocks():
    Ws, Wm = _masks()
    fig = plot_masks(Ws, Wm)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # heatmap + colour bar
    img = _image(fig)
    assert img.shape == (12, 4)  # shared 2 + a 1 + b 1
    assert img.min() >= 0 and img[10, 3] == 10  # absolute values
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["shared\n(2)", "a\n(1)", "b\n(1)"]
    assert len(fig.axes[0].lines) == 2  # separators between the 3 blocks


def test_plot_masks_keep_all_columns_and_no_colorbar():
    Ws, Wm = _masks()
    fig = plot_masks(Ws, Wm, drop_empty=False, colorbar=False, title="t")
    assert len(fig.axes) == 1 and fig.axes[0].get_title() == "t"
    assert _image(fig).shape == (12, 6)


def test_plot_masks_threshold_and_empty_study_note():
    Ws, Wm = _masks()
    Wm["b"][:] = 0
    fig = plot_masks(Ws, Wm, threshold=9)  # only the |W| = 10 entries of "a" survive
    assert _image(fig).shape == (12, 1)
    assert "no active column: shared, b" in fig.axes[0].get_title()


def test_plot_masks_all_empty_still_returns_a_figure():
    fig = plot_masks(np.zeros((5, 2)), {"a": np.zeros((5, 1))})
    assert isinstance(fig, Figure) and not fig.axes[0].images


def test_plot_masks_on_given_axes_and_list_of_studies():
    fig = Figure()
    ax = fig.add_subplot()
    Ws, Wm = _masks()
    out = plot_masks(Ws, list(Wm.values()), ax=ax, colorbar=False, feature_names=[f"g{j}" for j in range(12)])
    assert out is fig
    assert [t.get_text() for t in ax.get_xticklabels()] == ["shared\n(2)", "study1\n(1)", "study2\n(1)"]
    assert ax.get_yticklabels()[0].get_text() == "g0"


def test_plot_masks_rejects_mismatched_rows():
    with pytest.raises(ValueError, match="same number of features"):
        plot_masks(np.ones((5, 2)), {"a": np.ones((4, 1))})
    with pytest.raises(ValueError, match="2-d"):
        plot_masks(np.ones((5, 2, 2)), {})


def test_match_columns_undoes_a_permutation():
    S = np.eye(6, 4, dtype=bool)
    S[4, 0] = True
    perm = np.array([2, 0, 3, 1])
    est = np.concatenate([S[:, perm], np.zeros((6, 1), bool)], axis=1)  # plus an empty column
    order = match_columns(S, est)
    assert np.array_equal(est[:, order][:, :4], S)
    assert order[-1] == 4 and sorted(order) == list(range(5))


def test_plot_masks_comparison_aligns_estimated_columns():
    Ws, Wm = _masks()
    rng = np.random.default_rng(0)
    est_s = Ws[:, [2, 1, 0]] * 0.1 + rng.uniform(0, 0.01, Ws.shape)  # reversed, rescaled
    est_m = {"b": Wm["b"] * 0.1, "a": Wm["a"][:, ::-1] * 0.1}  # other key order, reversed
    fig = plot_masks_comparison(Ws, Wm, est_s, est_m)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # two heatmaps and their colour bars
    true_img, est_img = _image(fig, 0), fig.axes[1].images[0].get_array()
    assert est_img.shape == true_img.shape
    assert np.array_equal(est_img > 0.5, true_img > 0.5)


def _history(n=20):
    lam = np.where(np.arange(n) < 1, 1.0, np.where(np.arange(n) < 6, 10.0, 15.0))
    return pd.DataFrame({
        "loss": np.linspace(100, 10, n), "log_lik": -np.linspace(90, 5, n), "kl_shared": np.ones(n),
        "kl_specific": np.ones(n), "kl_library": np.zeros(n), "log_prior_masks": -np.ones(n),
        "log_prior_noise": -np.ones(n), "epoch": np.arange(n), "lambda0": lam,
        "active_shared": np.maximum(30 - np.arange(n), 8), "active_specific": np.full(n, 6),
    })


def test_plot_history_panels_and_stage_marks():
    fig = plot_history(_history())
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    ax_loss = fig.axes[0]
    vlines = [ln for ln in ax_loss.lines if ln.get_linestyle() == "--"]
    assert sorted(ln.get_xdata()[0] for ln in vlines) == [1, 6]  # λ0: 1 → 10 → 15
    kl_labels = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert kl_labels == ["kl_shared", "kl_specific"]  # kl_library is all 0 (Gaussian): skipped
    # λ1 (recorded since it can be empirical) shares the penalties' panel with λ0, on a log scale
    fig = plot_history(_history().assign(lambda1=np.linspace(0.1, 0.5, 20)))
    assert [t.get_text() for t in fig.axes[5].get_legend().get_texts()] == ["λ0 (spike)", "λ1 (slab)"]
    assert fig.axes[5].get_yscale() == "log"


def test_plot_history_accepts_uns_dict_and_missing_columns():
    h = {k: v.to_numpy() for k, v in _history().drop(columns=["epoch", "kl_shared", "kl_specific"]).items()}
    fig = plot_history(h, title="x")
    assert len(fig.axes) == 6
    assert any(t.get_text() == "not recorded" for t in fig.axes[2].texts)
    with pytest.raises(ValueError, match="empty"):
        plot_history(pd.DataFrame())


def test_plot_replicates_box_per_metric():
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.uniform(0.7, 1, (30, len(REPLICATE_METRICS))), columns=REPLICATE_METRICS)
    df.loc[3, "dci"] = np.nan
    fig = plot_replicates(df)
    assert isinstance(fig, Figure) and len(fig.axes) == 1
    assert len(fig.axes[0].get_xticklabels()) == 7
    fig2 = plot_replicates(df, metrics=["shared_consensus", "dci"])
    assert len(fig2.axes[0].get_xticklabels()) == 2
    with pytest.raises(ValueError, match="lacks"):
        plot_replicates(df.drop(columns="dci"))


def test_figures_save_without_pyplot(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    Ws, Wm = _masks()
    for i, fig in enumerate([plot_masks(Ws, Wm), plot_history(_history()),
                             plot_masks_comparison(Ws, Wm, Ws, Wm)]):
        fig.savefig(tmp_path / f"{i}.png")
        assert (tmp_path / f"{i}.png").stat().st_size > 1000
    assert plt.get_fignums() == before  # nothing registered with pyplot (no GUI, no leak)
