"""Input checks: every bad input becomes a ValueError/TypeError that names the argument.

The catalogue of bad inputs and what each one gets is docs/bad_inputs.md; tests/test_bad_inputs.py
holds one test per row.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Mapping, Set

import numpy as np
import pandas as pd
from scipy import sparse

LIKELIHOODS = ("gaussian", "nb")

# Training runs in float32.  Squares of values up to 1e15, summed over up to ~1e8 samples (the
# feature variances, BatchNorm statistics, the Gaussian residuals), stay below float32's maximum
# (3.4e38); measured: N = 2000 standard normal values × 1e18 already give a NaN loss at the first step.
MAX_ABS_VALUE = 1e15

# Device types the training loop has been written for; "meta" and the like would fail deep in torch.
DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu")


def _where(mask: np.ndarray) -> str:
    """'row i, column j' of the first True entry of a 2-d mask."""
    i, j = np.argwhere(mask)[0]
    return f"row {i}, column {j}"


def check_X(X, likelihood: str, name: str = "X") -> np.ndarray:
    """Return X as a C-contiguous float32 (n_samples, n_features) ndarray, or raise.

    Accepted: numeric ndarrays (bool, int, float), lists of rows, numeric pandas DataFrames
    (nullable dtypes too) and scipy.sparse matrices/arrays.  Sparse input is densified: the decoder
    evaluates every (sample, feature) pair anyway, and training holds X on the device.
    """
    if sparse.issparse(X):
        return _check_sparse(X, likelihood, name)
    if type(X).__name__ == "AnnData":   # not imported: anndata is only needed by io.py
        raise TypeError(f"`{name}` is an AnnData; use mssvae.io.fit_anndata(adata, study_key) to fit and "
                        f"write the results into it, or pass `adata.to_df()` (its genes as named columns)")
    if isinstance(X, pd.DataFrame):
        X = _dataframe_values(X, name)
    elif isinstance(X, (str, bytes, Mapping, Set)) or X is None:
        raise TypeError(f"`{name}` must be a 2-d array (n_samples, n_features); got {type(X).__name__}")
    elif np.ma.isMaskedArray(X):
        n_masked = int(np.ma.count_masked(X))
        if n_masked:
            raise ValueError(f"`{name}` has {n_masked} masked (missing) value(s); remove or impute them")
        X = np.ma.getdata(X)
    try:
        arr = np.asarray(X)
    except ValueError as err:  # ragged rows
        raise ValueError(f"`{name}` could not be read as a 2-d array (rows of different lengths?): {err}") from None
    except Exception as err:
        raise TypeError(f"`{name}` could not be read as a numeric array: {err}") from None
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-d (n_samples, n_features); got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"`{name}` is empty: shape {arr.shape}")
    arr = _numeric(arr, name)
    finite = np.isfinite(arr)
    if not finite.all():
        first = np.argwhere(~finite)[0]
        kind = "NaN" if np.isnan(arr[tuple(first)]) else "inf"
        raise ValueError(
            f"`{name}` contains {int((~finite).sum())} non-finite value(s) ({kind} at {_where(~finite)}); "
            "remove or impute missing values"
        )
    _check_values(arr, likelihood, name, lambda mask: _where(mask))
    return np.ascontiguousarray(arr, dtype=np.float32)


def _numeric(arr: np.ndarray, name: str) -> np.ndarray:
    """A real-valued view/copy of ``arr`` (bool → float); strings, dates, complex values refused."""
    kind = arr.dtype.kind
    if kind in "iuf":
        return arr
    if kind == "b":
        return arr.astype(np.float32)
    if kind == "c":
        raise TypeError(f"`{name}` must be real-valued; got dtype {arr.dtype}")
    if kind in "US":
        # Numbers read as text usually mean a header row or an index column ended up in the data.
        raise TypeError(f"`{name}` must be numeric; it holds strings (dtype {arr.dtype}): parse them as numbers "
                        "first (was a header row or an index column read as data?)")
    if kind in "mM":
        raise TypeError(f"`{name}` must be numeric; got dates/times (dtype {arr.dtype})")
    if kind != "O":
        raise TypeError(f"`{name}` must be numeric; got dtype {arr.dtype}")
    missing = pd.isna(arr)
    real = np.frompyfunc(lambda v: isinstance(v, (numbers.Real, np.bool_)), 1, 1)(arr).astype(bool)
    bad = ~(real | missing)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise TypeError(f"`{name}` must be numeric; got {arr[i, j]!r} ({type(arr[i, j]).__name__}) "
                        f"at row {i}, column {j}")
    try:
        return np.where(missing, np.nan, arr).astype(np.float64)
    except OverflowError:  # Python ints beyond float64
        raise ValueError(f"`{name}` has values too large for float64; rescale it") from None


def _check_values(values: np.ndarray, likelihood: str, name: str, where) -> None:
    """Range checks on finite values: the float32 limit, and raw counts for NB.

    ``where(mask)`` says where the first flagged entry is (dense and sparse data differ).
    """
    kind = values.dtype.kind
    dtype_max = float(np.iinfo(values.dtype).max if kind in "iu" else np.finfo(values.dtype).max) if kind in "iuf" \
        else 1.0
    # Compared in the array's own dtype (np.abs overflows at the int64 minimum; float16 cannot hold 1e15).
    too_big = (values > MAX_ABS_VALUE) | (values < -MAX_ABS_VALUE) if dtype_max > MAX_ABS_VALUE \
        else np.zeros(values.shape, dtype=bool)
    if too_big.any():
        raise ValueError(
            f"`{name}` has {int(too_big.sum())} value(s) beyond ±{MAX_ABS_VALUE:g} (at {where(too_big)}); "
            "training runs in float32, where their squares overflow. Rescale it (e.g. standardise the features)"
        )
    if likelihood != "nb":
        return
    negative = values < 0
    if negative.any():
        raise ValueError(f"`{name}` has negative values (e.g. {values[negative][0]} at {where(negative)}); "
                         "likelihood='nb' needs raw counts")
    fractional = values != np.round(values)
    if fractional.any():
        raise ValueError(f"`{name}` has non-integer values (e.g. {values[fractional][0]} at {where(fractional)}); "
                         "likelihood='nb' needs raw counts, not normalised values")
    if not values.any():   # (a sparse matrix passes its stored entries: none nonzero means all zero)
        raise ValueError(f"`{name}` has no counts: every entry is 0, so every library size is 0 "
                         "(the wrong layer or an empty selection?)")


def _dataframe_values(df: pd.DataFrame, name: str) -> np.ndarray:
    dup = df.columns[df.columns.duplicated()]
    if len(dup):
        # Column names become feature names, which name the features of every factor's support.
        raise ValueError(f"`{name}` has duplicate column names: {list(dict.fromkeys(dup))[:5]}; "
                         "make them unique")
    non_numeric = [c for c, t in df.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if non_numeric:
        raise TypeError(f"`{name}` has non-numeric columns: {non_numeric[:5]}")
    complex_cols = [c for c, t in df.dtypes.items() if pd.api.types.is_complex_dtype(t)]
    if complex_cols:
        raise TypeError(f"`{name}` must be real-valued; complex columns: {complex_cols[:5]}")
    # na_value turns pandas' NA of nullable columns into NaN, which check_X reports as missing.
    return df.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_sparse(X, likelihood: str, name: str) -> np.ndarray:
    """Checks on the stored entries, then densify straight to float32 (no float64 copy of the dense matrix)."""
    if X.ndim != 2:
        raise ValueError(f"`{name}` must be 2-d (n_samples, n_features); got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"`{name}` is empty: shape {X.shape}")
    if X.dtype.kind == "c":
        raise TypeError(f"`{name}` must be real-valued; got dtype {X.dtype}")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"`{name}` must be numeric; got a sparse matrix of dtype {X.dtype}")
    coo = sparse.coo_matrix(X)
    data = coo.data

    def where(mask):
        k = np.flatnonzero(mask)[0]
        return f"row {coo.row[k]}, column {coo.col[k]}"

    finite = np.isfinite(data)
    if not finite.all():
        kind = "NaN" if np.isnan(data[~finite][0]) else "inf"
        raise ValueError(f"`{name}` contains {int((~finite).sum())} non-finite value(s) ({kind} at {where(~finite)}); "
                         "remove or impute missing values")
    _check_values(data, likelihood, name, where)
    return coo.astype(np.float32).toarray()


def _label_kind(v) -> str | None:
    """'text', 'number' or None (not usable as a study label)."""
    if isinstance(v, (str, np.str_)):
        return "text"
    if isinstance(v, (bool, np.bool_)) or isinstance(v, numbers.Real):
        return "number"
    return None


def check_study(study, n_samples: int, name: str = "study") -> np.ndarray:
    """Return study labels as a 1-d ndarray of length n_samples, or raise.

    Labels are strings, numbers or booleans (saved models keep them as JSON); dates are turned
    into ISO strings and bytes into str.
    """
    if study is None:
        raise ValueError(f"`{name}` is required: one study label per sample")
    if isinstance(study, (str, bytes)):
        raise TypeError(f"`{name}` must be one label per sample, not a single label {study!r}")
    if isinstance(study, (Mapping, Set)):
        raise TypeError(f"`{name}` must be an ordered sequence of labels (list, array, Series); "
                        f"got {type(study).__name__}")
    if isinstance(study, Iterator):
        study = list(study)
    if isinstance(study, (pd.Series, pd.Index, pd.Categorical)) or isinstance(
            getattr(study, "dtype", None), pd.api.extensions.ExtensionDtype):
        values = pd.Series(study)
        if values.isna().any():
            raise ValueError(f"`{name}` has {int(values.isna().sum())} missing label(s)")
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(values.cat.categories.dtype if values.cat.categories.dtype != object else str)
        study = values.to_numpy()
    try:
        # Lists stay objects: np.asarray(["1", 1]) would turn 1 into "1" and merge two studies unseen.
        arr = np.asarray(study, dtype=object) if isinstance(study, (list, tuple)) else np.asarray(study)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"`{name}` must be a 1-d sequence of labels: {err}") from None
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-d; got shape {arr.shape}")
    if len(arr) != n_samples:
        raise ValueError(f"`{name}` has length {len(arr)} but X has {n_samples} samples")
    kind = arr.dtype.kind
    if kind in "mM":
        nat = np.isnat(arr)
        if nat.any():
            raise ValueError(f"`{name}` has {int(nat.sum())} missing label(s) (NaT)")
        return arr.astype(str)
    if kind == "S":
        return arr.astype(str)
    if kind == "f":
        if np.isnan(arr).any():
            raise ValueError(f"`{name}` has {int(np.isnan(arr).sum())} missing label(s) (NaN)")
        return arr
    if kind in "biuU":
        return arr
    if kind != "O":
        raise TypeError(f"`{name}` labels must be strings, numbers or booleans; got dtype {arr.dtype}")
    missing = pd.isna(arr)
    if missing.any():
        raise ValueError(f"`{name}` has {int(missing.sum())} missing label(s) (None/NaN) "
                         f"(first at position {int(np.flatnonzero(missing)[0])})")
    arr = np.array([v.decode() if isinstance(v, bytes) else v for v in arr], dtype=object)
    kinds = [_label_kind(v) for v in arr]
    if None in kinds:
        i = kinds.index(None)
        raise TypeError(f"`{name}` labels must be strings, numbers or booleans; got {arr[i]!r} "
                        f"({type(arr[i]).__name__}) at position {i}")
    if "text" not in kinds:
        return np.array(arr.tolist())  # numbers (1 and 1.0, int and np.int64 alike) → one numeric dtype
    as_text = arr.astype(str)
    if "number" not in kinds:
        return as_text
    if len(set(as_text)) < len(pd.unique(arr)):
        raise ValueError(f"`{name}` mixes labels of different types that read the same as text "
                         f"(e.g. 1 and '1'); use one type")
    return as_text


def align_study(study, X, name: str = "study"):
    """``study`` as labels in X's row order: a pandas Series beside a DataFrame X is matched by index.

    Read by position, a Series in another order than X would give samples the wrong studies without
    a sign; with the same index labels in another order it is reordered, and with other labels
    (e.g. a RangeIndex beside sample names) refused, since either reading could be the intended one.
    """
    if not (isinstance(study, pd.Series) and isinstance(X, pd.DataFrame)) or study.index.equals(X.index):
        return study
    if (len(study) == len(X) and study.index.is_unique and X.index.is_unique
            and set(study.index) == set(X.index)):
        return study.reindex(X.index)
    other = [v for v in study.index[:len(X)] if v not in set(X.index)][:3] or list(study.index[:3])
    raise ValueError(f"`{name}` is a pandas Series whose index does not match X's index (e.g. {other} are not "
                     f"rows of X); pass `{name}.loc[X.index]` to match by sample, or `{name}.to_numpy()` "
                     "to match by position")


def check_columns(X, feature_names: np.ndarray, name: str = "X") -> None:
    """A DataFrame at transform time must have the fitted features as its columns, in order.

    They are read by position, so a reordered or different table would be decoded against the
    wrong features without a sign (scikit-learn refuses it the same way).  A model fitted without
    names (feature_0, …) takes any columns, except those default names in another order.
    """
    if isinstance(X, pd.DataFrame):
        check_names_in_order(X.columns.astype(str).to_numpy(), feature_names, name, "features", "columns",
                             f"`{name}[model.feature_names_in_]`", " (or pass `X.to_numpy()` to match by position)")


def default_feature_names(n_features: int) -> np.ndarray:
    """The names a model fitted without names gets: feature_0, feature_1, …"""
    return np.array([f"feature_{j}" for j in range(n_features)])


def check_names_in_order(names: np.ndarray, feature_names: np.ndarray, name: str, noun: str, where: str,
                         reorder: str, positional: str = "") -> None:
    """``names`` (a DataFrame's columns, an AnnData's var_names) must be the fitted ``feature_names``
    in order: data are read by position.  A model fitted without names takes any names, except its
    default names in another order (what `mssvae simulate` writes)."""
    names, feature_names = np.asarray(names).astype(str), np.asarray(feature_names).astype(str)
    default = np.array_equal(feature_names, default_feature_names(len(feature_names)))
    fitted = set(feature_names)
    if len(names) != len(feature_names):
        present = set(names)
        missing = [] if default else [str(f) for f in feature_names if f not in present][:5]
        if missing:   # the count alone does not say which genes a subset dropped
            raise ValueError(f"`{name}` has {len(names)} {where} but the model was fitted on {len(feature_names)} "
                             f"{noun}; missing e.g. {missing} ({where} must be `model.feature_names_in_`)")
        return
    if (names == feature_names).all() or (default and set(names) != fitted):
        return
    if set(names) == fitted:
        raise ValueError(f"`{name}` has the fitted {noun} as {where} but in another order; pass {reorder}")
    unknown = [str(c) for c in names if c not in fitted][:5]
    raise ValueError(f"`{name}` has {where} the model was not fitted on: {unknown}; "
                     f"its {where} must be `model.feature_names_in_`{positional}")


def check_studies_for_fit(study: np.ndarray, name: str = "study"):
    """Labels (sorted) and integer codes; at least 2 studies with at least 2 samples each."""
    labels, codes, counts = np.unique(study, return_inverse=True, return_counts=True)
    if any(str(lab) == "shared" for lab in labels):
        # A study's factors are named f"{study}_{k}", so a study "shared" would give names that are the
        # shared factors' own, and every lookup by name (variance rows, merges, reports) would be ambiguous.
        raise ValueError(f"`{name}` has a study labelled 'shared', the name of the shared factors "
                         "(shared_0, shared_1, ...); rename that study")
    if len(labels) < 2:
        raise ValueError(
            f"`{name}` has {len(labels)} distinct label(s); the multi-study model needs at least 2 studies"
        )
    small = [(_py(lab), int(c)) for lab, c in zip(labels, counts) if c < 2]
    if small:
        raise ValueError(f"`{name}`: every study needs at least 2 samples; too few in {small}")
    return [_py(v) for v in labels], codes.astype(np.int64)


def _py(v):
    """numpy scalar → python scalar (for dict keys and JSON)."""
    return v.item() if isinstance(v, np.generic) else v


def check_positive_int(value, name: str, allow_zero: bool = False) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer; got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"`{name}` must be {'non-negative' if allow_zero else 'positive'}; got {value}")
    return int(value)


def check_positive_float(value, name: str, allow_zero: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number; got {value!r}")
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        sign = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be a {sign} finite number; got {value}")
    return float(value)


def check_fraction(value, name: str, allow_zero: bool = False, of: str = "the features") -> float:
    """A share in (0, 1], or [0, 1] with ``allow_zero``."""
    if allow_zero and not isinstance(value, (bool, np.bool_)) and isinstance(value, numbers.Real) and value <= 0:
        if value == 0:
            return 0.0
        raise ValueError(f"`{name}` must be in [0, 1] (a share of {of}); got {value}")
    value = check_positive_float(value, name)
    if value > 1.0:
        low = "[0" if allow_zero else "(0"
        raise ValueError(f"`{name}` must be in {low}, 1] (a share of {of}); got {value}")
    return value


def check_n_specific(n_specific, labels: list, name: str = "n_specific") -> list[int]:
    """One K_m per study, in the order of ``labels``.

    Dict keys match a label when equal to it (0 and 0.0 match) or when they read the same as
    text (study labels may have come back from JSON or a CSV as strings).
    """
    if isinstance(n_specific, Mapping):
        by_text: dict[str, object] = {}
        for k in n_specific:
            if str(k) in by_text:
                raise ValueError(f"`{name}` has keys {by_text[str(k)]!r} and {k!r} for the same study")
            by_text[str(k)] = k
        used, out, missing = set(), [], []
        for lab in labels:
            key = lab if lab in n_specific else by_text.get(str(lab), _MISSING)
            if key is _MISSING:
                missing.append(lab)
                continue
            used.add(key)
            out.append(check_positive_int(n_specific[key], f"{name}[{lab!r}]", allow_zero=True))
        if missing:
            raise ValueError(f"`{name}` is missing studies {missing}; give a K_m for every study")
        extra = sorted(str(k) for k in n_specific if k not in used)
        if extra:
            raise ValueError(f"`{name}` names studies not in `study`: {extra}")
        return out
    if isinstance(n_specific, (bool, np.bool_)) or not isinstance(n_specific, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer or a dict {{study: integer}}; got {n_specific!r}")
    k = check_positive_int(n_specific, name, allow_zero=True)
    return [k] * len(labels)


_MISSING = object()


def check_hidden(hidden, name: str = "hidden") -> tuple[int, int]:
    if isinstance(hidden, (str, bytes)):
        raise TypeError(f"`{name}` must be a pair of layer sizes, e.g. (50, 50); got {hidden!r}")
    try:
        values = tuple(hidden)
    except TypeError:
        raise TypeError(f"`{name}` must be a pair of layer sizes, e.g. (50, 50); got {hidden!r}") from None
    if len(values) != 2:
        raise ValueError(f"`{name}` must have 2 entries (two hidden layers, Appendix B.1); got {values}")
    return tuple(check_positive_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def check_likelihood(likelihood) -> str:
    if not isinstance(likelihood, str) or likelihood not in LIKELIHOODS:
        raise ValueError(f"`likelihood` must be one of {LIKELIHOODS}; got {likelihood!r}")
    return likelihood


# ---------------------------------------------------------------- checks called from model.py
def check_feature_names(feature_names, n_features: int, name: str = "feature_names") -> np.ndarray:
    """Feature names as a 1-d str array of length n_features (None → feature_0, …), or raise."""
    if feature_names is None:
        return default_feature_names(n_features)
    if isinstance(feature_names, (str, bytes)):
        raise TypeError(f"`{name}` must be a sequence of {n_features} names, not a single string")
    try:
        arr = np.asarray(list(feature_names) if isinstance(feature_names, Iterator) else feature_names,
                         dtype=object)
    except (TypeError, ValueError) as err:
        raise TypeError(f"`{name}` must be a sequence of {n_features} names: {err}") from None
    if arr.ndim != 1 or len(arr) != n_features:
        raise ValueError(f"`{name}` must have {n_features} entries (one per feature of X); got shape {arr.shape}")
    missing = pd.isna(arr)
    if missing.any():
        raise ValueError(f"`{name}` has {int(missing.sum())} missing name(s) (first at position "
                         f"{int(np.flatnonzero(missing)[0])})")
    names = arr.astype(str)
    counts = pd.Series(names).value_counts()
    dup = counts[counts > 1]
    if len(dup):
        raise ValueError(f"`{name}` has {len(dup)} duplicated name(s): {dup.index[:5].tolist()}; make them unique")
    return names


def warn_constant_features(X: np.ndarray, feature_names=None, name: str = "X") -> np.ndarray:
    """Warn about features with the same value in every sample; returns their mask.

    They are kept: nothing can be learned from them, but they do no harm (measured: finite fits
    with all-zero genes, NB and Gaussian), and dropping them would change the feature indexing
    that the user's gene names follow.  The Gaussian noise prior must leave them out (a 5 %
    quantile of variances at 0 collapses every feature's noise variance to the floor).
    """
    constant = (X == X[:1]).all(0)
    if constant.any():
        idx = np.flatnonzero(constant)
        shown = [str(feature_names[j]) for j in idx[:5]] if feature_names is not None else idx[:5].tolist()
        warnings.warn(
            f"`{name}` has {len(idx)} feature(s) with the same value in every sample (e.g. {shown}); they are "
            "kept, carry no signal, and their loadings stay near zero. Drop them to save time.",
            UserWarning, stacklevel=3,
        )
    return constant


def check_spike_above_slab(lambda0: tuple[float, float, float], lambda1) -> None:
    """λ0 > λ1 at the last annealing stage: the spike ψ0 is the narrow Laplace at 0 and the slab ψ1
    the wide one (§2.1); the other way round, p* reads the spike as the slab and the masks, the
    mask check and ``score`` (all at the final λ0) come out inverted.  An earlier stage with λ0 ≤ λ1
    is only warned: reusing a fitted ``lambda1_`` above 1 with the paper's λ0 = 1 first stage is
    the natural example.  A decreasing λ0 is warned too: the paper anneals from wide to sharp."""
    slab = tuple(lambda1) if isinstance(lambda1, (tuple, list)) else (lambda1,) * 3
    if lambda0[-1] <= slab[-1]:
        raise ValueError(f"`lambda0` must exceed `lambda1` at the last annealing stage (the spike is the narrow "
                         f"component); lambda0 {lambda0[-1]:g} <= lambda1 {slab[-1]:g}")
    early = [f"stage {i}: {l0:g} <= {l1:g}" for i, (l0, l1) in enumerate(zip(lambda0[:-1], slab[:-1])) if l0 <= l1]
    if early:
        warnings.warn(f"`lambda0` is not above `lambda1` at {', '.join(early)}: during that part of the annealing "
                      "the spike is the wider component", UserWarning, stacklevel=4)
    if any(b < a for a, b in zip(lambda0, lambda0[1:])):
        warnings.warn(f"`lambda0` {tuple(lambda0)} decreases: the spike penalty is usually annealed upwards "
                      "(the paper's 1 -> 10 -> 15), so that the masks start dense and sparsify", UserWarning,
                      stacklevel=4)


def check_lambda0(lambda0, name: str = "lambda0") -> tuple[float, float, float]:
    if isinstance(lambda0, (str, bytes)) or not isinstance(lambda0, (list, tuple, np.ndarray)):
        raise TypeError(f"`{name}` must be 3 spike penalties, e.g. (1, 10, 15); got {lambda0!r}")
    if len(lambda0) != 3:
        raise ValueError(f"`{name}` must have 3 values (the annealing stages); got {tuple(lambda0)}")
    return tuple(check_positive_float(v, f"{name}[{i}]") for i, v in enumerate(lambda0))


def check_anneal_fractions(fractions, name: str = "anneal_fractions") -> tuple[float, float]:
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (list, tuple, np.ndarray)):
        raise TypeError(f"`{name}` must be 2 fractions of the epochs, e.g. (0.05, 0.25); got {fractions!r}")
    values = []
    for i, v in enumerate(fractions):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"`{name}[{i}]` must be a number; got {v!r}")
        values.append(float(v))
    if len(values) != 2 or not all(np.isfinite(values)) or min(values) < 0 or sum(values) > 1:
        raise ValueError(f"`{name}` must be 2 non-negative fractions summing to ≤ 1; got {tuple(fractions)}")
    return tuple(values)


def check_bool(value, name: str) -> bool:
    # bool("no") is True: a string here is a mistake, not a flag.
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False; got {value!r}")
    return bool(value)


def check_random_state(value, name: str = "random_state") -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer seed; got {value!r}")
    if not -(2**63) <= value < 2**64:  # the range torch.manual_seed accepts
        raise ValueError(f"`{name}` must be in [-2**63, 2**64); got {value}")
    return int(value)


def check_device(device, name: str = "device"):
    """A usable torch.device: "auto" → CUDA when available, else CPU.

    torch.device("cuda") succeeds without CUDA; the failure would come later, as an
    AssertionError from deep inside ``module.to``.  Availability is asked of the backend rather
    than probed with a tensor, which would open a CUDA context on GPU 0 in every torchrun process.
    """
    import torch

    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"`{name}` must be 'auto', 'cpu', 'cuda' or a torch device; got {device!r}") from None
    if dev.type not in DEVICE_TYPES:
        raise ValueError(f"`{name}` {device!r} is not supported; use one of {DEVICE_TYPES} or 'auto'")
    if dev.type == "cpu":
        return dev
    backend = getattr(torch, dev.type, None) if dev.type != "mps" else torch.backends.mps
    available = bool(backend is not None and backend.is_available())
    count = torch.cuda.device_count() if dev.type == "cuda" and available else None
    if not available or (count is not None and dev.index is not None and dev.index >= count):
        found = f"{count} CUDA device(s) found" if count is not None else f"no {dev.type} device found"
        raise ValueError(f"`{name}` {device!r} is not available here ({found}); use 'cpu' or 'auto'")
    return dev
