"""Bad input gets a clear ValueError/TypeError naming the argument (issue: core model)."""

import numpy as np
import pytest
from scipy import sparse

from mssvae import MSSVAE

FAST = dict(n_shared=2, n_specific=1, max_epochs=1, batch_size=16, hidden=(8, 8))


def data(n=12, G=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, G)), np.repeat(["a", "b"], n // 2)


@pytest.fixture(scope="module")
def fitted():
    X, s = data()
    return MSSVAE(**FAST).fit(X, s)


@pytest.mark.parametrize(
    "mutate, exc, pattern",
    [
        (lambda X, s: (np.where(np.arange(X.size).reshape(X.shape) == 7, np.nan, X), s), ValueError, "`X`.*NaN"),
        (lambda X, s: (np.where(np.arange(X.size).reshape(X.shape) == 3, np.inf, X), s), ValueError, "`X`.*inf"),
        (lambda X, s: (X[:, 0], s), ValueError, "`X` must be 2-d"),
        (lambda X, s: (X[None], s), ValueError, "`X` must be 2-d"),
        (lambda X, s: (X[:0], s[:0]), ValueError, "`X` is empty"),
        (lambda X, s: (np.full(X.shape, "a"), s), TypeError, "`X` must be numeric"),
        (lambda X, s: (X, s[:-1]), ValueError, "`study` has length 11"),
        (lambda X, s: (X, np.array(["a"] * 11 + ["b"])), ValueError, "at least 2 samples"),
        (lambda X, s: (X, np.array(["a"] * 12)), ValueError, "at least 2 studies"),
        (lambda X, s: (X, np.array(["a"] * 6 + [None] * 6, dtype=object)), ValueError, "`study`.*missing"),
    ],
)
def test_bad_data_is_refused_with_a_named_argument(mutate, exc, pattern):
    X, s = mutate(*data())
    with pytest.raises(exc, match=pattern):
        MSSVAE(**FAST).fit(X, s)


@pytest.mark.parametrize("bad, pattern", [(-1.0, "negative"), (0.5, "non-integer")])
def test_nb_needs_raw_counts(bad, pattern):
    X = np.random.default_rng(0).poisson(3, size=(12, 5)).astype(float)
    X[2, 3] = bad
    with pytest.raises(ValueError, match=f"`X`.*{pattern}"):
        MSSVAE(likelihood="nb", **FAST).fit(X, np.repeat(["a", "b"], 6))


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(max_epochs=0), ValueError, "`max_epochs` must be positive"),
        (dict(batch_size=-4), ValueError, "`batch_size` must be positive"),
        (dict(lr=0.0), ValueError, "`lr` must be a positive"),
        (dict(lr_W=-1.0), ValueError, "`lr_W` must be a positive"),
        (dict(hidden=(8, 0)), ValueError, r"`hidden\[1\]` must be positive"),
        (dict(hidden=(8,)), ValueError, "`hidden` must have 2 entries"),
        (dict(n_shared=0, n_specific=0), ValueError, "both 0"),
        (dict(n_shared=-1), ValueError, "`n_shared` must be non-negative"),
        (dict(n_specific={"a": 1}), ValueError, r"`n_specific` is missing studies \['b'\]"),
        (dict(likelihood="poisson"), ValueError, "`likelihood` must be one of"),
        (dict(max_epochs=2.5), TypeError, "`max_epochs` must be an integer"),
        (dict(prior_weight=0), ValueError, "`prior_weight`"),
    ],
)
def test_bad_settings_are_refused_with_a_named_argument(kwargs, exc, pattern):
    X, s = data()
    with pytest.raises(exc, match=pattern):
        MSSVAE(**{**FAST, **kwargs}).fit(X, s)


def test_transform_refuses_other_features_and_unknown_studies(fitted):
    X, s = data()
    with pytest.raises(ValueError, match="`X` has 4 features but the model was fitted on 5"):
        fitted.transform(X[:, :4], s)
    with pytest.raises(ValueError, match=r"`study` has labels the model was not fitted on: \['zz'\]"):
        fitted.transform(X, np.array(["zz"] * 12))


def test_unfitted_model_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        MSSVAE().transform(*data())


def test_accepted_inputs_sparse_dataframe_dict_and_constant_feature():
    import pandas as pd

    X, s = data()
    X[:, 2] = 1.0  # a constant feature is kept: its noise variance just goes to the prior's floor
    m = MSSVAE(**{**FAST, "n_specific": {"a": 1, "b": 0}}).fit(sparse.csr_matrix(X), list(s))
    assert m.W_specific_["b"].shape == (5, 0)
    df = pd.DataFrame(X, columns=list("vwxyz"))
    m2 = MSSVAE(**FAST).fit(df, pd.Series(s).astype("category"))
    assert list(m2.feature_names_in_) == list("vwxyz")
    assert np.isfinite(m2.transform(df, s)).all()
