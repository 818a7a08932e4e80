"""AnnData in and out (the way muon's ``mu.tl.mofa`` writes its results), and table readers."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from . import _validation as val
from .model import MSSVAE


def _get_matrix(adata, layer):
    if not all(hasattr(adata, a) for a in ("X", "obs", "var_names", "layers")):
        raise TypeError(f"`adata` must be an AnnData; got {type(adata).__name__} "
                        "(for arrays and DataFrames use MSSVAE().fit(X, study))")
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise ValueError(f"`layer` {layer!r} is not in adata.layers (available: {list(adata.layers)})")
    return adata.layers[layer]


def _get_study(adata, study_key):
    if study_key not in adata.obs:
        raise ValueError(f"`study_key` {study_key!r} is not a column of adata.obs (columns: {list(adata.obs)})")
    return adata.obs[study_key]


def varm_key(key_added: str, what: str, study) -> str:
    """Key of a study's matrix in ``adata.varm``: ``{key_added}_{what}_{study}``.

    h5ad keys cannot hold "/", so it is written as "_".  (A study called "shared", refused by ``fit``
    since session 25, would collide with W^(S): a model saved before that gets a "study_" prefix.)
    """
    return f"{key_added}_{what}_{_study_label(study)}"


def _study_label(study) -> str:
    """A study label as an h5ad key (in ``varm`` names and as ``uns`` dict keys): "/" would open a
    nested group on writing, and "shared" would collide with W^(S) in ``varm``."""
    label = str(study).replace("/", "_")
    return "study_shared" if label == "shared" else label


def fit_anndata(adata, study_key: str, layer: str | None = None, key_added: str = "mssvae",
                model: MSSVAE | None = None, checkpoint_dir=None, checkpoint_every: int = 10,
                **model_kwargs) -> MSSVAE:
    """Fit an MSSVAE on ``adata`` and write the results into it.

    Reads values (or counts, for ``likelihood="nb"``) from ``adata.X`` or ``adata.layers[layer]``
    and the study of each sample from ``adata.obs[study_key]``.  Writes

    - ``adata.obsm[f"X_{key_added}"]``: posterior factor means (n_obs, K_S + Σ K_m), z~ layout;
    - ``adata.varm[f"{key_added}_W_shared"]``: W^(S) (n_vars, K_S) and
      ``adata.varm[f"{key_added}_W_{study}"]``: W^(m) (n_vars, K_m), one per study;
      the same with ``_pip_`` for the posterior inclusion probabilities p*;
    - ``adata.uns[key_added]``: settings, study labels, factor names, active factors, and the
      per-epoch loss history.

    A study's label in a key (``varm`` names, ``uns[key_added]["active_specific"]`` and
    ``["n_specific_active"]``) has "/" written as "_": h5ad would read "/" as a nested group.
    Labels that would then share a key ("B/C" and "B_C") are refused before the fit.
    ``uns[key_added]["studies"]`` keeps the labels as they are.

    ``checkpoint_dir``/``checkpoint_every`` are passed to :meth:`MSSVAE.fit` (resumable training).
    Returns the fitted model.  When training diverges (``TrainingDivergedError``) after at least one
    finished epoch, the last finite state is written into ``adata`` (``uns[key_added]["converged"]``
    False) before the error is raised again.
    """
    from .training import TrainingDivergedError

    model = model if model is not None else MSSVAE(**model_kwargs)
    X = _get_matrix(adata, layer)
    study = _get_study(adata, study_key)
    _check_study_keys(pd.unique(study.dropna()))   # before the fit, not after it
    try:
        model.fit(X, study, feature_names=np.asarray(adata.var_names), checkpoint_dir=checkpoint_dir,
                  checkpoint_every=checkpoint_every)
    except TrainingDivergedError:
        # The model holds its last finite state: write it (marked not converged) so that a caller
        # such as the command line can keep what the error message says is kept; after no finished
        # epoch there is only the untrained initialisation, which is not written.
        if len(getattr(model, "history_", ())) > 0:
            write_anndata(model, adata, study_key, layer, key_added)
        raise
    write_anndata(model, adata, study_key, layer, key_added)
    return model


def _check_study_keys(studies) -> None:
    """Refuse labels that would share one h5ad key ("B/C" and "B_C"): one study's W would overwrite
    the other's in ``varm`` without a sign."""
    seen: dict[str, object] = {}
    for lab in studies:
        key = _study_label(lab)
        if key in seen and str(seen[key]) != str(lab):
            raise ValueError(f"`study_key`: studies {str(seen[key])!r} and {str(lab)!r} would share the key {key!r} in "
                             "adata.varm and adata.uns (h5ad cannot hold '/', so it is written as '_'); "
                             "rename one of them")
        seen[key] = lab


def _check_genes(model: MSSVAE, adata) -> None:
    """``adata``'s genes must be the fitted ones in the fitted order: they are read by position, so
    another order would give wrong factors and misaligned rows of W in ``varm`` without a sign."""
    val.check_names_in_order(adata.var_names, model.feature_names_in_, "adata", "genes", "var_names",
                             "`adata[:, model.feature_names_in_]`")


def write_anndata(model: MSSVAE, adata, study_key: str, layer: str | None = None,
                  key_added: str = "mssvae") -> None:
    """Write a fitted model's factors, masks and metadata into ``adata`` (see :func:`fit_anndata`).

    ``adata``'s var_names must be the fitted genes in the fitted order (a model fitted without
    names, ``feature_0`` …, takes any)."""
    X = _get_matrix(adata, layer)
    study = _get_study(adata, study_key)
    _check_genes(model, adata)
    _check_study_keys(model.studies_)
    adata.obsm[f"X_{key_added}"] = model.transform(X, study)
    adata.varm[f"{key_added}_W_shared"] = model.W_shared_
    adata.varm[f"{key_added}_pip_shared"] = model.inclusion_shared_
    for lab in model.studies_:
        adata.varm[varm_key(key_added, "W", lab)] = model.W_specific_[lab]
        adata.varm[varm_key(key_added, "pip", lab)] = model.inclusion_specific_[lab]
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.get_params().items()}
    params = {k: (str(v) if isinstance(v, dict) else v) for k, v in params.items() if v is not None}
    adata.uns[key_added] = {
        "params": params,
        "study_key": study_key,
        "studies": [str(s) for s in model.studies_],
        "factor_names": list(model.factor_names_),
        "active_shared": model.active_shared_,
        # Keyed as in varm_key; "studies" keeps the labels as they are, in the same order.
        "active_specific": {_study_label(k): v for k, v in model.active_specific_.items()},
        "n_shared_active": model.n_shared_active_,
        "n_specific_active": {_study_label(k): v for k, v in model.n_specific_active_.items()},
        # Each merged group as one string "kept+other+...": h5ad stores ragged lists badly.
        "merged_factors": ["+".join(group) for group in model.merged_factors_],
        "redundant_factors": list(model.redundant_factors_),
        # "composite>parent+parent", one string each, for the same reason.
        "composite_factors": [f"{c}>{a}+{b}" for c, a, b in getattr(model, "composite_factors_", [])],
        "pruned_entries": int(getattr(model, "pruned_entries_", 0)),
        "kl_free": float("nan") if getattr(model, "kl_free_", None) is None else float(model.kl_free_),
        "lambda1": float(model.lambda1_),   # the slab penalty used: the fitted one for lambda1="empirical"
        # Keys as text: h5ad stores string-keyed mappings.
        "candidate_scores": {f"{k:g}": float(v) for k, v in getattr(model, "candidate_scores_", {}).items()},
        "mask_init": model.mask_init_,
        "start_scores": {k: float(v) for k, v in getattr(model, "start_scores_", {}).items()},
        "select_epoch": int(getattr(model, "select_epoch_", 0)),   # when the candidates were compared
        "init_scores": np.asarray(getattr(model, "init_scores_", []), dtype=float),
        "history": {c: model.history_[c].to_numpy() for c in model.history_.columns},
        "device": model.device_,
        "converged": bool(model.converged_),
    }
    candidates = getattr(model, "candidates_", None)
    if candidates is not None and len(candidates):   # one array per column of MSSVAE.candidates_
        adata.uns[key_added]["candidates"] = {
            c: candidates[c].to_numpy(dtype=str if c == "mask_init" else bool if c in ("trained_to_end", "kept")
                                      else float) for c in candidates.columns}
    if layer is not None:  # h5ad cannot store None; absent means adata.X
        adata.uns[key_added]["layer"] = layer


def read_input(path, study_key: str):
    """Read an ``.h5ad`` file, or a CSV/TSV with one row per sample, a study column and numeric
    feature columns (the first column is used as the sample index when it is not numeric).

    Returns an AnnData.  Reading never runs code from the file (no pickles).
    """
    import anndata as ad

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"input file {path} does not exist")
    if path.suffix == ".h5ad":
        return ad.read_h5ad(path)
    sep = "\t" if path.suffix in {".tsv", ".txt"} or path.name.endswith((".tsv.gz", ".txt.gz")) else ","
    df = pd.read_csv(path, sep=sep)
    if study_key not in df.columns:
        raise ValueError(f"`--study-key` {study_key!r} is not a column of {path} (columns: {list(df.columns)[:10]})")
    first = df.columns[0]
    if first != study_key and not pd.api.types.is_numeric_dtype(df[first]):
        df = df.set_index(first)
    study = df.pop(study_key).astype(str)
    non_numeric = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if non_numeric:
        raise ValueError(f"{path}: feature columns must be numeric; non-numeric: {non_numeric[:5]}")
    adata = ad.AnnData(X=df.to_numpy(dtype=np.float32), obs=pd.DataFrame({study_key: study.to_numpy()},
                                                                         index=df.index.astype(str)))
    adata.var_names = df.columns.astype(str)
    return adata


def read_counts_table(counts_path, samples_path, sample_column: str | None = None, return_info: bool = False):
    """Read a genes × samples counts table (GEO layout) and its sample sheet into an AnnData.

    counts_path : CSV/TSV (optionally .gz) whose first column holds gene ids and whose other columns
        are samples.  samples_path : CSV/TSV with one row per sample.  ``sample_column`` names the
        sheet's column of counts-column names; None means ``"sample"``, and when the sheet has no such
        column its rows are matched to the counts columns by position (with a UserWarning).  A column
        named explicitly must exist.  Repeated sample ids in the sheet or repeated counts-column names
        are refused: either would give one sample another's counts or metadata.  A sheet may list a
        subset of the counts columns; the others are left out with a UserWarning naming a few.
        Plain text only: nothing in the files is executed.

    Returns AnnData (n_samples, n_genes) with the sheet as ``obs``; with ``return_info`` also
    ``{"n_count_columns", "not_in_sheet", "matched_by": "name" | "position"}``, for the report's
    first step (:func:`mssvae.preprocess.add_sample_sheet_step`).
    """
    import anndata as ad

    def sep_of(p: Path) -> str:
        return "\t" if p.name.endswith((".tsv", ".txt", ".tsv.gz", ".txt.gz")) else ","

    def repeated(values) -> list[str]:
        s = pd.Series(list(values), dtype=object)
        return list(pd.unique(s[s.duplicated()].to_numpy()))

    counts_path, samples_path = Path(counts_path), Path(samples_path)
    for p, what in ((counts_path, "counts file"), (samples_path, "sample sheet")):
        if not p.is_file():
            raise ValueError(f"{what} {p} does not exist")
    counts = pd.read_csv(counts_path, sep=sep_of(counts_path), index_col=0)
    # The header as written: pandas renames a repeated column "S1" to "S1.1", which would hide it.
    header = pd.read_csv(counts_path, sep=sep_of(counts_path), header=None, nrows=1, dtype=str,
                         keep_default_na=False).iloc[0].tolist()[1:]
    twice = repeated(str(c) for c in header)
    if twice:
        raise ValueError(f"{counts_path}: {len(twice)} sample column name(s) appear more than once: {twice[:5]}; "
                         "each sample needs one column")
    sheet = pd.read_csv(samples_path, sep=sep_of(samples_path))
    non_numeric = [c for c in counts.columns if not pd.api.types.is_numeric_dtype(counts[c])]
    if non_numeric:
        raise ValueError(f"{counts_path}: sample columns must be numeric counts; non-numeric: {non_numeric[:5]}")
    explicit = sample_column is not None
    sample_column = "sample" if sample_column is None else sample_column
    columns = counts.columns.astype(str)
    not_in_sheet, matched_by = [], "name"
    if sample_column in sheet.columns:
        names = sheet[sample_column].astype(str)
        twice = repeated(names)
        if twice:
            raise ValueError(f"{samples_path}: {len(twice)} sample id(s) of column {sample_column!r} are on more "
                             f"than one row ({int(names.isin(twice).sum())} rows): {twice[:5]}; each sample needs "
                             "exactly one row")
        listed = set(names)
        missing = sorted(listed - set(columns))
        if missing:
            raise ValueError(f"{len(missing)} sample(s) of {samples_path} are not columns of {counts_path}: "
                             f"{missing[:5]}")
        not_in_sheet = [c for c in columns if c not in listed]
        if not_in_sheet:
            warnings.warn(f"{len(not_in_sheet)} of {len(columns)} sample column(s) of {counts_path} have no row in "
                          f"{samples_path} and are left out: {not_in_sheet[:5]}", UserWarning, stacklevel=2)
        counts = counts.loc[:, names.to_numpy()]
        sheet = sheet.set_index(names.to_numpy())
    elif explicit:
        raise ValueError(f"sample column {sample_column!r} is not a column of {samples_path} "
                         f"(columns: {list(map(str, sheet.columns))})")
    elif len(sheet) == counts.shape[1]:
        warnings.warn(f"{samples_path} has no {sample_column!r} column: its {len(sheet)} rows are matched to the "
                      f"columns of {counts_path} by position (row 1 = first sample column); name the column "
                      "holding the sample ids with --sample-column / `sample_column` to match by name",
                      UserWarning, stacklevel=2)
        sheet.index = columns
        matched_by = "position"
    else:
        raise ValueError(f"{samples_path} has no {sample_column!r} column and {len(sheet)} rows for "
                         f"{counts.shape[1]} samples in {counts_path}")
    sheet.index = sheet.index.astype(str)
    adata = ad.AnnData(X=counts.to_numpy().T, obs=sheet)
    adata.var_names = counts.index.astype(str)
    if not return_info:
        return adata
    return adata, {"n_count_columns": len(columns), "not_in_sheet": not_in_sheet, "matched_by": matched_by}
