"""Merging factors that are functions of one another (mssvae.merging)."""

import numpy as np

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
