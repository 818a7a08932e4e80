"""The catalogue of bad inputs (docs/bad_inputs.md), property-based tests of input validation, and
fits on extreme but valid data (issue 8).

Each catalogue row is one case below: the call, the error type and an excerpt of its message.
``test_catalogue_matches_the_docs`` keeps the table and these cases in step, so the documented
messages are the real ones.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from scipy import sparse

from mssvae import MSSVAE
from mssvae.io import fit_anndata, write_anndata

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
FAST = dict(n_shared=2, n_specific=1, max_epochs=1, batch_size=16, hidden=(4, 4))
ARGUMENTS = (
    "X", "study", "adata", "feature_names", "n_shared", "n_specific", "likelihood", "hidden", "max_epochs",
    "batch_size",
    "lr", "lr_W", "lambda1", "lambda0", "anneal_fractions", "a", "b", "prior_weight", "prior_scale",
    "normalize_decoder", "noise_alpha", "feature_chunk_size", "feature_subsample", "kl_weight", "kl_warmup",
    "kl_free", "lr_decay", "merge_dependent", "prune_masks",
    "dispersion_init", "dispersion_warmup", "mask_init", "select_after", "min_anchors", "n_init", "device",
    "random_state", "verbose", "precision", "checkpoint_dir", "checkpoint_every", "study_key",
)
# A message names its argument in backticks: `X`, `n_specific['b']`, `hidden[1]`, `precision='bf16'`.
NAMES_ARGUMENT = re.compile(r"`(" + "|".join(ARGUMENTS) + r")(\[[^\]]*\]|=[^`]*)?`")
# Hypothesis runs a fixed, derandomised set of examples in CI; MSSVAE_HYPOTHESIS_EXAMPLES=2000
# (and MSSVAE_HYPOTHESIS_RANDOM=1) explores further when hunting crashes.
HYPOTHESIS = settings(
    max_examples=int(os.environ.get("MSSVAE_HYPOTHESIS_EXAMPLES", 40)),
    deadline=None,
    database=None,
    derandomize=not os.environ.get("MSSVAE_HYPOTHESIS_RANDOM"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def gaussian_data(n=12, G=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, G)), np.repeat(["a", "b"], n // 2)


def count_data(n=12, G=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.poisson(3, size=(n, G)).astype(float), np.repeat(["a", "b"], n // 2)


def fit(X=None, study=None, feature_names=None, **kwargs):
    X0, s0 = gaussian_data()
    X = X0 if X is None else X
    study = s0 if study is None else study
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the hidden-factor warning of 1-epoch fits
        return MSSVAE(**{**FAST, **kwargs}).fit(X, study, feature_names=feature_names)


def put(X, value, i=1, j=2, dtype=None):
    out = np.array(X, dtype=dtype if dtype is not None else np.asarray(X).dtype)
    out[i, j] = value
    return out


_FITTED: dict[str, MSSVAE] = {}


def fitted():
    """A model fitted once on gaussian_data() (the cases are built at import, so no fixture)."""
    if "m" not in _FITTED:
        _FITTED["m"] = fit()
    return _FITTED["m"]


def fitted_named():
    """The same, fitted on a DataFrame whose columns name the features v … z."""
    if "named" not in _FITTED:
        _FITTED["named"] = fit(pd.DataFrame(X, columns=list("vwxyz")))
    return _FITTED["named"]


X, S = gaussian_data()
C, _ = count_data()


def case(id, call, exc, excerpt):
    return pytest.param(call, exc, excerpt, id=id)


CASES = [
    # ---- X at fit
    case("X-nan", lambda: fit(put(X, np.nan)), ValueError,
         "`X` contains 1 non-finite value(s) (NaN at row 1, column 2)"),
    case("X-inf", lambda: fit(put(X, -np.inf)), ValueError,
         "`X` contains 1 non-finite value(s) (inf at row 1, column 2)"),
    case("X-1d", lambda: fit(X[:, 0]), ValueError, "`X` must be 2-d (n_samples, n_features); got shape (12,)"),
    case("X-3d", lambda: fit(X[None]), ValueError, "`X` must be 2-d (n_samples, n_features); got shape (1, 12, 5)"),
    case("X-no-rows", lambda: fit(X[:0], S[:0]), ValueError, "`X` is empty: shape (0, 5)"),
    case("X-no-columns", lambda: fit(X[:, :0]), ValueError, "`X` is empty: shape (12, 0)"),
    case("X-none", lambda: MSSVAE(**FAST).fit(None, S), TypeError,
         "`X` must be a 2-d array (n_samples, n_features); got NoneType"),
    case("X-strings", lambda: fit(X.astype(str)), TypeError, "`X` must be numeric; it holds strings"),
    case("X-object-text", lambda: fit(put(X, "7", dtype=object)), TypeError,
         "`X` must be numeric; got '7' (str) at row 1, column 2"),
    case("X-object-none", lambda: fit(put(X, None, dtype=object)), ValueError,
         "`X` contains 1 non-finite value(s) (NaN at row 1, column 2)"),
    case("X-dates", lambda: fit(np.full((12, 5), np.datetime64("2020-01-01"))), TypeError,
         "`X` must be numeric; got dates/times"),
    case("X-complex", lambda: fit(X + 1j), TypeError, "`X` must be real-valued; got dtype complex128"),
    case("X-ragged", lambda: fit([[1.0, 2.0], [3.0]] * 6), ValueError,
         "`X` could not be read as a 2-d array (rows of different lengths?)"),
    case("X-too-large", lambda: fit(put(X, 1e20)), ValueError, "`X` has 1 value(s) beyond ±1e+15 (at row 1, column 2)"),
    case("X-masked", lambda: fit(np.ma.masked_array(X, mask=put(np.zeros(X.shape, bool), True))), ValueError,
         "`X` has 1 masked (missing) value(s)"),
    case("X-sparse-nan", lambda: fit(sparse.csr_matrix(put(X, np.nan))), ValueError,
         "`X` contains 1 non-finite value(s) (NaN at row 1, column 2)"),
    case("X-sparse-complex", lambda: fit(sparse.csr_matrix(X + 1j)), TypeError, "`X` must be real-valued"),
    case("X-frame-text-column", lambda: fit(pd.DataFrame(X).assign(kind="x")), TypeError,
         "`X` has non-numeric columns: ['kind']"),
    case("X-frame-missing",
         lambda: fit(pd.DataFrame(C.astype(int)).astype("Int64").mask(put(C, -1) < 0), likelihood="nb"), ValueError,
         "`X` contains 1 non-finite value(s) (NaN at row 1, column 2)"),
    case("X-frame-duplicate-columns", lambda: fit(pd.DataFrame(X, columns=list("vwwxy"))), ValueError,
         "`X` has duplicate column names: ['w']"),
    case("X-nb-negative", lambda: fit(put(C, -1.0), likelihood="nb"), ValueError,
         "`X` has negative values (e.g. -1.0 at row 1, column 2); likelihood='nb' needs raw counts"),
    case("X-nb-fraction", lambda: fit(put(C, 0.5), likelihood="nb"), ValueError,
         "`X` has non-integer values (e.g. 0.5 at row 1, column 2); likelihood='nb' needs raw counts"),
    case("X-nb-all-zero", lambda: fit(np.zeros_like(C), likelihood="nb"), ValueError,
         "`X` has no counts: every entry is 0, so every library size is 0"),
    case("X-nb-sparse-fraction", lambda: fit(sparse.csr_matrix(put(C, 2.5)), likelihood="nb"), ValueError,
         "`X` has non-integer values (e.g. 2.5 at row 1, column 2)"),
    # ---- study at fit
    case("study-absent", lambda: MSSVAE(**FAST).fit(X, None), ValueError,
         "`study` is required: one study label per sample"),
    case("study-length", lambda: fit(study=S[:-1]), ValueError, "`study` has length 11 but X has 12 samples"),
    case("study-none-label", lambda: fit(study=[*S[:-1], None]), ValueError,
         "`study` has 1 missing label(s) (None/NaN)"),
    case("study-nan-label", lambda: fit(study=np.r_[np.zeros(6), np.ones(5), np.nan]), ValueError,
         "`study` has 1 missing label(s) (NaN)"),
    case("study-series-na", lambda: fit(study=pd.Series([*S[:-1], None], dtype="string")), ValueError,
         "`study` has 1 missing label(s)"),
    case("study-2d", lambda: fit(study=S[:, None]), ValueError, "`study` must be 1-d; got shape (12, 1)"),
    case("study-single-label", lambda: fit(study="a"), TypeError,
         "`study` must be one label per sample, not a single label 'a'"),
    case("study-set", lambda: fit(study=set(S)), TypeError, "`study` must be an ordered sequence of labels"),
    case("study-complex", lambda: fit(study=np.repeat([1j, 2j], 6)), TypeError,
         "`study` labels must be strings, numbers or booleans; got dtype complex128"),
    case("study-object-label", lambda: fit(study=[*S[:-1], {"b": 1}]), TypeError,
         "`study` labels must be strings, numbers or booleans; got {'b': 1} (dict) at position 11"),
    case("study-1-and-'1'", lambda: fit(study=["1"] * 6 + [1] * 6), ValueError,
         "`study` mixes labels of different types that read the same as text"),
    case("study-one-sample", lambda: fit(study=["a"] * 11 + ["b"]), ValueError,
         "`study`: every study needs at least 2 samples; too few in [('b', 1)]"),
    case("study-only-one", lambda: fit(study=["a"] * 12), ValueError,
         "`study` has 1 distinct label(s); the multi-study model needs at least 2 studies"),
    case("study-labelled-shared", lambda: fit(study=["a"] * 6 + ["shared"] * 6), ValueError,
         "`study` has a study labelled 'shared', the name of the shared factors (shared_0, shared_1, ...)"),
    # ---- feature names
    case("feature_names-length", lambda: fit(feature_names=list("abcd")), ValueError,
         "`feature_names` must have 5 entries"),
    case("feature_names-duplicates", lambda: fit(feature_names=list("abcca")), ValueError,
         "`feature_names` has 2 duplicated name(s): ['a', 'c']"),
    case("feature_names-string", lambda: fit(feature_names="abcde"), TypeError,
         "`feature_names` must be a sequence of 5 names, not a single string"),
    case("feature_names-missing", lambda: fit(feature_names=["a", "b", None, "d", "e"]), ValueError,
         "`feature_names` has 1 missing name(s) (first at position 2)"),
    # ---- numbers of factors
    case("n_specific-dict-missing-study", lambda: fit(n_specific={"a": 1}), ValueError,
         "`n_specific` is missing studies ['b']; give a K_m for every study"),
    case("n_specific-dict-unknown-study", lambda: fit(n_specific={"a": 1, "b": 1, "c": 1}), ValueError,
         "`n_specific` names studies not in `study`: ['c']"),
    case("n_specific-dict-same-study-twice", lambda: fit(study=np.repeat([1, 2], 6), n_specific={1: 1, "1": 2, 2: 1}),
         ValueError, "`n_specific` has keys 1 and '1' for the same study"),
    case("n_specific-dict-negative", lambda: fit(n_specific={"a": 1, "b": -1}), ValueError,
         "`n_specific['b']` must be non-negative; got -1"),
    case("n_specific-list", lambda: fit(n_specific=[1, 2]), TypeError,
         "`n_specific` must be an integer or a dict {study: integer}; got [1, 2]"),
    case("n_specific-negative", lambda: fit(n_specific=-2), ValueError, "`n_specific` must be non-negative; got -2"),
    case("n_shared-negative", lambda: fit(n_shared=-1), ValueError, "`n_shared` must be non-negative; got -1"),
    case("n_shared-float", lambda: fit(n_shared=2.0), TypeError, "`n_shared` must be an integer; got 2.0"),
    case("no-factors", lambda: fit(n_shared=0, n_specific=0), ValueError,
         "`n_shared` and `n_specific` are both 0: the model needs at least one factor"),
    case("no-factors-dict", lambda: fit(n_shared=0, n_specific={"a": 0, "b": 0}), ValueError,
         "`n_shared` and `n_specific` are both 0"),
    # ---- training settings
    case("max_epochs-zero", lambda: fit(max_epochs=0), ValueError, "`max_epochs` must be positive; got 0"),
    case("max_epochs-negative", lambda: fit(max_epochs=-5), ValueError, "`max_epochs` must be positive; got -5"),
    case("max_epochs-float", lambda: fit(max_epochs=2.5), TypeError, "`max_epochs` must be an integer; got 2.5"),
    case("batch_size-zero", lambda: fit(batch_size=0), ValueError, "`batch_size` must be positive; got 0"),
    case("batch_size-bool", lambda: fit(batch_size=True), TypeError, "`batch_size` must be an integer; got True"),
    case("lr-zero", lambda: fit(lr=0.0), ValueError, "`lr` must be a positive finite number; got 0.0"),
    case("lr-nan", lambda: fit(lr=float("nan")), ValueError, "`lr` must be a positive finite number; got nan"),
    case("lr-text", lambda: fit(lr="0.01"), TypeError, "`lr` must be a number; got '0.01'"),
    case("lr_W-negative", lambda: fit(lr_W=-0.01), ValueError, "`lr_W` must be a positive finite number; got -0.01"),
    case("lr_W-inf", lambda: fit(lr_W=float("inf")), ValueError, "`lr_W` must be a positive finite number; got inf"),
    case("hidden-zero", lambda: fit(hidden=(8, 0)), ValueError, "`hidden[1]` must be positive; got 0"),
    case("hidden-negative", lambda: fit(hidden=(-8, 8)), ValueError, "`hidden[0]` must be positive; got -8"),
    case("hidden-one-layer", lambda: fit(hidden=(8,)), ValueError, "`hidden` must have 2 entries"),
    case("hidden-int", lambda: fit(hidden=8), TypeError,
         "`hidden` must be a pair of layer sizes, e.g. (50, 50); got 8"),
    case("hidden-text", lambda: fit(hidden="50,50"), TypeError, "`hidden` must be a pair of layer sizes"),
    case("likelihood-unknown", lambda: fit(likelihood="poisson"), ValueError,
         "`likelihood` must be one of ('gaussian', 'nb'); got 'poisson'"),
    case("likelihood-case", lambda: fit(likelihood="NB"), ValueError,
         "`likelihood` must be one of ('gaussian', 'nb'); got 'NB'"),
    case("prior_weight-zero", lambda: fit(prior_weight=0), ValueError,
         "`prior_weight` must be a positive finite number"),
    case("prior_weight-unknown-mode", lambda: fit(prior_weight="calibrate"), TypeError,
         "`prior_weight` must be a number; got 'calibrate'"),
    case("lambda0-two-values", lambda: fit(lambda0=(1.0, 10.0)), ValueError, "`lambda0` must have 3 values"),
    case("lambda0-negative", lambda: fit(lambda0=(1.0, -10.0, 15.0)), ValueError,
         "`lambda0[1]` must be a positive finite number; got -10.0"),
    case("lambda0-scalar", lambda: fit(lambda0=10.0), TypeError,
         "`lambda0` must be 3 spike penalties"),
    case("lambda0-not-above-lambda1", lambda: fit(lambda0=(0.5, 0.5, 0.5), lambda1=5.0), ValueError,
         "`lambda0` must exceed `lambda1` at the last annealing stage (the spike is the narrow component); "
         "lambda0 0.5 <= lambda1 5"),
    case("anneal_fractions-over-1", lambda: fit(anneal_fractions=(0.6, 0.6)), ValueError,
         "`anneal_fractions` must be 2 non-negative fractions summing to ≤ 1"),
    case("anneal_fractions-nan", lambda: fit(anneal_fractions=(float("nan"), 0.2)), ValueError,
         "`anneal_fractions` must be 2 non-negative fractions summing to ≤ 1"),
    case("anneal_fractions-text", lambda: fit(anneal_fractions=("a", "b")), TypeError,
         "`anneal_fractions[0]` must be a number; got 'a'"),
    case("a-zero", lambda: fit(a=0), ValueError, "`a` must be a positive finite number; got 0"),
    case("lambda1-negative", lambda: fit(lambda1=-0.1), ValueError, "`lambda1` must be a positive finite number"),
    case("lambda1-text", lambda: fit(lambda1="auto"), ValueError,
         "`lambda1` must be a positive number, 3 of them or 'empirical'; got 'auto'"),
    case("lambda1-two-values", lambda: fit(lambda1=(0.1, 1.0)), ValueError, "`lambda1` must have 3 values"),
    case("lambda1-empirical-unnormalized", lambda: fit(lambda1="empirical", normalize_decoder=False), ValueError,
         "`lambda1='empirical'` needs normalize_decoder=True"),
    case("feature_chunk_size-zero", lambda: fit(feature_chunk_size=0), ValueError,
         "`feature_chunk_size` must be positive; got 0"),
    case("feature_subsample-over-1", lambda: fit(feature_subsample=1.5), ValueError,
         "`feature_subsample` must be in (0, 1] (a share of the features); got 1.5"),
    case("feature_subsample-zero", lambda: fit(feature_subsample=0), ValueError,
         "`feature_subsample` must be a positive finite number; got 0"),
    case("kl_weight-negative", lambda: fit(kl_weight=-1.0), ValueError,
         "`kl_weight` must be a positive finite number; got -1.0"),
    case("kl_weight-text", lambda: fit(kl_weight="strong"), ValueError,
         "`kl_weight` must be 'auto' or a positive number; got 'strong'"),
    case("kl_warmup-over-1", lambda: fit(kl_warmup=2), ValueError,
         "`kl_warmup` must be in [0, 1] (a share of the epochs); got 2"),
    case("kl_warmup-text", lambda: fit(kl_warmup="slow"), ValueError,
         "`kl_warmup` must be 'auto' or a share in [0, 1]; got 'slow'"),
    case("lr_decay-over-1", lambda: fit(lr_decay=1.5), ValueError,
         "`lr_decay` must be in [0, 1] (a share of the epochs); got 1.5"),
    case("lr_decay-text", lambda: fit(lr_decay="cosine"), ValueError,
         "`lr_decay` must be 'auto' or a share in [0, 1]; got 'cosine'"),
    case("kl_free-negative", lambda: fit(kl_free=-0.5), ValueError,
         "`kl_free` must be a non-negative finite number; got -0.5"),
    case("kl_free-text", lambda: fit(kl_free="strong"), ValueError,
         "`kl_free` must be 'auto' or a non-negative number or a sequence of them; got 'strong'"),
    case("kl_free-empty", lambda: fit(kl_free=[]), ValueError,
         "`kl_free` must be 'auto', a non-negative number or a non-empty sequence of them; got []"),
    case("kl_free-twice", lambda: fit(kl_free=(0.5, 0.5)), ValueError, "`kl_free` lists a value twice: [0.5, 0.5]"),
    case("kl_free-negative-in-list", lambda: fit(kl_free=(0.5, -1)), ValueError,
         "`kl_free` must be a non-negative finite number; got -1"),
    case("merge_dependent-over-1", lambda: fit(merge_dependent=1.5), ValueError,
         "`merge_dependent` must be 'auto', None/False or a threshold in (0, 1]; got 1.5"),
    case("dispersion_init-text", lambda: fit(dispersion_init="poisson"), ValueError,
         "`dispersion_init` must be 'auto', 'moments' or a positive number; got 'poisson'"),
    case("mask_init-text", lambda: fit(mask_init="pca"), ValueError,
         "`mask_init` must be 'auto', 'ones', 'varimax' or a sequence of the two; got 'pca'"),
    case("mask_init-twice", lambda: fit(mask_init=("ones", "ones")), ValueError,
         "`mask_init` lists a start twice: ['ones', 'ones']"),
    case("select_after-zero", lambda: fit(select_after=0), ValueError,
         "`select_after` must be a positive finite number; got 0"),
    case("select_after-over-1", lambda: fit(select_after=1.5), ValueError,
         "`select_after` must be in (0, 1] (a share of the epochs); got 1.5"),
    case("select_after-text", lambda: fit(select_after="early"), ValueError,
         "`select_after` must be 'auto' or a share in (0, 1]; got 'early'"),
    case("dispersion_warmup-over-1", lambda: fit(dispersion_warmup=1.5), ValueError,
         "`dispersion_warmup` must be in [0, 1] (a share of the epochs); got 1.5"),
    case("dispersion_warmup-text", lambda: fit(dispersion_warmup="yes"), ValueError,
         "`dispersion_warmup` must be 'auto' or a share in [0, 1]; got 'yes'"),
    case("min_anchors-negative", lambda: fit(min_anchors=-1), ValueError,
         "`min_anchors` must be non-negative; got -1"),
    case("n_init-zero", lambda: fit(n_init=0), ValueError, "`n_init` must be positive; got 0"),
    case("prune_masks-text", lambda: fit(prune_masks="no"), TypeError,
         "`prune_masks` must be True or False; got 'no'"),
    case("normalize_decoder-text", lambda: fit(normalize_decoder="no"), TypeError,
         "`normalize_decoder` must be True or False; got 'no'"),
    case("random_state-none", lambda: fit(random_state=None), TypeError,
         "`random_state` must be an integer seed; got None"),
    case("random_state-too-large", lambda: fit(random_state=2**70), ValueError, "`random_state` must be in"),
    case("device-unknown", lambda: fit(device="gpu"), ValueError,
         "`device` must be 'auto', 'cpu', 'cuda' or a torch device; got 'gpu'"),
    case("device-unavailable", lambda: fit(device="cuda:99"), ValueError, "`device` 'cuda:99' is not available here"),
    # ---- transform
    case("transform-other-features", lambda: fitted().transform(X[:, :4], S), ValueError,
         "`X` has 4 features but the model was fitted on 5"),
    case("transform-unknown-study", lambda: fitted().transform(X, np.array(["zz"] * 12)), ValueError,
         "`study` has labels the model was not fitted on: ['zz']"),
    case("transform-nan", lambda: fitted().transform(put(X, np.nan), S), ValueError,
         "`X` contains 1 non-finite value(s)"),
    case("transform-study-length", lambda: fitted().transform(X, S[:5]), ValueError,
         "`study` has length 5 but X has 12 samples"),
    case("transform-unfitted", lambda: MSSVAE().transform(X, S), ValueError, "This MSSVAE is not fitted yet"),
    case("transform-columns-reordered", lambda: fitted_named().transform(pd.DataFrame(X, columns=list("zyxwv")), S),
         ValueError, "`X` has the fitted features as columns but in another order; pass `X[model.feature_names_in_]`"),
    case("transform-columns-subset", lambda: fitted_named().transform(pd.DataFrame(X[:, :3], columns=list("vwx")), S),
         ValueError, "`X` has 3 columns but the model was fitted on 5 features; missing e.g. ['y', 'z']"),
    case("transform-columns-other", lambda: fitted_named().transform(pd.DataFrame(X, columns=list("vwxyq")), S),
         ValueError, "`X` has columns the model was not fitted on: ['q']"),
    case("transform-default-names-reordered",
         lambda: fitted().transform(pd.DataFrame(X, columns=[f"feature_{j}" for j in (4, 3, 2, 1, 0)]), S),
         ValueError, "`X` has the fitted features as columns but in another order"),
    case("X-anndata", lambda: fit(ad.AnnData(X)), TypeError,
         "`X` is an AnnData; use mssvae.io.fit_anndata(adata, study_key)"),
    case("study-series-other-index",
         lambda: fit(pd.DataFrame(X, index=[f"s{i}" for i in range(12)]), pd.Series(S)), ValueError,
         "`study` is a pandas Series whose index does not match X's index (e.g. [0, 1, 2] are not rows of X)"),
    # ---- AnnData
    case("adata-not-anndata", lambda: fit_anndata(X, study_key="group"), TypeError,
         "`adata` must be an AnnData; got ndarray"),
    case("adata-genes-reordered",
         lambda: write_anndata(fitted_named(), ad.AnnData(X[:, ::-1], obs=pd.DataFrame({"group": S}),
                                                         var=pd.DataFrame(index=list("zyxwv"))), "group"),
         ValueError, "`adata` has the fitted genes as var_names but in another order"),
    case("adata-study-keys-collide",
         lambda: fit_anndata(ad.AnnData(X, obs=pd.DataFrame({"group": ["B/C"] * 6 + ["B_C"] * 6})), "group", **FAST),
         ValueError, "`study_key`: studies 'B/C' and 'B_C' would share the key 'B_C' in adata.varm and adata.uns"),
]


@pytest.mark.parametrize("call, exc, excerpt", CASES)
def test_bad_input_gets_its_documented_error(call, exc, excerpt):
    with pytest.raises(exc, match=re.escape(excerpt)) as info:
        call()
    assert isinstance(info.value, (ValueError, TypeError))
    if info.type.__name__ != "NotFittedError":  # about the model, not an argument
        assert NAMES_ARGUMENT.search(str(info.value)), f"message names no argument: {info.value}"


def _doc_rows() -> dict[str, tuple[str, str]]:
    """{id: (error type, message excerpt)} from the table in docs/bad_inputs.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\|\s*`([^`]+)`\s*\|", line)
        if not m:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        error, message = cells[-2], cells[-1]
        if message.startswith("``"):
            message = message[2:-2].strip()
        rows[m.group(1)] = (error.strip("`"), message)
    return rows


def test_catalogue_matches_the_docs():
    rows = _doc_rows()
    ids = [p.id for p in CASES]
    assert len(ids) >= 20
    assert sorted(rows) == sorted(ids), "docs/bad_inputs.md and CASES list different inputs"
    for p in CASES:
        _, exc, excerpt = p.values
        assert rows[p.id] == (exc.__name__, excerpt), p.id


# ------------------------------------------------------------------ behaviours that are not errors
def test_accepted_inputs():
    """Sparse matrices, DataFrames (nullable dtypes too), bool/int/float16 arrays, object arrays of
    numbers, lists, and label types from ints to dates are all fitted."""
    Xd = np.asarray(X)
    for data in (sparse.csr_matrix(Xd), sparse.csc_array(Xd), pd.DataFrame(Xd), Xd.astype(np.float16),
                 Xd.astype(object), Xd.tolist(), Xd > 0, np.round(Xd * 10).astype(np.int8)):
        assert np.isfinite(fit(data).W_shared_).all()
    fit(pd.DataFrame(C.astype(int)).astype("Int64"), likelihood="nb")
    for labels in (np.repeat([0, 1], 6), np.repeat([0.5, 1.5], 6), np.repeat([True, False], 6), list(S),
                   pd.Series(S, dtype="category"), pd.Series(S, dtype="string"), iter(S),
                   np.repeat(np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"), 6),
                   np.repeat([b"a", b"b"], 6), [1] * 6 + [1.0] * 3 + [np.int64(2)] * 3):
        model = fit(study=labels)
        assert len(model.studies_) == 2, labels
        assert np.isfinite(model.transform(X, S if isinstance(labels, type(iter(S))) else labels)).all()


def test_a_study_series_is_matched_to_a_dataframe_by_its_index():
    # Read by position, the shuffled Series would give half the samples the other study's label.
    frame = pd.DataFrame(X, index=[f"s{i}" for i in range(12)], columns=list("vwxyz"))
    ordered = pd.Series(S, index=frame.index)
    shuffled = ordered.sample(frac=1.0, random_state=0)
    assert (shuffled.to_numpy() != S).any()
    a, b = fit(frame, ordered), fit(frame, shuffled)
    np.testing.assert_array_equal(a.W_shared_, b.W_shared_)
    np.testing.assert_array_equal(a.transform(frame, ordered), a.transform(frame, shuffled))
    np.testing.assert_array_equal(a.transform(frame, ordered), a.transform(frame, S))   # arrays: by position


def test_numbers_as_text_and_date_labels_come_back_as_plain_python():
    model = fit(study=np.repeat(np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"), 6))
    assert model.studies_ == ["2020-01-01", "2021-06-30"]
    assert fit(study=[1] * 6 + [2.0] * 6).studies_ == [1.0, 2.0]
    assert fit(study=["x"] * 6 + [2] * 6).studies_ == ["2", "x"]


def test_n_specific_dict_keys_match_labels_by_value_or_text():
    model = fit(study=np.repeat([0.0, 1.0], 6), n_specific={0: 1, 1: 2})
    assert [w.shape[1] for w in model.W_specific_.values()] == [1, 2]
    model = fit(study=np.repeat([1, 2], 6), n_specific={"1": 2, "2": 0})
    assert [w.shape[1] for w in model.W_specific_.values()] == [2, 0]


def test_a_constant_feature_is_kept_with_a_warning():
    Xc = put(X, 0.0)
    Xc[:, 2] = 3.0
    with pytest.warns(UserWarning, match=re.escape("`X` has 1 feature(s) with the same value in every sample")):
        model = MSSVAE(**FAST).fit(Xc, S)
    assert model.n_features_in_ == 5
    assert np.isfinite(model.transform(Xc, S)).all()


def test_constant_features_do_not_collapse_the_gaussian_noise_prior():
    """With ≥ 5 % constant features the 5 % quantile of the feature variances is 0, so the noise
    prior and the starting σ² fall to the floor (1e-6) for every feature: measured on the
    two-block simulation with 10 constant features out of 50, shared consensus fell from 1.00 to
    0.12 and the first epoch's loss was 1.3e8 (benchmarks/results/bad_input_facts.txt).  After one
    epoch the real features' σ² must still be near their data variance."""
    Xc = np.hstack([X, np.zeros((12, 5))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MSSVAE(**FAST).fit(Xc, S)
    assert model.noise_variance_[:5].min() > 1e-2


# ------------------------------------------------------------------ extreme but valid data
def assert_finite_fit(model, Xd, study):
    assert np.isfinite(model.module_.W.detach().numpy()).all()
    assert np.isfinite(model.history_.select_dtypes("number").to_numpy()).all()
    assert np.isfinite(model.transform(Xd, study)).all()
    assert np.isfinite(model.reconstruct(Xd, study)).all()


def extreme_fit(Xd, study, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # numpy overflow warnings count as failures
        warnings.filterwarnings("ignore", message=r".*carry information", category=RuntimeWarning)
        # our own diagnostic, not an overflow: a 2-epoch fit of a few samples of 1e15 may well blow up
        warnings.filterwarnings("ignore", message="Training blew up", category=RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # the constant-feature warning
        model = MSSVAE(**{**FAST, "max_epochs": 3, **kwargs}).fit(Xd, study)
    assert_finite_fit(model, Xd, study)
    return model


def test_nb_library_sizes_of_1e8():
    rng = np.random.default_rng(0)
    Xd = rng.multinomial(10**8, rng.dirichlet(np.ones(30)), size=12).astype(float)
    extreme_fit(Xd, S, likelihood="nb")


def test_nb_library_sizes_from_10_to_1e8_across_studies():
    rng = np.random.default_rng(1)
    p = rng.dirichlet(np.ones(30))
    Xd = np.vstack([rng.multinomial(10**8, p, size=6), rng.multinomial(10, p, size=6)]).astype(float)
    extreme_fit(Xd, S, likelihood="nb")


@pytest.mark.parametrize("likelihood", ["nb", "gaussian"])
def test_genes_all_zero_within_one_study(likelihood):
    Xd = (count_data()[0] if likelihood == "nb" else X).copy()
    Xd[S == "a", :2] = 0.0
    extreme_fit(Xd, S, likelihood=likelihood)


@pytest.mark.parametrize("likelihood", ["nb", "gaussian"])
def test_genes_all_zero_everywhere_and_an_empty_sample(likelihood):
    Xd = (count_data()[0] if likelihood == "nb" else X).copy()
    Xd[:, 0] = 0.0
    Xd[3] = 0.0  # NB: library size 0
    extreme_fit(Xd, S, likelihood=likelihood)


@pytest.mark.parametrize("likelihood", ["nb", "gaussian"])
def test_a_study_of_exactly_two_samples(likelihood):
    Xd = count_data()[0] if likelihood == "nb" else X
    study = np.array(["big"] * 10 + ["small"] * 2)
    model = extreme_fit(Xd, study, likelihood=likelihood)
    assert model.studies_ == ["big", "small"]


@pytest.mark.parametrize("likelihood", ["nb", "gaussian"])
def test_batch_size_larger_than_n(likelihood):
    Xd = count_data()[0] if likelihood == "nb" else X
    extreme_fit(Xd, S, likelihood=likelihood, batch_size=1000)


def test_batch_size_far_beyond_n_draws_balanced_cycles_of_each_study():
    """batch_size=10**6 on 12 samples is kept (a batch reuses samples, with weights n_m / per_study),
    but the sampler builds its queue in one concatenation of reshuffled cycles: it was quadratic in
    the batch size (19 s per epoch measured).  Each sample appears ⌊or⌉ per_study / n_m times."""
    from mssvae.training import BalancedBatches

    study = np.repeat([0, 1], [5, 7])
    batches = BalancedBatches(study, 10**5, torch.Generator().manual_seed(0))
    idx = batches.next()
    assert len(idx) == 2 * batches.per_study == 10**5
    for s in (0, 1):
        counts = np.bincount(idx[study[idx] == s], minlength=12)[study == s]
        assert counts.max() - counts.min() <= 1 and counts.sum() == batches.per_study


def test_gaussian_values_at_the_documented_limit():
    rng = np.random.default_rng(2)
    Xd = rng.normal(size=(2000, 5))
    Xd *= 1e15 / np.abs(Xd).max()
    extreme_fit(Xd, np.repeat(["a", "b"], 1000), batch_size=2000)


def test_nb_counts_at_the_documented_limit():
    rng = np.random.default_rng(3)
    Xd = rng.integers(0, 10**15, size=(12, 5), endpoint=True).astype(float)
    extreme_fit(Xd, S, likelihood="nb")


# η is clamped below 1 at float32's resolution (1 - 1e-12 rounds to 1.0, and log(1 - η) = -inf once η
# reaches 1, which a = 1, b ≤ 1 allow): found by the hypothesis test below.


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_one_feature_and_four_samples(likelihood):
    """With G = 1 the default b = G = 1 lets η_k = p*_k reach 1.0: found by the hypothesis test
    below (a NaN loss at the second epoch, every seed tried)."""
    Xd = count_data(4, 1)[0] if likelihood == "nb" else X[:4, :1]
    extreme_fit(Xd, np.array(["a", "a", "b", "b"]), likelihood=likelihood, max_epochs=2, batch_size=1)


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_beta_prior_with_b_of_1(likelihood):
    """b = 1 is a valid Beta prior, and diverged on every fit tried (5 to 20 features)."""
    Xd = count_data()[0] if likelihood == "nb" else X
    extreme_fit(Xd, S, likelihood=likelihood, max_epochs=5, batch_size=4, b=1.0)


@HYPOTHESIS
@given(n=st.integers(4, 10), g=st.integers(2, 4), likelihood=st.sampled_from(["gaussian", "nb"]),
       exponents=st.lists(st.integers(-30, 15), min_size=4, max_size=4), seed=st.integers(0, 2**16),
       zero_fraction=st.sampled_from([0.0, 0.5, 0.9, 1.0]), batch_size=st.sampled_from([1, 2, 8, 1000]))
def test_random_valid_data_of_any_scale_fit_to_finite_values(n, g, likelihood, exponents, seed, zero_fraction,
                                                             batch_size):
    """Features on scales from 1e-30 to the 1e15 limit, mostly or only zeros, tiny studies and
    batch sizes from 1 to beyond N: the fit, `transform` and `reconstruct` stay finite, with no numpy
    overflow warning.  (G ≥ 2: G = 1 is the η-clamp case above.)"""
    rng = np.random.default_rng(seed)
    scale = 10.0 ** np.array(exponents[:g])
    if likelihood == "nb":
        Xd = np.floor(rng.random((n, g)) * scale)
    else:
        Xd = rng.normal(size=(n, g)) * scale / 5
    Xd[rng.random((n, g)) < zero_fraction] = 0.0
    study = np.array(["a", "b"] * (n // 2) + ["a"] * (n % 2))
    if likelihood == "nb" and not Xd.any():   # no counts at all: the documented X-nb-all-zero error
        with pytest.raises(ValueError, match="has no counts"):
            MSSVAE(likelihood="nb").fit(Xd, study)
        return
    extreme_fit(Xd, study, likelihood=likelihood, n_shared=1, max_epochs=2, batch_size=batch_size)


# ------------------------------------------------------------------ property-based
def _assert_documented(err: Exception) -> None:
    assert isinstance(err, (ValueError, TypeError)), f"{type(err).__name__}: {err}"
    assert NAMES_ARGUMENT.search(str(err)), f"message names no argument: {err}"


def _fit_or_documented_error(Xd, study, **kwargs):
    """Fit (1 epoch, tiny nets) or raise a documented error; return the model or None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # an overflow in numpy is a finding too
            warnings.filterwarnings("ignore", message=r".*carry information", category=RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            model = MSSVAE(**{**FAST, "n_shared": 1, "batch_size": 8, **kwargs}).fit(Xd, study)
    except (ValueError, TypeError) as err:
        _assert_documented(err)
        return None
    assert np.isfinite(model.module_.W.detach().numpy()).all()
    assert np.isfinite(model.history_["loss"]).all()
    return model


DTYPES = ["float64", "float32", "float16", "int64", "int8", "uint8", "bool", "complex128", "object", "U3",
          "datetime64[D]"]
SPECIAL = [np.nan, np.inf, -np.inf, 0.0, -1.0, 0.5, 1e20, -1e16]


@st.composite
def matrices(draw):
    """Arrays of 0-3 dims, 0-9 rows and 0-4 columns, any of DTYPES, with NaN/inf/huge/negative/
    fractional entries at random places (kept 2-d and non-empty most of the time)."""
    ndim = draw(st.sampled_from([2] * 8 + [0, 1, 3]))
    n = draw(st.integers(0, 9))
    g = draw(st.integers(0, 4))
    shape = {0: (), 1: (n,), 2: (n, g), 3: (n, g, 2)}[ndim]
    dtype = draw(st.sampled_from(DTYPES))
    size = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    base = rng.poisson(3, size=size).astype(float) if draw(st.booleans()) else rng.normal(size=size)
    n_special = draw(st.integers(0, min(size, 3)))
    for k in rng.choice(size, n_special, replace=False) if n_special else []:
        base[k] = draw(st.sampled_from(SPECIAL))
    if dtype == "object":
        values = [draw(st.one_of(st.just(v), st.none(), st.text(max_size=2), st.integers(-3, 3), st.booleans()))
                  if rng.random() < 0.1 else v for v in base.tolist()]
        arr = np.empty(size, dtype=object)
        arr[:] = values
    elif dtype == "datetime64[D]":
        arr = np.full(size, np.datetime64("2020-01-01"))
    else:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = base.astype(dtype)
    arr = arr.reshape(shape)
    kind = draw(st.sampled_from(["array"] * 6 + ["list", "frame", "sparse"]))
    if kind == "list":
        return arr.tolist()
    if kind == "frame" and arr.ndim == 2:
        return pd.DataFrame(arr)
    if kind == "sparse" and arr.ndim == 2 and arr.dtype.kind in "biufc" and arr.dtype != np.float16:
        return sparse.csr_matrix(arr)
    return arr


LABELS = ["a", "b", "c", 1, "1", 2.5, None, np.nan, True, b"a"]


@st.composite
def labels_for(draw, n):
    """Study labels: mostly a valid a/b split of the right length, otherwise wrong lengths,
    missing values, mixed types, one study or tiny studies."""
    length = max(0, n + draw(st.sampled_from([0] * 6 + [-1, 1])))
    if draw(st.booleans()):
        values = [["a", "b"][i % 2] for i in range(length)]
    else:
        values = draw(st.lists(st.sampled_from(LABELS), min_size=length, max_size=length))
    form = draw(st.sampled_from(["list", "array", "series"]))
    if form == "array":
        return np.asarray(values, dtype=object) if any(v is None or isinstance(v, bytes) for v in values) \
            else np.asarray(values)
    if form == "series":
        return pd.Series(values, dtype=object)
    return values


def _n_rows(Xd) -> int:
    shape = getattr(Xd, "shape", None) or np.shape(np.asarray(Xd, dtype=object))
    return shape[0] if len(shape) else 0


@HYPOTHESIS
@given(data=st.data(), likelihood=st.sampled_from(["gaussian", "nb"]))
def test_random_data_fit_or_get_a_documented_error(data, likelihood):
    Xd = data.draw(matrices(), label="X")
    study = data.draw(labels_for(_n_rows(Xd)), label="study")
    model = _fit_or_documented_error(Xd, study, likelihood=likelihood)
    if model is not None:
        assert np.isfinite(model.transform(Xd, study)).all()


GOOD_AND_BAD = {
    "n_shared": [0, 1, 2, -1, 1.5, None, "2", True],
    "n_specific": [0, 1, -1, {"a": 1, "b": 0}, {"a": 1}, {"a": 1, "b": 1, "z": 2}, {"a": -1, "b": 1}, [1, 1], 1.0],
    "hidden": [(4, 4), (3, 5), (0, 4), (4,), (4, 4, 4), 4, "44", (4.0, 4), None, (-2, 4)],
    "max_epochs": [1, 2, 0, -1, 1.0, "1"],  # None (the default, 500-800 epochs) would only be slow
    "batch_size": [1, 3, 8, 1000, 0, -8, 8.0, False],
    "lr": [1e-3, 1e-1, 0, -1e-3, float("nan"), float("inf"), "1e-3", None],
    "lr_W": [1e-2, 1.0, 0, -1.0, float("inf"), "x", None],
    "likelihood": ["gaussian", "nb", "NB", "poisson", None, 3],
    "prior_weight": ["auto", "fixed", "calibrated", 1.0, 0.0, -1.0, "bad", float("nan")],
    "lambda1": [0.1, 0.0, -1.0, "x", "empirical", (0.1, 1.0, 0.1), (0.1, -1.0, 0.1), [0.1]],
    "a": [1.0, 0.0, float("inf")],
    "b": [None, 5.0, 0.0, -2.0],
    "noise_alpha": [1.5, 0.0, -1.0],
    "feature_chunk_size": [None, 1, 2, 0, -3, 2.5],
    "feature_subsample": [1.0, 0.5, 0.01, 0, 1.5, "half"],
    "kl_weight": ["auto", 1.0, 5.0, 0.0, -1.0, float("inf"), "x"],
    "kl_warmup": ["auto", 0, 0.3, 1.0, -0.1, 1.5, "yes"],
    "lr_decay": ["auto", 0, 0.2, 1.0, -0.1, 1.5, "yes"],
    "kl_free": ["auto", 0, 0.5, 3.0, (0.5, 0.0), [], (1.0, 1.0), -1.0, float("nan"), "x"],
    "merge_dependent": ["auto", None, False, 0.5, 0, 1.5, "yes"],
    "dispersion_init": ["auto", "moments", 50.0, 0, -1.0, "x"],
    "dispersion_warmup": ["auto", 0, 0.3, 1.0, -0.1, 1.5, "yes"],
    "mask_init": ["auto", "ones", "varimax", ("varimax", "ones"), ("ones", "ones"), [], "pca", None],
    "select_after": ["auto", 0.35, 1, 1.0, 0, 1.5, "early", True],
    "min_anchors": [0, 2, 3, -1, 1.5, "2"],
    "n_init": [1, 2, 0, 1.0],
    "prune_masks": [True, False, "no", 1],
    "precision": ["auto", "fp32", "bf16", "fp16", None],
}


@HYPOTHESIS
@given(params=st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in GOOD_AND_BAD.items()}))
def test_random_settings_fit_or_get_a_documented_error(params):
    Xd, study = count_data()  # counts suit both likelihoods
    _fit_or_documented_error(Xd, study, **{"hidden": (4, 4), **params})


# Settings whose checks model.py calls (they were added after the first catalogue).
GOOD_AND_BAD_PENDING = {
    "lambda0": [(1.0, 10.0, 15.0), [1, 5, 5], 10.0, None, "abc", (1.0, 2.0)],
    "anneal_fractions": [(0.05, 0.25), [0.0, 0.0], 0.5, None, (float("nan"), 0.1), ("a", "b")],
    "normalize_decoder": [None, True, False, "no", 1],
    "random_state": [0, 7, 2**70, 1.5],
    "device": ["cpu", "auto", "gpu", "cuda:99", "meta", None],
    "verbose": [False, "yes"],
}
FEATURE_NAMES = [None, list("abcde"), pd.Index(range(5)), list("abcca"), "abcde", list("abcd"), [None] * 5]


@settings(HYPOTHESIS, phases=[Phase.explicit, Phase.generate])  # no shrinking while it is expected to fail
@given(params=st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in GOOD_AND_BAD_PENDING.items()}),
       feature_names=st.sampled_from(FEATURE_NAMES))
def test_random_settings_checked_in_model_fit_or_get_a_documented_error(params, feature_names):
    Xd, study = gaussian_data()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            MSSVAE(**{**FAST, **params}).fit(Xd, study, feature_names=feature_names)
    except (ValueError, TypeError) as err:
        _assert_documented(err)


@HYPOTHESIS
@given(data=st.data())
def test_random_data_at_transform_transform_or_get_a_documented_error(data):
    model = fitted()
    Xd = data.draw(matrices(), label="X")
    study = data.draw(labels_for(_n_rows(Xd)), label="study")
    try:
        Z = model.transform(Xd, study)
    except (ValueError, TypeError) as err:
        _assert_documented(err)
        return
    assert Z.shape == (_n_rows(Xd), len(model.factor_names_))
    assert np.isfinite(Z).all()


def test_likelihood_given_as_an_array_is_named():
    with pytest.raises((ValueError, TypeError), match="`likelihood`"):
        MSSVAE(likelihood=np.array(["nb", "gaussian"]), **FAST).fit(X, S)
