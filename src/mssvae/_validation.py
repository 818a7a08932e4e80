"""Input checks: every bad input becomes a ValueError/TypeError that names the argument."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from scipy import sparse

LIKELIHOODS = ("gaussian", "nb")


def check_X(X, likelihood: str, name: str = "X") -> np.ndarray:
    """Return X as a float32 (n_samples, n_features) ndarray, or raise.

    scipy.sparse input is densified: the decoder evaluates every (sample, feature) pair anyway.
    """
    if sparse.issparse(X):
        X = X.toarray()
    elif isinstance(X, pd.DataFrame):
        non_numeric = [c for c, t in X.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
        if non_numeric:
            raise TypeError(f"`{name}` has non-numeric columns: {non_numeric[:5]}")
        X = X.to_numpy()
    try:
        arr = np.asarray(X)
    except Exception as err:  # ragged lists and the like
        raise TypeError(f"`{name}` could not be read as a numeric array: {err}") from None
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)):
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must be numeric; got dtype {arr.dtype}") from None
    if np.iscomplexobj(arr):
        raise TypeError(f"`{name}` must be real-valued; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-d (n_samples, n_features); got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"`{name}` is empty: shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    finite = np.isfinite(arr)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        kind = "NaN" if np.isnan(arr[i, j]) else "inf"
        raise ValueError(
            f"`{name}` contains {int((~finite).sum())} non-finite value(s) ({kind} at row {i}, column {j})"
        )
    if likelihood == "nb":
        if (arr < 0).any():
            i, j = np.argwhere(arr < 0)[0]
            raise ValueError(f"`{name}` has negative values (e.g. {arr[i, j]} at row {i}, column {j}); "
                             "likelihood='nb' needs raw counts")
        frac = arr != np.round(arr)
        if frac.any():
            i, j = np.argwhere(frac)[0]
            raise ValueError(f"`{name}` has non-integer values (e.g. {arr[i, j]} at row {i}, column {j}); "
                             "likelihood='nb' needs raw counts, not normalised values")
    return arr.astype(np.float32)


def check_study(study, n_samples: int, name: str = "study") -> np.ndarray:
    """Return study labels as a 1-d ndarray of length n_samples, or raise."""
    if study is None:
        raise ValueError(f"`{name}` is required: one study label per sample")
    if isinstance(study, (pd.Series, pd.Index, pd.Categorical)):
        values = pd.Series(study)
        if values.isna().any():
            raise ValueError(f"`{name}` has {int(values.isna().sum())} missing label(s)")
        arr = values.astype(str if values.dtype == object or isinstance(values.dtype, pd.CategoricalDtype)
                            else values.dtype).to_numpy()
    else:
        arr = np.asarray(study)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-d; got shape {arr.shape}")
    if len(arr) != n_samples:
        raise ValueError(f"`{name}` has length {len(arr)} but X has {n_samples} samples")
    if arr.dtype == object:
        missing = pd.isna(arr)
        if missing.any():
            raise ValueError(f"`{name}` has {int(missing.sum())} missing label(s)")
        kinds = {type(v) for v in arr}
        if len(kinds) > 1:
            arr = arr.astype(str)
    elif np.issubdtype(arr.dtype, np.floating):
        if np.isnan(arr).any():
            raise ValueError(f"`{name}` has {int(np.isnan(arr).sum())} missing label(s) (NaN)")
    return arr


def check_studies_for_fit(study: np.ndarray, name: str = "study"):
    """Labels (sorted) and integer codes; at least 2 studies with at least 2 samples each."""
    labels, codes, counts = np.unique(study, return_inverse=True, return_counts=True)
    if len(labels) < 2:
        raise ValueError(
            f"`{name}` has {len(labels)} distinct label(s); the multi-study model needs at least 2 studies"
        )
    small = [(lab, int(c)) for lab, c in zip(labels, counts) if c < 2]
    if small:
        raise ValueError(f"`{name}`: every study needs at least 2 samples; too few in {small}")
    return [_py(v) for v in labels], codes.astype(np.int64)


def _py(v):
    """numpy scalar → python scalar (for dict keys and JSON)."""
    return v.item() if isinstance(v, np.generic) else v


def check_positive_int(value, name: str, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer; got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"`{name}` must be {'non-negative' if allow_zero else 'positive'}; got {value}")
    return int(value)


def check_positive_float(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number; got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number; got {value}")
    return float(value)


def check_n_specific(n_specific, labels: list, name: str = "n_specific") -> list[int]:
    """One K_m per study, in the order of ``labels``."""
    if isinstance(n_specific, dict):
        keys = {str(k): v for k, v in n_specific.items()}
        missing = [lab for lab in labels if str(lab) not in keys]
        if missing:
            raise ValueError(f"`{name}` is missing studies {missing}; give a K_m for every study")
        extra = sorted(set(keys) - {str(lab) for lab in labels})
        if extra:
            raise ValueError(f"`{name}` names studies not in `study`: {extra}")
        return [check_positive_int(keys[str(lab)], f"{name}[{lab!r}]", allow_zero=True) for lab in labels]
    k = check_positive_int(n_specific, name, allow_zero=True)
    return [k] * len(labels)


def check_hidden(hidden, name: str = "hidden") -> tuple[int, int]:
    try:
        values = tuple(hidden)
    except TypeError:
        raise TypeError(f"`{name}` must be a pair of layer sizes, e.g. (50, 50); got {hidden!r}") from None
    if len(values) != 2:
        raise ValueError(f"`{name}` must have 2 entries (two hidden layers, Appendix B.1); got {values}")
    return tuple(check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def check_likelihood(likelihood) -> str:
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}; got {likelihood!r}")
    return likelihood
