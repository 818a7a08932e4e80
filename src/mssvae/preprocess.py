"""Count preprocessing of the paper's App. C.4 (platelet RNA-seq), and Ensembl id → symbol mapping.

:func:`preprocess_counts` runs, in this order,

1. drop samples whose total count is below ``exp(min_total_log)`` (the paper: e^12.5 ≈ 268,337);
2. keep genes with at least ``min_gene_counts`` counts over the kept samples;
3. keep genes with counts-per-million above ``min_cpm`` in at least ``min_cpm_fraction`` of the kept samples;
4. keep the ``n_top_genes`` most variable genes by Pearson residuals of a negative binomial offset model
   (Lause et al., 2021), computed by scanpy.

The result keeps raw counts, because the negative binomial likelihood models counts, not residuals.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import math
import numbers
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

REPORT_COLUMNS = ["step", "samples_before", "samples_after", "genes_before", "genes_after",
                  "removed_samples", "removed_genes", "note"]
UNS_KEY = "mssvae_preprocess"

# Stable Ensembl ids (ENSG00000141510, ENSMUSG..., ENST...) with a version suffix (".12"); a GENCODE
# "_PAR_Y" tail after the version is kept, so that the X and Y copies of a PAR gene stay distinct.
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*[0-9]{11})\.[0-9]+")


# ----------------------------------------------------------------------------------------------
# preprocess_counts


def _where(layer) -> str:
    return "adata.X" if layer is None else f"adata.layers[{layer!r}] (`layer`)"


def _counts_matrix(adata, layer):
    """The (n_obs, n_vars) count matrix, dense ndarray or CSR, validated as non-negative integers."""
    if layer is None:
        X = adata.X
        if X is None:
            raise ValueError("adata.X is None: pass `layer` naming the layer that holds the raw counts")
    else:
        if layer not in adata.layers:
            raise ValueError(f"`layer` {layer!r} is not in adata.layers (available: {list(adata.layers)})")
        X = adata.layers[layer]
    where = _where(layer)
    if sparse.issparse(X):
        # CSR: row sums, row scaling and boolean row/column subsetting all stay cheap.
        X = sparse.csr_matrix(X)
        values = X.data
    else:
        X = np.asarray(X)
        values = X
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"counts in {where} must be a non-empty 2-d (n_obs, n_vars) matrix; got shape {X.shape}")
    if values.dtype == bool or not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(f"counts in {where} must be real numbers; got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.floating):
        n_bad = int(np.count_nonzero(~np.isfinite(values)))
        if n_bad:
            raise ValueError(f"counts in {where} contain {n_bad} non-finite value(s) (NaN or inf); "
                             "preprocess_counts needs raw counts")
    n_neg = int(np.count_nonzero(values < 0))
    if n_neg:
        raise ValueError(f"counts in {where} contain {n_neg} negative value(s) (min {values.min()}); "
                         "preprocess_counts needs raw counts")
    if np.issubdtype(values.dtype, np.floating):
        frac = values != np.floor(values)
        n_frac = int(np.count_nonzero(frac))
        if n_frac:
            example = values[frac].flat[0]
            raise ValueError(f"counts in {where} contain {n_frac} non-integer value(s) (e.g. {example}); "
                             "preprocess_counts needs raw counts, not normalised or log values")
    return X


def _study_labels(adata, study_key) -> pd.Series:
    if study_key not in adata.obs.columns:
        raise ValueError(f"`study_key` {study_key!r} is not a column of adata.obs (columns: {list(adata.obs.columns)})")
    study = adata.obs[study_key]
    missing = study.isna().to_numpy()
    as_text = study.astype(object).map(lambda v: isinstance(v, str) and v.strip() == "").to_numpy(dtype=bool)
    missing |= as_text
    if missing.any():
        first = list(adata.obs_names[missing][:5])
        raise ValueError(f"`study_key` column {study_key!r} has {int(missing.sum())} missing value(s) "
                         f"(NaN, None or empty string), e.g. in samples {first}; every sample needs a study")
    n_studies = study.nunique()
    if n_studies < 2:
        raise ValueError(f"`study_key` column {study_key!r} holds {n_studies} distinct study; "
                         "multi-study preprocessing needs at least 2 studies")
    return study


def _check_number(name, value, low=None, high=None, integer=False):
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"`{name}` must be a finite {'integer' if integer else 'number'}; got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"`{name}` must be in [{low}, {'inf' if high is None else high}]; got {value!r}")


def _check_params(min_total_log, min_gene_counts, min_cpm, min_cpm_fraction, n_top_genes, min_study_samples):
    if min_total_log is not None:
        _check_number("min_total_log", min_total_log)
    _check_number("min_gene_counts", min_gene_counts, low=0)
    _check_number("min_cpm", min_cpm, low=0)
    _check_number("min_cpm_fraction", min_cpm_fraction, low=0, high=1)
    if n_top_genes is not None:
        _check_number("n_top_genes", n_top_genes, low=1, integer=True)
    _check_number("min_study_samples", min_study_samples, low=1, integer=True)


def _row_sums(X) -> np.ndarray:
    return np.asarray(X.sum(axis=1), dtype=np.float64).ravel()


def _col_sums(X) -> np.ndarray:
    return np.asarray(X.sum(axis=0), dtype=np.float64).ravel()


def _n_cpm_above(X, lib_size: np.ndarray, min_cpm: float) -> np.ndarray:
    """Number of samples with CPM > min_cpm, per gene: shape (n_vars,)."""
    scale = np.divide(1e6, lib_size, out=np.zeros_like(lib_size), where=lib_size > 0)
    if sparse.issparse(X):
        # min_cpm >= 0, so implicit zeros never count and the comparison stays sparse.
        cpm = sparse.csr_matrix(sparse.diags(scale) @ X)
        return np.asarray((cpm > min_cpm).sum(axis=0)).ravel()
    return np.count_nonzero(X * scale[:, None] > min_cpm, axis=0)


def _import_scanpy():
    try:
        import scanpy as sc
    except ImportError as err:
        raise ImportError("preprocess_counts needs scanpy for the Pearson-residual gene selection; "
                          'install it with: pip install "mssvae[bio]"') from err
    return sc


def preprocess_counts(adata, study_key: str, layer: str | None = None, min_total_log: float | None = 12.5,
                      min_gene_counts: float = 25, min_cpm: float = 1.0, min_cpm_fraction: float = 0.2,
                      n_top_genes: int | None = 5000, min_study_samples: int = 2, copy: bool = True):
    """Filter raw counts as in the paper's App. C.4 and keep the raw counts of what survives.

    Parameters
    ----------
    adata : anndata.AnnData
        (n_obs, n_vars) raw counts in ``adata.X`` or ``adata.layers[layer]``: dense or scipy.sparse,
        non-negative integers (integer-valued floats are accepted).
    study_key : str
        Column of ``adata.obs`` with each sample's study (group); no missing values, at least 2 studies.
    layer : str, optional
        Layer holding the counts; ``None`` reads ``adata.X``.
    min_total_log : float or None, default 12.5
        Samples with total counts below ``exp(min_total_log)`` are dropped (e^12.5 ≈ 268,337 in the paper).
        ``None`` skips this step.
    min_gene_counts : float, default 25
        Genes need at least this many counts summed over the kept samples.
    min_cpm, min_cpm_fraction : float, default 1.0 and 0.2
        Genes need counts-per-million strictly above ``min_cpm`` in at least ``min_cpm_fraction`` of the
        kept samples.  CPM uses each sample's full library size (sum over all input genes), as edgeR's
        ``cpm`` does on the unfiltered matrix.
    n_top_genes : int or None, default 5000
        Number of genes kept by ``scanpy.experimental.pp.highly_variable_genes(flavor="pearson_residuals")``
        (scanpy's defaults: theta=100, clip=sqrt(n_obs), no batch key).  When no more genes than this
        remain, all are kept and the report says so; ``None`` skips this step.
    min_study_samples : int, default 2
        Every study present in the input needs at least this many samples after filtering, else ValueError
        (the model needs 2 per study).
    copy : bool, default True
        ``True`` leaves ``adata`` untouched and returns a new AnnData.  ``False`` subsets ``adata`` in place
        (as ``scanpy.pp.filter_cells(inplace=True)`` does), overwrites its ``X`` and returns it.

    Returns
    -------
    adata_out : anndata.AnnData
        (n_kept_obs, n_kept_vars), genes in their input order.  ``X`` and ``layers["counts"]`` hold the raw
        counts (same dtype and dense/sparse kind as the input; an existing ``"counts"`` layer is replaced);
        other layers, obs, var and obsm are subset.  ``var["residual_variances"]`` and
        ``var["highly_variable_rank"]`` come from scanpy when step 4 ran; ``uns["mssvae_preprocess"]`` holds
        ``{"params": {...}, "steps": {column: list}}``, the report as a JSON-able dict.
    report : pandas.DataFrame
        One row per step (4 rows) with columns ``step, samples_before, samples_after, genes_before,
        genes_after, removed_samples, removed_genes, note``.

    Raises
    ------
    ValueError
        Bad ``study_key`` (absent, missing values, fewer than 2 studies), counts that are negative,
        non-finite or non-integer, bad thresholds, nothing left after a step, or a study left with fewer
        than ``min_study_samples`` samples.
    ImportError
        scanpy is not installed and step 4 has to run.
    """
    _check_params(min_total_log, min_gene_counts, min_cpm, min_cpm_fraction, n_top_genes, min_study_samples)
    if UNS_KEY in getattr(adata, "uns", {}):
        # Not refused (a stricter second pass can be meant), but the depth filter then sums only the
        # kept genes, so it drops samples the first pass kept: say so rather than shrink the data unseen.
        warnings.warn(f"`adata` was already preprocessed (it has uns[{UNS_KEY!r}]); preprocessing it again "
                      "applies the depth filter to the kept genes' totals, which can drop samples the first "
                      "pass kept. Preprocess the raw counts instead unless a second pass is meant.",
                      UserWarning, stacklevel=2)
    study = _study_labels(adata, study_key)
    X = _counts_matrix(adata, layer)

    n_obs, n_vars = X.shape
    rows = []

    def add_row(step, obs_before, obs_after, vars_before, vars_after, note):
        rows.append({"step": step, "samples_before": obs_before, "samples_after": obs_after,
                     "genes_before": vars_before, "genes_after": vars_after,
                     "removed_samples": obs_before - obs_after, "removed_genes": vars_before - vars_after,
                     "note": note})

    # 1. sequencing depth: shallow libraries give noisy CPMs and residuals
    lib_size = _row_sums(X)
    if min_total_log is None:
        obs_keep = np.ones(n_obs, dtype=bool)
        note = "skipped (min_total_log=None)"
    else:
        threshold = math.exp(min_total_log)
        obs_keep = lib_size >= threshold
        note = f"total counts >= exp({min_total_log:g}) = {threshold:,.0f}"
    add_row("min_total_counts", n_obs, int(obs_keep.sum()), n_vars, n_vars, note)
    if not obs_keep.any():
        raise ValueError(f"no sample has total counts >= exp(min_total_log) = {math.exp(min_total_log):,.0f} "
                         f"(largest: {lib_size.max():,.0f}); lower `min_total_log`")

    # Checked before the gene steps: a study emptied here is the likeliest failure on real data.
    counts_left = study[obs_keep].value_counts()
    too_small = {lab: int(counts_left.get(lab, 0)) for lab in pd.unique(study.to_numpy())
                 if counts_left.get(lab, 0) < min_study_samples}
    if too_small:
        detail = ", ".join(f"study {lab!r} has {k} sample(s)" for lab, k in too_small.items())
        raise ValueError(f"after the depth filter (`min_total_log`={min_total_log}) {detail}; each study needs at "
                         f"least `min_study_samples`={min_study_samples} samples (the model needs 2 per study)")

    X_obs = X[obs_keep]
    lib_kept = lib_size[obs_keep]
    n_kept = X_obs.shape[0]

    # 2. genes with a handful of reads in the whole cohort carry no usable signal
    gene_total = _col_sums(X_obs)
    var_keep = gene_total >= min_gene_counts
    add_row("min_gene_counts", n_kept, n_kept, n_vars, int(var_keep.sum()),
            f"total counts over kept samples >= {min_gene_counts:g}")

    # 3. depth-normalised, so a gene expressed only in deep libraries does not pass on their depth alone
    n_above = _n_cpm_above(X_obs, lib_kept, min_cpm)
    need = min_cpm_fraction * n_kept
    cpm_ok = n_above >= need
    before = int(var_keep.sum())
    var_keep &= cpm_ok
    add_row("min_cpm", n_kept, n_kept, before, int(var_keep.sum()),
            f"CPM > {min_cpm:g} in >= {min_cpm_fraction:g} of {n_kept} samples (>= {math.ceil(need - 1e-9)})")
    if not var_keep.any():
        raise ValueError("no gene passes the count and CPM filters; lower `min_gene_counts`, `min_cpm` or "
                         "`min_cpm_fraction`")

    # 4. residuals of an NB offset model rank variability without the mean-variance bias of raw counts
    genes_idx = np.flatnonzero(var_keep)
    before = genes_idx.size
    residual_variances = highly_variable_rank = None
    if n_top_genes is None:
        note = "skipped (n_top_genes=None)"
    elif before <= n_top_genes:
        note = f"only {before} genes left, not more than n_top_genes={n_top_genes}: all kept, scanpy not run"
    else:
        sc = _import_scanpy()
        import anndata as ad

        # A bare AnnData holding only the filtered counts: scanpy writes its columns there, not into the input.
        hv = ad.AnnData(X=X_obs[:, genes_idx])
        sc.experimental.pp.highly_variable_genes(hv, flavor="pearson_residuals", n_top_genes=n_top_genes,
                                                 layer=None, inplace=True)
        selected = hv.var["highly_variable"].to_numpy(dtype=bool)
        residual_variances = hv.var["residual_variances"].to_numpy()[selected]
        highly_variable_rank = hv.var["highly_variable_rank"].to_numpy()[selected]
        var_keep[genes_idx[~selected]] = False
        note = (f"top {n_top_genes} by Pearson residual variance of an NB offset model, theta=100 "
                f"(scanpy {importlib.metadata.version('scanpy')})")
    add_row("pearson_residuals_hvg", n_kept, n_kept, before, int(var_keep.sum()), note)

    report = pd.DataFrame(rows, columns=REPORT_COLUMNS)
    int_cols = REPORT_COLUMNS[1:-1]
    report[int_cols] = report[int_cols].astype(np.int64)

    counts = X_obs[:, var_keep]
    if copy:
        out = adata[obs_keep, var_keep].copy()
    else:
        adata._inplace_subset_obs(obs_keep)
        adata._inplace_subset_var(var_keep)
        out = adata
    out.X = counts
    out.layers["counts"] = counts.copy()
    if residual_variances is not None:
        out.var["residual_variances"] = residual_variances
        out.var["highly_variable_rank"] = highly_variable_rank
    out.uns[UNS_KEY] = {
        "params": {"study_key": study_key, "layer": layer, "min_total_log": min_total_log,
                   "min_gene_counts": min_gene_counts, "min_cpm": min_cpm, "min_cpm_fraction": min_cpm_fraction,
                   "n_top_genes": n_top_genes, "min_study_samples": min_study_samples},
        "steps": _steps(report),
    }
    return out, report


# ----------------------------------------------------------------------------------------------
# counts table + sample sheet


SHEET_STEP = "in_sample_sheet"


def _steps(report: pd.DataFrame) -> dict:
    """The report as ``uns["mssvae_preprocess"]["steps"]``: plain Python values, so h5ad and JSON take it."""
    return {c: [v.item() if isinstance(v, np.generic) else v for v in report[c]] for c in REPORT_COLUMNS}


def add_sample_sheet_step(adata_out, report: pd.DataFrame, info: dict) -> pd.DataFrame:
    """Put a first report row, ``in_sample_sheet``, for the counts columns that the sample sheet left out.

    ``report`` and ``adata_out`` are :func:`preprocess_counts`'s outputs on the AnnData that
    :func:`mssvae.io.read_counts_table` returned with ``info`` (``return_info=True``).  Returns the new
    report and updates ``adata_out.uns["mssvae_preprocess"]["steps"]`` in place.
    """
    n_cols, dropped = int(info["n_count_columns"]), list(info["not_in_sheet"])
    n_genes = int(report["genes_before"].iloc[0])
    if dropped:
        note = f"{len(dropped)} counts column(s) without a sample-sheet row left out, e.g. {dropped[:5]}"
    elif info.get("matched_by") == "position":
        note = "no sample column in the sheet: rows matched to counts columns by position"
    else:
        note = "every counts column has a sample-sheet row"
    row = {"step": SHEET_STEP, "samples_before": n_cols, "samples_after": n_cols - len(dropped),
           "genes_before": n_genes, "genes_after": n_genes, "removed_samples": len(dropped), "removed_genes": 0,
           "note": note}
    new = pd.concat([pd.DataFrame([row], columns=REPORT_COLUMNS), report], ignore_index=True)
    int_cols = REPORT_COLUMNS[1:-1]
    new[int_cols] = new[int_cols].astype(np.int64)
    if UNS_KEY in adata_out.uns:
        adata_out.uns[UNS_KEY]["steps"] = _steps(new)
    return new


# ----------------------------------------------------------------------------------------------
# gene ids


def strip_ensembl_version(gene_id: str) -> str:
    """``"ENSG00000141510.16"`` → ``"ENSG00000141510"``; anything that is not a versioned Ensembl id is unchanged."""
    return _ENSEMBL_VERSION.sub(r"\1", str(gene_id))


def _normalise_id_map(id_map) -> pd.Series:
    if isinstance(id_map, dict):
        id_map = pd.Series(id_map, dtype=object)
    if not isinstance(id_map, pd.Series):
        raise TypeError(f"`id_map` must be a dict or a pandas.Series (index: Ensembl id, values: symbol); "
                        f"got {type(id_map).__name__}")
    symbols = id_map.astype(object)
    symbols.index = [strip_ensembl_version(i) for i in symbols.index]
    ok = symbols.map(lambda s: isinstance(s, str) and s.strip() != "")
    symbols = symbols[ok.to_numpy(dtype=bool)].map(str.strip)
    return symbols[~symbols.index.duplicated(keep="first")]


def map_gene_ids(adata, id_map, keep_unmapped: bool = True, layer: str | None = None):
    """Rename Ensembl-id var_names to gene symbols.

    Version suffixes are stripped before the look-up (``ENSG00000141510.16`` → ``ENSG00000141510``).
    A gene without a symbol keeps its (version-stripped) id as its name, or is dropped when
    ``keep_unmapped=False``.  When several genes map to one symbol, the one with the highest total
    counts keeps the bare symbol and every other one is named ``SYMBOL|ENSEMBL_ID`` (ties: the first in
    var order keeps the symbol), so names stay unique and the usual gene keeps the name gene sets use.
    Names that would still collide (two versions of one id) get anndata's ``-1``, ``-2`` suffixes.

    Parameters
    ----------
    adata : anndata.AnnData
        (n_obs, n_vars) with Ensembl ids as var_names.
    id_map : dict or pandas.Series
        Ensembl id → symbol (a Series is indexed by id, as :func:`read_id_map` returns it).  Versions in the
        ids are stripped; empty or missing symbols count as unmapped; for repeated ids the first entry wins.
    keep_unmapped : bool, default True
        Keep genes with no symbol (named by their id) instead of dropping them.
    layer : str, optional
        Where the totals that break symbol ties are summed; ``None`` uses ``adata.X`` (all ties go to the
        first gene when X is absent).

    Returns
    -------
    anndata.AnnData
        A new AnnData, (n_obs, n_vars) or (n_obs, n_mapped) without unmapped genes, with symbol var_names,
        ``var["gene_id"]`` (the input var_name, version included) and ``var["symbol"]`` (categorical, NaN
        where unmapped).
        ``adata`` is not modified.
    """
    import anndata as ad

    symbols_map = _normalise_id_map(id_map)
    original = pd.Index(adata.var_names.astype(str))
    stripped = pd.Index([strip_ensembl_version(g) for g in original])
    symbol = pd.Series(stripped.map(symbols_map), index=original, dtype=object)
    mapped = symbol.notna().to_numpy()

    keep = np.ones(adata.n_vars, dtype=bool) if keep_unmapped else mapped
    out = adata[:, keep].copy()
    symbol, stripped, original, mapped = symbol[keep], stripped[keep], original[keep], mapped[keep]

    X = out.X if layer is None else out.layers[layer]
    totals = np.zeros(out.n_vars) if X is None else _col_sums(X)
    names = np.where(mapped, symbol.to_numpy(), stripped.to_numpy()).astype(object)
    sym = pd.Series(names[mapped])
    for dup in sym[sym.duplicated(keep=False)].unique():
        members = np.flatnonzero(mapped & (names == dup))
        winner = members[np.argmax(totals[members])]
        for j in members:
            if j != winner:
                names[j] = f"{dup}|{stripped[j]}"

    out.var["gene_id"] = original.to_numpy()
    # Categorical with string categories, as an h5ad written and read back holds it: a plain object column
    # that is all NaN (no gene mapped, e.g. names that are symbols already) cannot be written to h5ad.
    found = pd.Index(pd.unique(symbol[mapped].to_numpy()), dtype=object)
    out.var["symbol"] = pd.Categorical(symbol.to_numpy(), categories=found.sort_values())
    out.var_names = ad.utils.make_index_unique(pd.Index(names.astype(str)))
    return out


# Shipped maps (built by scripts/build_id_map.py from Debian's r-bioc-org.hs.eg.db 3.16.0; provenance
# in the .json beside each file).
BUILTIN_ID_MAPS = {"hs": "ensembl_to_symbol_hs.tsv.gz"}


def load_builtin_id_map(name: str = "hs") -> pd.Series:
    """The shipped Ensembl id → symbol map ``name`` ("hs": human, 40,102 rows), as :func:`read_id_map`."""
    from importlib.resources import as_file, files

    if name not in BUILTIN_ID_MAPS:
        raise ValueError(f"`id_map` {name!r} is not a shipped map; choose from {sorted(BUILTIN_ID_MAPS)} "
                         "or give a file")
    with as_file(files("mssvae") / "data" / BUILTIN_ID_MAPS[name]) as path:
        return read_id_map(path)


def id_map_table(id_map, names):
    """The Ensembl id → symbol table that ``id_map`` names for genes ``names``, or None for no renaming.

    ``"auto"``: the shipped human map when most ``names`` are human Ensembl ids, else None; ``"hs"``:
    the shipped human map; ``"none"`` or None: None; a path: :func:`read_id_map`; a dict or Series: itself.
    (``mssvae preprocess --id-map`` and ``mssvae enrich --id-map`` read the option through this.)
    """
    if id_map is None or (isinstance(id_map, str) and id_map == "none"):
        return None
    if isinstance(id_map, str) and id_map == "auto":
        if not looks_like_human_ensembl(names):
            return None
        id_map = "hs"
    if isinstance(id_map, str) and id_map in BUILTIN_ID_MAPS:
        return load_builtin_id_map(id_map)
    if isinstance(id_map, (str, Path)):
        return read_id_map(Path(id_map))
    return id_map


def looks_like_human_ensembl(names, min_share: float = 0.5) -> bool:
    """Whether most ``names`` are human Ensembl gene ids (ENSG…), so the shipped map applies."""
    names = pd.Index(names).astype(str)
    return len(names) > 0 and float(names.str.match(r"^ENSG[0-9]{11}").mean()) >= min_share


def read_id_map(path) -> pd.Series:
    """Read an Ensembl id → symbol table: two columns (ensembl_id, symbol), TSV or CSV, optionally gzipped.

    The separator is a tab unless the first line has a comma and no tab.  A header row is recognised by its
    first field not looking like an Ensembl id (``ensembl_id\\tsymbol`` in
    ``shared/data/genesets/ensembl_to_symbol_orgHsEgDb3.16.tsv.gz``).  Extra columns are ignored, rows with an
    empty symbol dropped, versions stripped from ids, and for an id listed more than once the first row wins
    (in the org.Hs.eg.db table, ordered by Entrez id, that is the older, usually canonical symbol, e.g.
    U2AF1 before LOC102724594).

    Returns
    -------
    pandas.Series
        (n_ids,) symbols, indexed by version-less Ensembl id (index name ``"ensembl_id"``, name ``"symbol"``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"id map file {path} does not exist")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        first = fh.readline().rstrip("\r\n")
    sep = "," if ("," in first and "\t" not in first) else "\t"
    first_field = first.split(sep)[0].strip().strip('"')
    header = 0 if not re.match(r"^ENS[A-Z]*[0-9]{11}", first_field) else None
    df = pd.read_csv(path, sep=sep, header=header, usecols=[0, 1], dtype=str, keep_default_na=False)
    if df.shape[1] < 2:
        raise ValueError(f"{path}: expected two columns (ensembl_id, symbol)")
    ids = df.iloc[:, 0].str.strip()
    sym = df.iloc[:, 1].str.strip()
    ok = (ids != "") & (sym != "")
    out = pd.Series(sym[ok].to_numpy(), index=[strip_ensembl_version(i) for i in ids[ok]], name="symbol")
    out.index.name = "ensembl_id"
    return out[~out.index.duplicated(keep="first")]
