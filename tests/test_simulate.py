"""Claims of §4.1 / §4.2 about the simulated data, one test per claim."""

import numpy as np
import pytest

from mssvae.simulate import (
    SimulatedData,
    _biological_cv,
    _negative_binomial,
    block_masks,
    nonlinear_features,
    simulate_gaussian,
    simulate_rnaseq,
)

GAUSS = {"n_per_study": 200, "n_studies": 3, "n_features": 30, "n_shared": 3, "n_specific": 1}
RNA = {"n_samples": 300, "n_features": 400, "proportions": (0.3, 0.3, 0.4), "n_shared": 4, "n_specific": 2}


@pytest.fixture(scope="module")
def gauss():
    return simulate_gaussian(**GAUSS, random_state=1)


@pytest.fixture(scope="module")
def rna():
    return simulate_rnaseq(**RNA, random_state=1)


# ---------------------------------------------------------------------------- shapes / layout


def test_gaussian_shapes_and_layout(gauss):
    N, G = 600, 30
    assert isinstance(gauss, SimulatedData)
    assert gauss.X.shape == (N, G) and gauss.X.dtype == np.float32
    assert gauss.W_shared.shape == (G, 3) and gauss.Z_shared.shape == (N, 3)
    assert list(gauss.W_specific) == ["study1", "study2", "study3"]
    for lab in gauss.W_specific:
        assert gauss.W_specific[lab].shape == (G, 1)
        assert gauss.Z_specific[lab].shape == ((gauss.study == lab).sum(), 1)
    # samples ordered study by study
    assert list(gauss.study[[0, 199, 200, 399, 400, 599]]) == ["study1"] * 2 + ["study2"] * 2 + ["study3"] * 2
    assert gauss.library_size is None
    assert gauss.params["n_features"] == 30


def test_rnaseq_shapes_and_layout(rna):
    assert rna.X.shape == (300, 400) and rna.X.dtype == np.int64
    sizes = [(rna.study == lab).sum() for lab in ("study1", "study2", "study3")]
    assert sizes == [90, 90, 120]
    assert np.all(rna.study[:-1] <= rna.study[1:])  # sorted = ordered study by study here
    assert rna.W_shared.shape == (400, 4) and rna.Z_shared.shape == (300, 4)
    for lab, n in zip(rna.W_specific, sizes):
        assert rna.W_specific[lab].shape == (400, 2) and rna.Z_specific[lab].shape == (n, 2)
    assert rna.library_size.shape == (300,)


def test_study_sizes_sum_to_n_samples_when_proportions_do_not_divide():
    sim = simulate_rnaseq(
        n_samples=101, n_features=60, proportions=(1 / 3, 1 / 3, 1 / 3), n_shared=2, n_specific=1
    )
    assert sim.X.shape[0] == 101
    assert sorted(np.unique(sim.study, return_counts=True)[1]) == [33, 34, 34]


# ---------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("fn,kw", [(simulate_gaussian, GAUSS), (simulate_rnaseq, RNA)])
def test_same_seed_same_data_other_seed_differs(fn, kw):
    a, b, c = fn(**kw, random_state=5), fn(**kw, random_state=5), fn(**kw, random_state=6)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.W_shared, b.W_shared)
    assert not np.array_equal(a.X, c.X)


# ---------------------------------------------------------------------------- masks


@pytest.mark.parametrize("sim_name", ["gauss", "rna"])
def test_every_factor_has_two_anchor_features_in_every_study(sim_name, request):
    """Assumption 1: each factor has >= 2 features loading on it alone in [W^(S) | W^(m)]."""
    sim = request.getfixturevalue(sim_name)
    for lab, Wm in sim.W_specific.items():
        S = np.concatenate([sim.W_shared, Wm], axis=1) != 0
        anchors = S & (S.sum(axis=1) == 1)[:, None]
        assert np.all(anchors.sum(axis=0) >= 2), lab


def test_gaussian_block_design(gauss):
    S = np.concatenate([gauss.W_shared] + list(gauss.W_specific.values()), axis=1) != 0  # (30, 6)
    # contiguous blocks, in order shared then study by study
    first = S.argmax(axis=0)
    assert np.all(np.diff(first) > 0)
    for k in range(S.shape[1]):
        idx = np.flatnonzero(S[:, k])
        assert np.all(np.diff(idx) == 1)
    # study-specific supports are disjoint between studies
    spec = [W != 0 for W in gauss.W_specific.values()]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not np.any(spec[a].any(axis=1) & spec[b].any(axis=1))
    # some features load on two factors, few features load on nothing
    assert (S.sum(axis=1) == 2).sum() >= 2
    assert (S.sum(axis=1) == 0).sum() < S.shape[1]


def test_gaussian_weights_distribution():
    sim = simulate_gaussian(n_per_study=10, random_state=0)  # paper sizes for W: G=100, 8+3*2
    ws = sim.W_shared[sim.W_shared != 0]
    wm = np.concatenate([W[W != 0] for W in sim.W_specific.values()])
    assert abs(ws.mean() - 8) < 0.05 and abs(ws.std() - 0.1) < 0.03
    assert abs(wm.mean() - 10) < 0.05 and abs(wm.std() - 0.1) < 0.03
    assert sim.W_shared.shape == (100, 8)


def test_rnaseq_masks_are_mostly_block_with_five_percent_off_block():
    S_block, _ = block_masks(2000, 5, 2, 3, overlap=0)
    sim = simulate_rnaseq(n_samples=30, n_features=2000, n_shared=5, n_specific=2, random_state=2)
    S = sim.W_shared != 0
    assert np.all(S[S_block])  # the whole block is on
    off = S[~S_block].reshape(-1)
    assert off.mean() == pytest.approx(0.05, abs=0.005)
    for W in sim.W_specific.values():
        assert (W != 0).mean() < 0.25  # still sparse columns
    ws = sim.W_shared[S]
    wm = np.concatenate([W[W != 0] for W in sim.W_specific.values()])
    assert abs(ws.mean() - 10) < 0.05 and abs(wm.mean() - 12) < 0.05


def test_off_block_fraction_zero_gives_pure_blocks():
    sim = simulate_rnaseq(n_samples=30, n_features=200, n_shared=3, n_specific=1, off_block_fraction=0.0)
    S = np.concatenate([sim.W_shared] + list(sim.W_specific.values()), axis=1) != 0
    assert np.all(S.sum(axis=1) <= 1)


# ---------------------------------------------------------------------------- nonlinearity


def test_every_third_feature_is_quadratic_in_the_factors():
    sim = simulate_gaussian(
        n_per_study=400, n_studies=1, n_features=30, n_shared=3, n_specific=1, random_state=3
    )
    Z = np.concatenate([sim.Z_shared, sim.Z_specific["study1"]], axis=1)
    S = np.concatenate([sim.W_shared, sim.W_specific["study1"]], axis=1) != 0
    nonlin = nonlinear_features(30)
    assert np.array_equal(np.flatnonzero(nonlin), np.arange(2, 30, 3))  # j ≡ 0 mod 3, 1-based
    anchors = np.flatnonzero(S.sum(axis=1) == 1)
    for j in anchors:
        k = np.flatnonzero(S[j])[0]
        r_lin = abs(np.corrcoef(sim.X[:, j], Z[:, k])[0, 1])
        r_sq = abs(np.corrcoef(sim.X[:, j], Z[:, k] ** 2)[0, 1])
        if nonlin[j]:
            assert r_lin < 0.2 and r_sq > 0.9, j
        else:
            assert r_lin > 0.9 and r_sq < 0.2, j


def test_every_third_gene_is_sinusoidal_in_the_factors():
    sim = simulate_rnaseq(
        n_samples=600,
        n_features=300,
        proportions=(1.0,),
        n_shared=3,
        n_specific=1,
        off_block_fraction=0.0,
        random_state=4,
    )
    Z = np.concatenate([sim.Z_shared, sim.Z_specific["study1"]], axis=1)
    S = np.concatenate([sim.W_shared, sim.W_specific["study1"]], axis=1) != 0
    logx = np.log1p(sim.X / sim.library_size[:, None] * 1e6)
    nonlin = np.arange(300) % 3 == 2  # paper: j ≡ 0 (mod 3) with 1-based j
    r_lin, r_sin = [], []
    for j in np.flatnonzero(S.any(axis=1)):
        k = np.flatnonzero(S[j])[0]
        r_lin.append(abs(np.corrcoef(logx[:, j], Z[:, k])[0, 1]))
        r_sin.append(abs(np.corrcoef(logx[:, j], np.sin(3 * np.pi / 4 * Z[:, k]))[0, 1]))
    nl = nonlin[S.any(axis=1)]
    r_lin, r_sin = np.array(r_lin), np.array(r_sin)
    # sin(3π/4 z) is monotone only on |z| < 2/3: its genes track sin(c z) better than z
    assert np.median(r_sin[nl] - r_lin[nl]) > 0.3
    assert np.median(r_lin[~nl] - r_sin[~nl]) > 0.15
    assert np.median(r_lin[~nl]) > 0.7


# ---------------------------------------------------------------------------- counts model


def test_rnaseq_counts_are_nonnegative_integers(rna):
    assert np.issubdtype(rna.X.dtype, np.integer)
    assert rna.X.min() >= 0
    assert rna.X.sum() > 0


def test_library_sizes_on_exp12_scale(rna):
    log_l = np.log(rna.library_size)
    assert abs(log_l.mean() - 12) < 0.15 and abs(log_l.std() - 0.5) < 0.1
    # counts per sample sum to about the library size (mu' sums to one, NB is mean-unbiased)
    ratio = rna.X.sum(axis=1) / rna.library_size
    assert abs(np.median(ratio) - 1) < 0.05


def test_negative_binomial_with_bcv_has_the_stated_mean_variance_trend():
    """Var X = mu + mu^2 E[BCV^2] with E[BCV^2] = (phi + 1/sqrt(mu))^2 nu/(nu-2)."""
    rng = np.random.default_rng(0)
    mu = np.full(200_000, 100.0)
    bcv = _biological_cv(rng, mu, 0.1, 60)
    x = _negative_binomial(rng, mu, 1.0 / bcv**2)
    assert np.issubdtype(x.dtype, np.integer)
    expected_var = 100 + 100**2 * (0.1 + 0.1) ** 2 * 60 / 58
    assert x.mean() == pytest.approx(100, rel=0.01)
    assert x.var() == pytest.approx(expected_var, rel=0.05)
    assert x.var() > 4 * x.mean()  # far from Poisson


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"n_per_study": 0}, "n_per_study"),
        ({"n_studies": -1}, "n_studies"),
        ({"n_shared": 0}, "n_shared"),
        ({"n_specific": 1.5}, "n_specific"),
        ({"noise_var": 0.0}, "noise_var"),
        ({"factor_sd": -1}, "factor_sd"),
        ({"n_features": 10, "n_shared": 8, "n_specific": 2}, "n_features"),
    ],
)
def test_gaussian_bad_arguments_raise(kw, name):
    with pytest.raises(ValueError, match=name):
        simulate_gaussian(**{"n_per_study": 5, **kw})


@pytest.mark.parametrize(
    "kw,name",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"proportions": (0.5, 0.6)}, "proportions"),
        ({"proportions": (1.2, -0.2)}, "proportions"),
        ({"off_block_fraction": 1.0}, "off_block_fraction"),
        ({"lib_sd": 0.0}, "lib_sd"),
        ({"bcv_df": 0}, "bcv_df"),
        ({"bcv_phi": -0.1}, "bcv_phi"),
        ({"n_features": 20}, "n_features"),
    ],
)
def test_rnaseq_bad_arguments_raise(kw, name):
    with pytest.raises(ValueError, match=name):
        simulate_rnaseq(**{"n_samples": 30, "n_features": 200, **kw})


def test_simulated_data_is_frozen(gauss):
    with pytest.raises(AttributeError):
        gauss.X = None
