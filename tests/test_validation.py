"""Unit tests of the checks in mssvae._validation, called directly.

What `fit`/`transform` answer to each bad input is the catalogue in tests/test_bad_inputs.py
(docs/bad_inputs.md); here are the conversions the checks make and the checks that model.py is
to call (feature names, constant features, lambda0, annealing fractions, flags, seed, device).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from mssvae import _validation as val


def test_check_X_returns_c_contiguous_float32():
    X = np.asfortranarray(np.arange(12.0).reshape(4, 3))
    out = val.check_X(X, "gaussian")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, X)


@pytest.mark.parametrize("make", [sparse.csr_matrix, sparse.csc_matrix, sparse.coo_array, sparse.lil_matrix])
def test_check_X_sparse_equals_dense(make):
    X = np.random.default_rng(0).poisson(0.5, size=(6, 4)).astype(float)
    np.testing.assert_array_equal(val.check_X(make(X), "nb"), val.check_X(X, "nb"))


def test_check_X_sparse_locates_bad_entries_by_row_and_column():
    X = np.zeros((5, 4))
    X[3, 1] = -2.0
    with pytest.raises(ValueError, match=r"-2.0 at row 3, column 1"):
        val.check_X(sparse.csc_matrix(X), "nb")


def test_check_X_dataframe_and_object_arrays():
    df = pd.DataFrame({"a": pd.array([1, 2], dtype="Int64"), "b": [True, False], "c": [0.5, 1.5]})
    np.testing.assert_array_equal(val.check_X(df, "gaussian"), [[1, 1, 0.5], [2, 0, 1.5]])
    obj = np.array([[1, 2.5], [np.int64(3), True]], dtype=object)
    np.testing.assert_array_equal(val.check_X(obj, "gaussian"), [[1, 2.5], [3, 1]])


def test_check_X_limits_are_compared_without_overflow():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        val.check_X(np.full((2, 2), 60000, dtype=np.float16), "nb")
        with pytest.raises(ValueError, match="beyond"):
            val.check_X(np.array([[np.iinfo(np.int64).min, 0]]), "gaussian")
        with pytest.raises(ValueError, match="too large"):
            val.check_X(np.array([[10**400, 0]], dtype=object), "gaussian")
    val.check_X(np.full((2, 2), val.MAX_ABS_VALUE), "nb")


@pytest.mark.parametrize(
    "labels, expected",
    [
        (pd.Series(["b", "a"], dtype="category"), ["b", "a"]),
        (pd.Series([2, 1], dtype="Int64"), [2, 1]),
        (np.array(["2020-01-02", "2020-01-01"], dtype="datetime64[D]"), ["2020-01-02", "2020-01-01"]),
        ([b"x", b"y"], ["x", "y"]),
        ([1, 2.0], [1.0, 2.0]),
        (["x", 2], ["x", "2"]),
        (iter(["a", "b"]), ["a", "b"]),
    ],
)
def test_check_study_conversions(labels, expected):
    assert val.check_study(labels, 2).tolist() == expected


def test_check_n_specific_by_value_text_and_zero():
    assert val.check_n_specific({0: 1, 1: 2}, [0.0, 1.0]) == [1, 2]
    assert val.check_n_specific({"1": 3, "2": 0}, [1, 2]) == [3, 0]
    assert val.check_n_specific(np.int64(2), ["a", "b"]) == [2, 2]


def test_check_feature_names():
    assert val.check_feature_names(None, 2).tolist() == ["feature_0", "feature_1"]
    assert val.check_feature_names(pd.Index([10, 11]), 2).tolist() == ["10", "11"]
    with pytest.raises(ValueError, match=r"`feature_names` has 1 duplicated name\(s\): \['1'\]"):
        val.check_feature_names([1, "1"], 2)  # equal once written as text
    with pytest.raises(ValueError, match="`feature_names` must have 3 entries"):
        val.check_feature_names([["a", "b", "c"]], 3)


def test_warn_constant_features_names_them_and_returns_the_mask():
    X = np.array([[0.0, 1.0, 5.0], [0.0, 2.0, 5.0]])
    message = r"`X` has 2 feature\(s\) with the same value in every sample \(e.g. \['g0', 'g2'\]"
    with pytest.warns(UserWarning, match=message):
        mask = val.warn_constant_features(X, np.array(["g0", "g1", "g2"]))
    assert mask.tolist() == [True, False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not val.warn_constant_features(np.eye(3)).any()


@pytest.mark.parametrize(
    "check, value, exc, pattern",
    [
        (val.check_lambda0, 10.0, TypeError, "`lambda0` must be 3 spike penalties"),
        (val.check_lambda0, None, TypeError, "`lambda0` must be 3 spike penalties"),
        (val.check_lambda0, (1, 2), ValueError, "`lambda0` must have 3 values"),
        (val.check_lambda0, (1, 0, 2), ValueError, r"`lambda0\[1\]` must be a positive"),
        (val.check_anneal_fractions, 0.5, TypeError, "`anneal_fractions` must be 2 fractions"),
        (val.check_anneal_fractions, ("a", 0.1), TypeError, r"`anneal_fractions\[0\]` must be a number"),
        (val.check_anneal_fractions, (np.nan, 0.1), ValueError, "`anneal_fractions` must be 2 non-negative"),
        (val.check_anneal_fractions, (0.1, 0.2, 0.3), ValueError, "`anneal_fractions` must be 2 non-negative"),
        (lambda v: val.check_bool(v, "normalize_decoder"), "no", TypeError, "`normalize_decoder` must be True or"),
        (lambda v: val.check_bool(v, "verbose"), 1, TypeError, "`verbose` must be True or False"),
        (val.check_random_state, 2**70, ValueError, r"`random_state` must be in \[-2\*\*63, 2\*\*64\)"),
        (val.check_random_state, 1.0, TypeError, "`random_state` must be an integer seed"),
        (val.check_device, "gpu", ValueError, "`device` must be 'auto', 'cpu', 'cuda' or a torch device"),
        (val.check_device, None, ValueError, "`device` must be"),
        (val.check_device, "meta", ValueError, "`device` 'meta' is not supported"),
        (val.check_device, "cuda:99", ValueError, "`device` 'cuda:99' is not available here"),
    ],
)
def test_checks_for_model_settings(check, value, exc, pattern):
    with pytest.raises(exc, match=pattern):
        check(value)


def test_good_settings_pass_through():
    assert val.check_lambda0([1, 10, 15]) == (1.0, 10.0, 15.0)
    assert val.check_anneal_fractions(np.array([0.05, 0.25])) == (0.05, 0.25)
    assert val.check_bool(np.bool_(True), "verbose") is True
    assert val.check_random_state(np.int64(-1)) == -1
    assert str(val.check_device("cpu")) == "cpu"
    assert val.check_device("auto").type in ("cpu", "cuda")
