"""Merging factors that are functions of one another (mssvae.merging)."""

import numpy as np
import pytest

from mssvae.merging import dependence_r2, dependent_groups, merge_columns


def test_a_curve_of_a_factor_is_dependent_and_an_independent_factor_is_not():
    rng = np.random.default_rng(0)
    z, w = rng.normal(size=(2, 200))
    curve = np.sin(3 * np.pi / 4 * z)         # the §4.2 simulation's nonlinear genes
    assert dependence_r2(z, curve) > 0.9
    assert dependence_r2(z, w) < 0.1 and dependence_r2(w, z) < 0.1
    # Not monotone, so a correlation would miss it.
    assert abs(np.corrcoef(z, curve)[0, 1]) < 0.4


def test_dependent_columns_are_grouped_and_others_left_alone():
    rng = np.random.default_rng(1)
    z, w, u = rng.normal(size=(3, 150))
    Z = np.column_stack([z, w, np.sin(3 * np.pi / 4 * z), u, np.zeros(150)])
    groups = dependent_groups(Z, [0, 1, 2, 3])
    assert sorted(map(sorted, groups)) == [[0, 2], [1], [3]]


def test_merged_column_is_the_union_of_the_gene_sets():
    W = np.zeros((6, 3))
    W[0:3, 0] = [2.0, 3.0, -1.0]      # linear genes of a module
    W[2:5, 2] = [4.0, -2.0, 1.5]      # its curved genes, one gene in both
    W[5, 1] = 1.0
    merged = merge_columns(W, [[0, 2], [1]])
    assert np.array_equal(merged[:, 2], np.zeros(6))   # equal support sizes: the first column is kept
    np.testing.assert_array_equal(merged[:, 0], [2.0, 3.0, 4.0, -2.0, 1.5, 0.0])
    np.testing.assert_array_equal(merged[:, 1], W[:, 1])
    np.testing.assert_array_equal(W[2:5, 2], [4.0, -2.0, 1.5])  # the input is not changed


def test_a_fit_with_independent_factors_is_left_as_it_is(fitted_blocks, blocks):
    from mssvae.merging import merge_dependent_factors

    X, study, _, _ = blocks
    W_shared, W_specific, groups = merge_dependent_factors(fitted_blocks, X, study)
    assert groups == {"shared": [], "s0": [], "s1": []}
    np.testing.assert_array_equal(W_shared, fitted_blocks.W_shared_)
    for lab in ("s0", "s1"):
        np.testing.assert_array_equal(W_specific[lab], fitted_blocks.W_specific_[lab])


def test_groups_are_found_block_by_block_over_each_blocks_own_samples():
    from mssvae.merging import block_groups

    rng = np.random.default_rng(2)
    n = 120
    codes = np.repeat([0, 1], n // 2)
    z, w, u = rng.normal(size=(3, n))
    curve = np.sin(3 * np.pi / 4 * z)
    # Layout of MSSVAE.transform: 2 shared columns, then 2 for study 0 and 2 for study 1.
    Z = np.column_stack([z, curve, u, np.where(codes == 0, np.sin(3 * np.pi / 4 * u), 0.0), w, z])
    W = np.ones((4, 6))
    groups = block_groups(Z, codes, W, n_shared=2, n_specific=[2, 2])
    # Study 1's last column equals the shared z, but factors of different blocks are never merged.
    assert sorted(map(sorted, groups)) == [[0, 1], [2, 3]]
    W[:, 3] = 0.1            # an inactive column is not a candidate
    assert sorted(map(sorted, block_groups(Z, codes, W, 2, [2, 2]))) == [[0, 1]]


def test_merge_dependent_only_rewrites_the_reported_masks_and_survives_saving(tmp_path):
    from mssvae import MSSVAE
    from mssvae.simulate import simulate_rnaseq

    sim = simulate_rnaseq(n_samples=300, n_features=60, proportions=(0.5, 0.5), n_shared=2, n_specific=1,
                          random_state=0)
    # Without the dispersion warm-up and with Eq. 2.4's KL weight this short fit splits a factor into
    # z and g(z), which is what the test needs; the warm-up, or the NB KL weight 2, prevents the split
    # (docs/design.md, "Counts (NB)", items 14 and 15).
    kw = dict(likelihood="nb", n_shared=4, n_specific=2, hidden=(16, 16), max_epochs=30, batch_size=128,
              dispersion_warmup=0, kl_weight=1.0)
    raw = MSSVAE(merge_dependent=None, min_anchors=0, **kw).fit(sim.X, sim.study)
    merged = MSSVAE(min_anchors=0, **kw).fit(sim.X, sim.study)          # "auto" merges (threshold 0.5)
    assert raw.merged_groups_ == [] and merged.merged_groups_, "the short fit has no dependent factors to test"
    W_raw = np.concatenate([raw.W_shared_] + list(raw.W_specific_.values()), 1)
    W_new = np.concatenate([merged.W_shared_] + list(merged.W_specific_.values()), 1)
    np.testing.assert_array_equal(merged.module_.W.detach().numpy(), raw.module_.W.detach().numpy())
    touched = set()
    for group, names in zip(merged.merged_groups_, merged.merged_factors_):
        keep = merged.factor_names_.index(names[0])
        assert sorted(group) == sorted(merged.factor_names_.index(n) for n in names)
        np.testing.assert_array_equal(np.abs(W_new[:, keep]) > 0.5, (np.abs(W_raw[:, group]) > 0.5).any(1))
        assert not W_new[:, [c for c in group if c != keep]].any()
        touched |= set(group)
    others = [c for c in range(W_raw.shape[1]) if c not in touched]
    np.testing.assert_array_equal(W_new[:, others], W_raw[:, others])
    merged.save(tmp_path / "m")
    again = MSSVAE.load(tmp_path / "m")
    assert again.merged_factors_ == merged.merged_factors_
    np.testing.assert_array_equal(again.W_shared_, merged.W_shared_)


def test_a_bad_merge_threshold_is_named():
    import pytest

    from mssvae import MSSVAE

    X = np.random.default_rng(0).poisson(5, size=(20, 4))
    for bad in (0, 1.5, "yes", True):
        with pytest.raises(ValueError, match="merge_dependent"):
            MSSVAE(likelihood="nb", merge_dependent=bad, max_epochs=1).fit(X, ["a"] * 10 + ["b"] * 10)


def test_a_column_without_two_anchor_genes_is_redundant():
    """Assumption 1: a factor needs two anchor features (genes in no other gene set of its block)."""
    from mssvae.merging import block_redundant, redundant_columns

    S = np.zeros((15, 5), bool)
    S[0:5, 0] = S[5:10, 1] = True
    S[[0, 1, 5, 6], 2] = True      # a mixture of columns 0 and 1: no gene of its own
    S[[14], 3] = True              # a single gene shared with nobody: left alone
    S[[4, 12, 13], 4] = True       # overlaps column 0 but has two anchors (12, 13): a factor
    assert redundant_columns(S) == [2]
    # Duplicates: the smaller copy goes first, then the anchors are counted again, so one copy stays.
    D = np.zeros((6, 3), bool)
    D[0:4, 0] = D[0:4, 1] = True
    D[0:3, 2] = True
    assert redundant_columns(D) == [2, 0]
    assert redundant_columns(D, min_anchors=0) == []
    # Block by block: a shared column is never judged against a study's columns.
    W = np.zeros((6, 4))
    W[0:4, 0] = W[0:3, 1] = 1.0     # shared block: column 1 lies inside column 0
    W[0:4, 2] = W[4:6, 3] = 1.0     # study block: column 2 repeats shared column 0, but on its own block
    assert block_redundant(W, n_shared=2, n_specific=[2]) == [1]


def test_redundant_columns_are_zeroed_in_the_report_and_survive_saving(tmp_path):
    from mssvae import MSSVAE
    from mssvae.simulate import simulate_rnaseq

    sim = simulate_rnaseq(n_samples=300, n_features=60, proportions=(0.5, 0.5), n_shared=2, n_specific=1,
                          random_state=0)
    kw = dict(likelihood="nb", n_shared=4, n_specific=2, hidden=(16, 16), max_epochs=30, batch_size=128,
              merge_dependent=None)
    raw = MSSVAE(min_anchors=0, **kw).fit(sim.X, sim.study)
    kept = MSSVAE(**kw).fit(sim.X, sim.study)                 # min_anchors=2 (default)
    assert raw.redundant_factors_ == [] and kept.redundant_factors_, "the short fit has no redundant column"
    W_raw = np.concatenate([raw.W_shared_] + list(raw.W_specific_.values()), 1)
    W_new = np.concatenate([kept.W_shared_] + list(kept.W_specific_.values()), 1)
    gone = kept.redundant_columns_
    assert [kept.factor_names_[c] for c in gone] == kept.redundant_factors_
    assert not W_new[:, gone].any()
    others = [c for c in range(W_raw.shape[1]) if c not in gone]
    np.testing.assert_array_equal(W_new[:, others], W_raw[:, others])
    # every set-aside gene set lay (but for at most one gene) inside the union of its block's others
    S = np.abs(W_raw) > 0.5
    for c in gone:
        block = range(0, 4) if c < 4 else range(4 + 2 * ((c - 4) // 2), 6 + 2 * ((c - 4) // 2))
        rest = S[:, [b for b in block if b != c and b not in gone[:gone.index(c)]]].any(1)
        assert (S[:, c] & ~rest).sum() < 2
    kept.save(tmp_path / "m")
    again = MSSVAE.load(tmp_path / "m")
    assert again.redundant_factors_ == kept.redundant_factors_
    np.testing.assert_array_equal(again.W_shared_, kept.W_shared_)


def test_dependence_r2_uses_the_k_nearest_samples_as_its_definition_says():
    # the sorted-window search gives the R² of the full distance matrix (distinct values)
    rng = np.random.default_rng(1)
    for n in (5, 40, 300):
        x = rng.normal(size=n)
        y = np.sin(2 * x) + rng.normal(scale=0.3, size=n)
        dist = np.abs(x[:, None] - x[None, :])
        np.fill_diagonal(dist, np.inf)
        residual = y - y[np.argsort(dist, axis=1)[:, :3]].mean(1)
        assert dependence_r2(x, y) == pytest.approx(1 - (residual**2).sum() / ((y - y.mean()) ** 2).sum(), abs=1e-12)
    assert dependence_r2(np.ones(10), rng.normal(size=10)) == -np.inf   # a constant predicts nothing


def test_a_factor_of_two_factors_jointly_is_predicted_from_the_pair_and_not_from_one():
    from mssvae.merging import joint_dependence_r2

    rng = np.random.default_rng(0)
    z1, z2, w = rng.normal(size=(3, 200))
    both = np.sin(3 * np.pi / 4 * z1) + np.sin(3 * np.pi / 4 * z2)   # the sin genes two modules share
    assert joint_dependence_r2(np.c_[z1, z2], both) > 0.8
    assert joint_dependence_r2(np.c_[z1, w], both) < 0.5 and dependence_r2(z1, both) < 0.5
    assert joint_dependence_r2(np.c_[z1, z2], w) < 0.1
    # The definition: the mean of the k nearest other samples in the unit-variance plane.
    X = np.c_[z1, 3 * z2][:40]
    y = both[:40]
    Xs = X / X.std(0)
    d = ((Xs[:, None] - Xs[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    pred = y[np.argsort(d, 1)[:, :3]].mean(1)
    assert joint_dependence_r2(X, y) == pytest.approx(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_a_composite_column_is_folded_into_both_factors_it_is_a_function_of():
    """Two modules that share genes: a small column whose factor mixes theirs gives its genes to both."""
    from mssvae.merging import block_composites, composite_columns, fold_composites

    rng = np.random.default_rng(1)
    n, G = 150, 130
    z = rng.normal(size=(n, 3))
    Z = np.c_[z, z[:, 0] + z[:, 1] + 0.05 * rng.normal(size=n)]   # columns a, b, d and c = mix of a and b
    W = np.zeros((G, 4))
    W[:40, 0], W[40:80, 1], W[80:120, 2], W[120:, 3] = 2.0, 3.0, 2.5, 4.0   # c holds 10 genes of its own
    W[120:125, 0] = 0.3                                                      # below the support threshold
    S = np.abs(W) > 0.5
    assert composite_columns(Z, S, [0, 1, 2, 3]) == [(3, 0, 1)]
    assert composite_columns(Z, S, [0, 2, 3]) == []          # one parent is not enough
    S_big = S.copy()
    S_big[:30, 3] = True        # 40 genes, as many as a parent: more likely a factor of its own
    assert composite_columns(Z, S_big, [0, 1, 2, 3]) == []
    P = np.where(S, 0.9, 0.01)
    W2, P2 = fold_composites(W, [(3, 0, 1)], P)
    assert not W2[:, 3].any() and not P2[:, 3].any()
    np.testing.assert_array_equal(np.abs(W2[:, 0]) > 0.5, S[:, 0] | S[:, 3])
    np.testing.assert_array_equal(np.abs(W2[:, 1]) > 0.5, S[:, 1] | S[:, 3])
    np.testing.assert_array_equal(W2[120:, 0], 4.0)
    np.testing.assert_array_equal(P2[120:, 1], 0.9)
    np.testing.assert_array_equal(W2[:, 2], W[:, 2])
    # Block by block: the same factors as a study's block, read over that study's samples only; the
    # shared block (first 2 columns, here unrelated) is left alone.
    Zg = np.c_[rng.normal(size=(2 * n, 2)), np.r_[Z, rng.normal(size=(n, 4))]]
    Wg = np.c_[np.zeros((G, 2)), W]
    Wg[:40, 0] = Wg[40:80, 1] = 1.0
    codes = np.r_[np.zeros(n, int), np.ones(n, int)]
    assert block_composites(Zg, codes, Wg, 2, [4]) == [(5, 2, 3)]
    Wg2 = np.c_[Wg, np.zeros((G, 4))]
    Wg2[:, 2:] = 0
    Wg2[:, 6:] = W
    assert block_composites(Zg[:, [0, 1, 2, 3, 4, 5] + [2, 3, 4, 5]], codes, Wg2, 2, [4, 4]) == []  # noise in study 2


def test_folded_composites_are_reported_and_survive_saving(tmp_path):
    from mssvae import MSSVAE

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 12)).astype(np.float32)
    study = np.repeat(["a", "b"], 40)
    model = MSSVAE(n_shared=2, n_specific=3, hidden=(8, 8), max_epochs=3, batch_size=40, random_state=0).fit(X, study)
    W = model.module_.W.detach().numpy().astype(float)
    c, a, b = 2 + 3 + 2, 2 + 3 + 0, 2 + 3 + 1          # study b's columns: 2 folded into 0 and 1
    model.composite_columns_ = [[c, a, b]]
    model.redundant_columns_, model.merged_groups_ = [], []
    model._set_fitted_attributes()
    assert model.composite_factors_ == [["b_2", "b_0", "b_1"]]
    Wb = model.W_specific_["b"]
    assert not Wb[:, 2].any()
    for col, parent in ((0, a), (1, b)):
        take = np.abs(W[:, c]) > np.abs(W[:, parent])
        np.testing.assert_allclose(Wb[:, col], np.where(take, W[:, c], W[:, parent]))
    model.save(tmp_path / "m")
    again = MSSVAE.load(tmp_path / "m")
    assert again.composite_factors_ == model.composite_factors_
    np.testing.assert_array_equal(again.W_specific_["b"], Wb)
    # Users see it: the fit summary of `mssvae fit` and AnnData's uns.
    import anndata

    from mssvae.cli import _fit_summary
    from mssvae.io import write_anndata

    assert "folded (a function of two factors jointly): b_2 into b_0 and b_1" in _fit_summary(model, 1.0)
    adata = anndata.AnnData(X, obs={"study": study})
    write_anndata(model, adata, "study")
    assert list(adata.uns["mssvae"]["composite_factors"]) == ["b_2>b_0+b_1"]
