"""App. C.1 metrics on hand-made cases whose scores can be computed by hand."""

import itertools

import numpy as np
import pytest
from scipy.linalg import hadamard

from mssvae.metrics import (
    active_columns,
    consensus,
    dci_disentanglement,
    evaluate,
    evaluate_simulation,
    find_replicated_specific,
    jaccard_matrix,
    merge_replicated_specific,
    recovery,
    relevance,
    support,
)
from mssvae.simulate import simulate_gaussian


def cols(G, *sets):
    """Boolean (G, len(sets)) matrix whose column k is the indicator of sets[k]."""
    S = np.zeros((G, len(sets)), dtype=bool)
    for k, idx in enumerate(sets):
        S[list(idx), k] = True
    return S


def scores(S_true, S_est):
    return consensus(S_true, S_est), relevance(S_true, S_est), recovery(S_true, S_est)


TRUE = cols(12, range(4), range(4, 8), range(8, 12))


# ---------------------------------------------------------------------------- support rule


def test_support_is_abs_greater_than_half():
    W = np.array([[0.5, -0.51], [0.49, 2.0], [-3.0, 0.0]])
    np.testing.assert_array_equal(support(W), [[False, True], [False, True], [True, False]])
    np.testing.assert_array_equal(support(W, threshold=2.5), [[False, False], [False, False], [True, False]])
    assert support(np.array([[True, False]])).tolist() == [[True, False]]


def test_active_columns_drops_empty_and_dense_columns():
    S = cols(10, range(2), [], range(3), range(10))
    np.testing.assert_array_equal(active_columns(S), [0, 2, 3])
    np.testing.assert_array_equal(active_columns(S, max_density=0.25), [0])
    np.testing.assert_array_equal(active_columns(S, max_density=0.3), [0, 2])


# ---------------------------------------------------------------------------- Jaccard


def test_jaccard_matrix_matches_set_definition():
    A = cols(6, {0, 1, 2}, {3, 4})
    B = cols(6, {1, 2, 3}, {4}, set())
    expected = np.array([[2 / 4, 0, 0], [1 / 4, 1 / 2, 0]])
    np.testing.assert_allclose(jaccard_matrix(A, B), expected)


def test_jaccard_matrix_rejects_mismatched_rows():
    with pytest.raises(ValueError):
        jaccard_matrix(np.ones((3, 1), bool), np.ones((4, 1), bool))


# ---------------------------------------------------------------------------- Eq. C.2-C.4


def test_perfect_estimate_scores_one():
    assert scores(TRUE, TRUE.copy()) == (1.0, 1.0, 1.0)


def test_permuted_columns_score_one():
    assert scores(TRUE, TRUE[:, [2, 0, 1]]) == (1.0, 1.0, 1.0)


def test_split_column_lowers_recovery_relevance_and_consensus():
    # true A={0..5}, B={6..9}; estimate splits A into {0,1,2} and {3,4,5}
    S_true = cols(10, range(6), range(6, 10))
    S_est = cols(10, {0, 1, 2}, {3, 4, 5}, range(6, 10))
    c, rel, rec = scores(S_true, S_est)
    assert rel == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert rec == pytest.approx((0.5 + 1) / 2)
    assert c == pytest.approx((0.5 + 1) / 3)  # one half is unmatched; divide by max(2, 3)


def test_merged_columns_lower_recovery_relevance_and_consensus():
    # true A={0,1,2}, B={3,4,5}, C={6..9}; estimate merges A and B
    S_true = cols(10, range(3), range(3, 6), range(6, 10))
    S_est = cols(10, range(6), range(6, 10))
    c, rel, rec = scores(S_true, S_est)
    assert rel == pytest.approx((0.5 + 1) / 2)
    assert rec == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert c == pytest.approx((0.5 + 1) / 3)


def test_consensus_equals_best_one_to_one_matching_by_brute_force():
    rng = np.random.default_rng(0)
    for k_true, k_est in [(3, 3), (3, 4), (4, 2)]:
        for _ in range(10):
            a, b = rng.random((15, k_true)) < 0.4, rng.random((15, k_est)) < 0.4
            a[0], b[0] = True, True  # no empty columns
            J = jaccard_matrix(a, b)
            small, large = sorted([k_true, k_est])
            Jt = J if k_true <= k_est else J.T
            perms = itertools.permutations(range(large), small)
            best = max(Jt[np.arange(small), list(p)].sum() for p in perms)
            assert consensus(a, b) == pytest.approx(best / large)


def test_empty_estimate_scores_zero():
    assert scores(TRUE, np.zeros((12, 0), bool)) == (0.0, 0.0, 0.0)
    assert scores(TRUE, np.zeros((12, 4), bool)) == (0.0, 0.0, 0.0)


def test_all_zero_estimated_columns_are_ignored():
    padded = np.concatenate([TRUE, np.zeros((12, 5), bool)], axis=1)
    assert scores(TRUE, padded) == (1.0, 1.0, 1.0)


def test_scores_lie_in_unit_interval_for_random_supports():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random((30, 4)) < 0.3, rng.random((30, 6)) < 0.3
        assert all(0.0 <= s <= 1.0 for s in scores(a, b))


# ---------------------------------------------------------------------------- disentanglement


@pytest.fixture(scope="module")
def factors():
    return np.random.default_rng(0).normal(size=(600, 4))


def test_dci_identity_is_one(factors):
    assert dci_disentanglement(factors, factors) > 0.95


def test_dci_rotation_mixing_all_factors_is_low(factors):
    H = hadamard(4) / 2.0  # orthogonal, every entry ±1/2: maximal mixing
    assert dci_disentanglement(factors, factors @ H) < 0.5


def test_dci_invariant_to_permutation_and_monotone_transform(factors):
    Z_est = np.exp(factors[:, [2, 0, 3, 1]])
    Z_est[:, 1] = Z_est[:, 1] ** 3
    assert dci_disentanglement(factors, Z_est) > 0.95


def test_dci_irrelevant_extra_factor_does_not_count(factors):
    rng = np.random.default_rng(1)
    Z_est = np.concatenate([factors, np.zeros((600, 1)), rng.normal(size=(600, 1))], axis=1)
    assert dci_disentanglement(factors, Z_est) > 0.9


def test_dci_is_seeded(factors):
    Z_est = factors @ hadamard(4) / 2.0 + 0.3 * factors
    a = dci_disentanglement(factors, Z_est, random_state=3, max_samples=300)
    assert a == dci_disentanglement(factors, Z_est, random_state=3, max_samples=300)


def test_dci_single_true_factor_and_constant_estimate():
    z = np.random.default_rng(0).normal(size=(100, 1))
    assert dci_disentanglement(z, np.concatenate([z, -z], axis=1)) == 1.0
    Z = np.random.default_rng(0).normal(size=(100, 3))
    assert dci_disentanglement(Z, np.ones((100, 2))) == 0.0


# ---------------------------------------------------------------------------- evaluate


@pytest.fixture(scope="module")
def sim():
    return simulate_gaussian(
        n_per_study=150, n_studies=3, n_features=30, n_shared=3, n_specific=1, random_state=0
    )


def z_tilde(sim, pad_shared=0):
    """The true factors in the model's z-tilde layout (+ optional all-zero shared columns)."""
    labels = list(sim.W_specific)
    blocks = [sim.Z_shared, np.zeros((sim.X.shape[0], pad_shared))]
    for lab in labels:
        Zm = np.zeros((sim.X.shape[0], sim.Z_specific[lab].shape[1]))
        Zm[sim.study == lab] = sim.Z_specific[lab]
        blocks.append(Zm)
    return np.concatenate(blocks, axis=1)


def test_evaluate_truth_against_itself(sim):
    W_sh = np.concatenate([sim.W_shared, np.zeros((30, 2))], axis=1)  # unused columns are inactive
    res = evaluate_simulation(
        sim, W_sh, sim.W_specific, Z_est=z_tilde(sim, pad_shared=2), dci_kwargs={"max_samples": 150}
    )
    for key in (
        "shared_consensus",
        "shared_relevance",
        "shared_recovery",
        "group_consensus",
        "group_relevance",
        "group_recovery",
    ):
        assert res[key] == 1.0, key
    assert res["dci"] > 0.9
    assert res["n_shared_est"] == 3
    assert res["n_specific_est"] == {"study1": 1, "study2": 1, "study3": 1}


def test_evaluate_without_factors_gives_nan_dci(sim):
    res = evaluate(sim.W_shared, sim.W_specific, sim.W_shared, sim.W_specific)
    assert np.isnan(res["dci"]) and res["shared_consensus"] == 1.0


def test_evaluate_group_metrics_average_over_studies(sim):
    est = dict(sim.W_specific)
    est["study2"] = np.zeros_like(est["study2"])  # study 2 estimates nothing
    res = evaluate(sim.W_shared, sim.W_specific, sim.W_shared, est)
    assert res["group_consensus"] == pytest.approx(2 / 3)
    assert res["group_recovery"] == pytest.approx(2 / 3)
    assert res["n_specific_est"]["study2"] == 0


def test_evaluate_max_density_filters_dense_estimated_columns(sim):
    dense = np.full((30, 1), 3.0)
    W_sh = np.concatenate([sim.W_shared, dense], axis=1)
    loose = evaluate(sim.W_shared, sim.W_specific, W_sh, sim.W_specific)
    strict = evaluate(sim.W_shared, sim.W_specific, W_sh, sim.W_specific, max_density=0.25)
    assert loose["shared_consensus"] == pytest.approx(3 / 4) and loose["n_shared_est"] == 4
    assert strict["shared_consensus"] == 1.0 and strict["n_shared_est"] == 3


def test_evaluate_threshold_applies_to_estimates(sim):
    W_sh = sim.W_shared + 0.3 * (sim.W_shared == 0)  # small non-zeros are below 0.5
    assert evaluate(sim.W_shared, sim.W_specific, W_sh, sim.W_specific)["shared_consensus"] == 1.0
    W_sh = sim.W_shared + 0.7 * (sim.W_shared == 0)
    assert evaluate(sim.W_shared, sim.W_specific, W_sh, sim.W_specific)["shared_consensus"] < 0.5


def test_evaluate_rejects_wrong_z_layout_and_missing_study(sim):
    with pytest.raises(ValueError, match="Z_est"):
        evaluate_simulation(sim, sim.W_shared, sim.W_specific, Z_est=np.zeros((450, 5)))
    with pytest.raises(ValueError, match="study2"):
        evaluate(sim.W_shared, sim.W_specific, sim.W_shared, {"study1": sim.W_specific["study1"]})


# ---------------------------------------------------------------------------- Fig. 6 post-processing


def fig6_case(sim):
    """Shared factor 0 estimated as one column in each study's W^(m) instead of W^(S)."""
    W_sh = sim.W_shared[:, 1:]
    W_sp = {
        lab: np.concatenate([W, sim.W_shared[:, :1] * (1 + 0.01 * m)], axis=1)
        for m, (lab, W) in enumerate(sim.W_specific.items())
    }
    return W_sh, W_sp


def test_find_replicated_specific_detects_fig6_failure(sim):
    _W_sh, W_sp = fig6_case(sim)
    assert find_replicated_specific(W_sp) == [{"study1": 1, "study2": 1, "study3": 1}]


def test_find_replicated_specific_negative_cases(sim):
    assert find_replicated_specific(sim.W_specific) == []  # true specific blocks are disjoint
    _W_sh, W_sp = fig6_case(sim)
    W_sp["study3"] = W_sp["study3"][:, :1]  # present in only two studies: not shared
    assert find_replicated_specific(W_sp) == []
    assert find_replicated_specific({"study1": sim.W_shared}) == []


def test_find_replicated_specific_respects_min_jaccard(sim):
    _W_sh, W_sp = fig6_case(sim)
    W_sp["study2"][:, 1] = 0.0
    W_sp["study2"][:7, 1] = 8.0  # same block as factor 0 but one row shorter: J = 7/8
    assert len(find_replicated_specific(W_sp, min_jaccard=0.8)) == 1
    assert find_replicated_specific(W_sp, min_jaccard=0.9) == []


def test_merge_replicated_specific_repairs_fig6_failure(sim):
    W_sh, W_sp = fig6_case(sim)
    before = evaluate(sim.W_shared, sim.W_specific, W_sh, W_sp)
    W_sh2, W_sp2 = merge_replicated_specific(W_sh, W_sp)
    assert W_sh2.shape == (30, 3) and all(W_sp2[lab].shape == (30, 2) for lab in W_sp2)
    np.testing.assert_allclose(W_sh2[:, 2], np.mean([W[:, 1] for W in W_sp.values()], axis=0))
    assert all(np.all(W_sp2[lab][:, 1] == 0) for lab in W_sp2)
    assert W_sp["study1"][:, 1].any()  # inputs untouched
    after = evaluate(sim.W_shared, sim.W_specific, W_sh2, W_sp2)
    assert before["shared_consensus"] < 1.0 and before["group_consensus"] < 1.0
    assert after["shared_consensus"] == 1.0 and after["group_consensus"] == 1.0


def test_merge_replicated_specific_rearranges_z_tilde(sim):
    W_sh, W_sp = fig6_case(sim)
    N = sim.X.shape[0]
    # z-tilde of the failed fit: [shared 1,2 | study1 (xi, z0) | study2 (xi, z0) | study3 (xi, z0)]
    blocks = [sim.Z_shared[:, 1:]]
    for lab in W_sp:
        Zm = np.zeros((N, 2))
        Zm[sim.study == lab] = np.column_stack([sim.Z_specific[lab][:, 0], sim.Z_shared[sim.study == lab, 0]])
        blocks.append(Zm)
    W_sh2, W_sp2, Z2 = merge_replicated_specific(W_sh, W_sp, Z_est=np.concatenate(blocks, axis=1))
    assert Z2.shape == (N, 3 + 6)
    np.testing.assert_allclose(Z2[:, 2], sim.Z_shared[:, 0])
    res = evaluate_simulation(sim, W_sh2, W_sp2, Z_est=Z2, dci_kwargs={"max_samples": 150})
    assert res["shared_consensus"] == 1.0 and res["dci"] > 0.9


def test_merge_without_replicates_is_identity(sim):
    W_sh2, W_sp2 = merge_replicated_specific(sim.W_shared, sim.W_specific)
    np.testing.assert_array_equal(W_sh2, sim.W_shared)
    for lab in sim.W_specific:
        np.testing.assert_array_equal(W_sp2[lab], sim.W_specific[lab])


def test_merge_duplicate_columns_collapses_same_support_columns_only():
    from mssvae.metrics import merge_duplicate_columns

    W = np.zeros((10, 4))
    W[0:4, 0] = 2.0
    W[0:4, 1] = 1.0  # duplicate of column 0
    W[5:9, 2] = 3.0  # a different program
    # column 3 is empty
    out = merge_duplicate_columns(W)
    assert out.shape == (10, 2)
    assert np.array_equal(support(out)[:, 0], support(W)[:, 0]) or np.array_equal(support(out)[:, 1], support(W)[:, 0])
    W[3, 1] = 0.0  # Jaccard 3/4 < 0.9: no longer a duplicate
    assert merge_duplicate_columns(W).shape == (10, 3)
