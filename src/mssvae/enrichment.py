"""Gene-set over-representation analysis of the factors of a fitted multi-study sparse VAE.

The gene set of factor ``k`` of a block (``"shared"`` or a study) is the support of its loading
column, ``{g : |W_gk| > threshold}`` (:func:`mssvae.metrics.support`, default 0.5, the rule of §5
of Moran & Krishnan).  Each gene set is tested against every term of a collection (e.g. GO
biological processes read with :func:`read_gmt`) with a one-sided hypergeometric test
(= one-sided Fisher exact test), using the analysed genes as the background, and the p-values of
one gene set are adjusted across the tested terms (Benjamini-Yekutieli by default).

Typical use::

    sets = gene_sets_from_model(model)                        # {"shared_0": [...], "s1_2": [...]}
    go = read_gmt("c5.go.bp.v2023.symbols.gmt")
    res = enrich(sets, go, background=model.feature_names_in_)
    enrichment_summary(res, sets)                             # share of gene sets with >= 1 term
    top_terms(res, n=5, n_gene_sets=len(sets))                 # dot-plot table

A model fitted on Ensembl ids is tested against a symbol collection by renaming its genes first::

    genes = map_feature_names(model.feature_names_in_, "hs")  # the shipped human Ensembl -> symbol map
    sets = gene_sets_from_model(model, feature_names=genes)
    res = enrich(sets, go, background=genes)

This module only needs numpy, scipy and pandas (no torch).
"""

from __future__ import annotations

import gzip
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.stats import false_discovery_control, hypergeom

from .metrics import support

__all__ = [
    "enrich",
    "enrichment_summary",
    "factor_gene_sets",
    "gene_sets_from_model",
    "gene_sets_from_table",
    "load_builtin",
    "map_feature_names",
    "read_gmt",
    "top_terms",
    "write_gmt",
]

GENE_TABLE_COLUMNS = ["block", "factor", "gene", "weight", "abs_weight", "inclusion"]
RESULT_COLUMNS = ["gene_set", "term", "term_size", "overlap", "set_size", "background_size", "expected",
                  "fold_enrichment", "p_value", "p_adj", "significant", "overlap_genes"]

_GZIP_MAGIC = b"\x1f\x8b"
_FACTOR_NAME = re.compile(r"^(?P<block>.+)_(?P<k>\d+)$")


# ----------------------------------------------------------------------------------------------
# GMT files
# ----------------------------------------------------------------------------------------------


def _is_gzip(path: Path) -> bool:
    """gzip magic bytes decide; a ``.gz`` name alone is not trusted (plain text named .gz is read as is)."""
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def _strip_weight(gene: str) -> str:
    """``"GENE,1.0"`` (Enrichr's weighted layout) -> ``"GENE"``; other commas are kept."""
    head, sep, tail = gene.rpartition(",")
    if not sep:
        return gene
    try:
        float(tail)
    except ValueError:
        return gene
    return head.strip()


_ONTOLOGY_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*:\d+")


def _term_name(name: str, description: str) -> str:
    """The GMT name, or "description (ID)" when the name is an identifier such as GO:0000002 and
    the description a name (not empty, "na" or MSigDB's URL)."""
    if _ONTOLOGY_ID.fullmatch(name) and description and description.lower() != "na" \
            and not description.lower().startswith(("http://", "https://")):
        return f"{description} ({name})"
    return name


def _check_size(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"`{name}` must be a non-negative integer or None; got {value!r}")
    return int(value)


def read_gmt(path, min_size: int | None = None, max_size: int | None = None) -> dict[str, list[str]]:
    """Read a GMT gene-set file (plain or gzip-compressed).

    Each line is ``name<TAB>description<TAB>gene1<TAB>gene2...``.  Where the name is an
    ontology identifier and the description a term name (the GO layout of Bioconductor's exports,
    ``GO:0000002<TAB>mitochondrial genome maintenance<TAB>...``), the term is called
    ``"mitochondrial genome maintenance (GO:0000002)"``, as in Enrichr's GO libraries and the
    built-in ``go_bp``, so that tables and plots show what a term is.  Tolerated: Enrichr's layout
    (empty description, genes written as ``GENE,1.0`` -- the ``,weight`` part is dropped),
    blank lines, trailing tabs and spaces, Windows line ends (CRLF) and genes repeated within a
    set (kept once, first occurrence order).  Lines without a name or without any gene are
    skipped with a warning.  When a term name occurs twice the first set is kept, with a
    warning.  The file is only parsed as text; nothing in it is evaluated.

    Parameters
    ----------
    path : str or path-like
        GMT file; gzip is detected by its magic bytes (whatever the suffix, ``.gz`` or not).
    min_size, max_size : int or None
        Keep only the sets with ``min_size <= n_genes <= max_size`` (sizes after de-duplication).

    Returns
    -------
    dict of str -> list of str
        Term name -> its genes, in file order.

    Raises
    ------
    ValueError
        If the file holds no valid line (name, description and at least one gene).
    """
    min_size = _check_size(min_size, "min_size")
    max_size = _check_size(max_size, "max_size")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"`path` {str(path)!r} is not a file")
    opener = gzip.open if _is_gzip(path) else open
    sets: dict[str, list[str]] = {}
    duplicated: list[str] = []
    skipped = 0
    with opener(path, "rt", encoding="utf-8", errors="replace", newline=None) as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            name = _term_name(fields[0].strip(), fields[1].strip() if len(fields) > 1 else "")
            genes = [_strip_weight(g.strip()) for g in fields[2:]]
            genes = list(dict.fromkeys(g for g in genes if g))
            if not name or not genes:
                skipped += 1
                continue
            if name in sets:
                duplicated.append(name)
                continue
            sets[name] = genes
    if not sets:
        raise ValueError(f"`path` {str(path)!r} holds no valid GMT line (name<TAB>description<TAB>genes...)")
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} line(s) without a term name or without genes", stacklevel=2)
    if duplicated:
        warnings.warn(f"{path}: {len(duplicated)} duplicated term name(s) (kept the first occurrence): "
                      f"{duplicated[:5]}", stacklevel=2)
    if min_size is not None or max_size is not None:
        lo = 0 if min_size is None else min_size
        hi = np.inf if max_size is None else max_size
        sets = {k: v for k, v in sets.items() if lo <= len(v) <= hi}
    return sets


BUILTIN_COLLECTIONS = {"go_bp": "go_bp_2023"}


def load_builtin(name: str = "go_bp") -> dict[str, list[str]]:
    """A gene-set collection shipped in the package (offline), e.g. ``"go_bp"``.

    ``go_bp``: GO Biological Process 2023 (Enrichr's library; human gene symbols; GO is CC BY 4.0),
    terms of 10-500 genes (3,623 terms).  Rebuilt from the package registry by
    ``scripts/build_go_bp.py``; provenance in ``mssvae/data/go_bp_2023.json``.
    """
    from importlib.resources import as_file, files

    if name not in BUILTIN_COLLECTIONS:
        raise ValueError(f"unknown built-in collection {name!r}; available: {sorted(BUILTIN_COLLECTIONS)}")
    with as_file(files("mssvae") / "data" / f"{BUILTIN_COLLECTIONS[name]}.gmt.gz") as path:
        return read_gmt(path)


def write_gmt(gene_sets: Mapping[str, Iterable[str]], path, descriptions: Mapping[str, str] | None = None) -> None:
    """Write gene sets to a GMT file (gzip-compressed when ``path`` ends with ``.gz``).

    Parameters
    ----------
    gene_sets : mapping str -> iterable of str
        Term name -> genes (written in the given order).
    path : str or path-like
    descriptions : mapping str -> str, optional
        Second GMT field of each term; ``"na"`` where missing.

    Raises
    ------
    ValueError
        If a name, description or gene contains a tab or a line break, or is empty.
    """
    if not isinstance(gene_sets, Mapping):
        raise ValueError(f"`gene_sets` must be a mapping name -> genes; got {type(gene_sets).__name__}")
    descriptions = {} if descriptions is None else descriptions
    if not isinstance(descriptions, Mapping):
        raise ValueError(f"`descriptions` must be a mapping name -> str or None; got {type(descriptions).__name__}")

    def clean(text, what: str, allow_empty: bool = False) -> str:
        text = str(text)
        if any(c in text for c in "\t\r\n"):
            raise ValueError(f"`{what}` contains a tab or line break: {text!r}")
        if not allow_empty and not text.strip():
            raise ValueError(f"`{what}` contains an empty string")
        return text

    lines = []
    for name, genes in gene_sets.items():
        if isinstance(genes, str):
            raise ValueError(f"`gene_sets[{name!r}]` must be a list of genes, not a string")
        fields = [clean(name, "gene_sets"), clean(descriptions.get(name, "na"), "descriptions", allow_empty=True)]
        fields += [clean(g, f"gene_sets[{name!r}]") for g in genes]
        lines.append("\t".join(fields) + "\n")
    path = Path(path)
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "wt", encoding="utf-8", newline="\n") as fh:
        fh.writelines(lines)


# ----------------------------------------------------------------------------------------------
# gene sets of the factors
# ----------------------------------------------------------------------------------------------


def _as_matrix(W, name: str, n_rows: int | None) -> np.ndarray:
    try:
        arr = np.asarray(W, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a numeric 2-d array") from None
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must be 2-d (n_genes, K); got shape {arr.shape}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ValueError(f"`{name}` has {arr.shape[0]} rows but `feature_names` has {n_rows} entries")
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` contains non-finite values")
    return arr


def _block_factor_names(factor_names, blocks: dict[str, np.ndarray]) -> dict[str, list[str]]:
    if factor_names is None:
        return {b: [f"{b}_{k}" for k in range(W.shape[1])] for b, W in blocks.items()}
    if isinstance(factor_names, Mapping):
        out = {}
        for b, W in blocks.items():
            if b not in factor_names:
                raise ValueError(f"`factor_names` has no entry for block {b!r}")
            names = [str(n) for n in factor_names[b]]
            if len(names) != W.shape[1]:
                raise ValueError(f"`factor_names[{b!r}]` has {len(names)} names for {W.shape[1]} factors")
            out[b] = names
    else:
        flat = [str(n) for n in factor_names]
        total = sum(W.shape[1] for W in blocks.values())
        if len(flat) != total:
            raise ValueError(f"`factor_names` has {len(flat)} names but the blocks have {total} factors "
                             "(a flat list follows the block order of `W_blocks`)")
        out, start = {}, 0
        for b, W in blocks.items():
            out[b] = flat[start:start + W.shape[1]]
            start += W.shape[1]
    all_names = [n for names in out.values() for n in names]
    if len(set(all_names)) != len(all_names):
        raise ValueError("`factor_names` must be unique across blocks")
    return out


def factor_gene_sets(W_blocks: Mapping[str, np.ndarray], feature_names,
                     inclusion: Mapping[str, np.ndarray] | None = None, threshold: float = 0.5,
                     factor_names=None) -> pd.DataFrame:
    """Tidy table of the genes of each factor, ``{g : |W_gk| > threshold}``.

    Parameters
    ----------
    W_blocks : mapping str -> array, shape (n_genes, K_b)
        Loadings of each block, e.g. ``{"shared": W_shared, "study1": W_1, ...}``.
    feature_names : sequence of str, shape (n_genes,)
        Gene names of the rows of every ``W``.
    inclusion : mapping str -> array, shape (n_genes, K_b), optional
        Posterior inclusion probabilities p* with the same keys and shapes as ``W_blocks``.
    threshold : float
        Support threshold on ``|W|`` (:func:`mssvae.metrics.support`; 0.5 in the paper).
    factor_names : None, mapping str -> sequence of str, or sequence of str
        Names of the factors; default ``f"{block}_{k}"`` (e.g. ``"shared_0"``), which matches
        ``MSSVAE.factor_names_``.  A flat sequence follows the block order of ``W_blocks``.

    Returns
    -------
    pandas.DataFrame
        One row per (factor, gene in its support), columns ``block, factor, gene, weight,
        abs_weight, inclusion`` (``inclusion`` is NaN when not given), ordered by block (order
        of ``W_blocks``), factor (column order) and decreasing ``abs_weight``.  Factors with an
        empty support have no row.
    """
    if not isinstance(W_blocks, Mapping) or not W_blocks:
        raise ValueError("`W_blocks` must be a non-empty mapping block name -> (n_genes, K) array")
    if isinstance(feature_names, str):
        raise ValueError("`feature_names` must be a sequence of gene names, not a string")
    genes = np.asarray(feature_names).astype(str)
    if genes.ndim != 1 or genes.size == 0:
        raise ValueError(f"`feature_names` must be a non-empty 1-d sequence; got shape {genes.shape}")
    if len(np.unique(genes)) != len(genes):
        warnings.warn(f"`feature_names` has {len(genes) - len(np.unique(genes))} duplicated name(s)", stacklevel=2)
    threshold = float(threshold)
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"`threshold` must be a finite non-negative number; got {threshold}")
    blocks = {str(b): _as_matrix(W, f"W_blocks[{b!r}]", len(genes)) for b, W in W_blocks.items()}
    if len(blocks) != len(W_blocks):
        raise ValueError("`W_blocks` keys must be distinct as strings")
    if inclusion is not None:
        if not isinstance(inclusion, Mapping):
            raise ValueError("`inclusion` must be None or a mapping with the same keys as `W_blocks`")
        incl = {str(b): v for b, v in inclusion.items()}
        if set(incl) != set(blocks):
            raise ValueError(f"`inclusion` keys {sorted(incl)} differ from the `W_blocks` keys {sorted(blocks)}")
        incl = {b: _as_matrix(incl[b], f"inclusion[{b!r}]", len(genes)) for b in blocks}
        for b in blocks:
            if incl[b].shape != blocks[b].shape:
                raise ValueError(f"`inclusion[{b!r}]` has shape {incl[b].shape}, W has {blocks[b].shape}")
    names = _block_factor_names(factor_names, blocks)

    parts = []
    for b, W in blocks.items():
        S = support(W, threshold)
        g_idx, k_idx = np.nonzero(S)
        w = W[g_idx, k_idx]
        order = np.lexsort((-np.abs(w), k_idx))  # factor, then decreasing |w|
        g_idx, k_idx, w = g_idx[order], k_idx[order], w[order]
        parts.append(pd.DataFrame({
            "block": b,
            "factor": np.asarray(names[b], dtype=object)[k_idx] if len(k_idx) else np.array([], dtype=object),
            "gene": genes[g_idx].astype(object),
            "weight": w,
            "abs_weight": np.abs(w),
            "inclusion": incl[b][g_idx, k_idx] if inclusion is not None else np.full(len(w), np.nan),
        }, columns=GENE_TABLE_COLUMNS))
    table = pd.concat(parts, ignore_index=True)
    table["block"] = table["block"].astype(object)
    return table


def gene_sets_from_table(table: pd.DataFrame) -> dict[str, list[str]]:
    """Gene sets keyed by factor name from a :func:`factor_gene_sets` table.

    Parameters
    ----------
    table : pandas.DataFrame
        Needs the columns ``factor`` and ``gene``; row order (decreasing |weight|) is kept.

    Returns
    -------
    dict of str -> list of str
        Factor name -> its genes (duplicates removed); factors without a row are absent.
    """
    if not isinstance(table, pd.DataFrame):
        raise ValueError(f"`table` must be a pandas DataFrame; got {type(table).__name__}")
    missing = {"factor", "gene"} - set(table.columns)
    if missing:
        raise ValueError(f"`table` lacks the column(s) {sorted(missing)}")
    out: dict[str, list[str]] = {}
    for factor, gene in zip(table["factor"].astype(str), table["gene"].astype(str)):
        out.setdefault(factor, []).append(gene)
    return {k: list(dict.fromkeys(v)) for k, v in out.items()}


def map_feature_names(feature_names, id_map="hs") -> list[str]:
    """Gene symbols for Ensembl-id gene names, as ``mssvae preprocess --id-map`` renames them.

    The renaming is :func:`mssvae.preprocess.map_gene_ids`: version suffixes are stripped before the
    look-up, a gene without a symbol keeps its (version-stripped) id, so it stays in an enrichment
    background but matches no symbol term, and when several genes share a symbol the first in
    ``feature_names`` order keeps it and the others are named ``SYMBOL|ENSEMBL_ID`` (there are no
    counts here to break the tie by expression, as ``preprocess`` does).

    Parameters
    ----------
    feature_names : sequence of str, shape (n_genes,)
        E.g. ``model.feature_names_in_``.
    id_map : "hs", "auto", "none", None, path, dict or pandas.Series
        ``"hs"``: the shipped human map; ``"auto"``: that map when most names are human Ensembl ids
        (ENSG...), else no mapping; ``"none"`` or None: the names unchanged; a path: a two-column
        (ensembl_id, symbol) table read by :func:`mssvae.preprocess.read_id_map`; a dict or Series:
        Ensembl id -> symbol.

    Returns
    -------
    list of str, shape (n_genes,)
        The new names, unique, in the order of ``feature_names``.
    """
    from .preprocess import id_map_table, map_gene_ids

    if isinstance(feature_names, str):
        raise ValueError("`feature_names` must be a sequence of gene names, not a string")
    names = pd.Index(np.asarray(feature_names, dtype=object).ravel().astype(str))
    table = id_map_table(id_map, names)
    if table is None:
        return list(names)
    import anndata as ad

    # map_gene_ids works on an AnnData's var_names; an X-less one holds just the names.
    mapped = map_gene_ids(ad.AnnData(var=pd.DataFrame(index=names)), table)
    return [str(g) for g in mapped.var_names]


def gene_sets_from_model(model: Any, threshold: float = 0.5, return_table: bool = False, feature_names=None):
    """Gene sets of every factor of a fitted ``MSSVAE``.

    Builds ``W_blocks = {"shared": model.W_shared_, study: model.W_specific_[study], ...}`` (and
    the same for ``inclusion_*``) from the model's attributes and calls :func:`factor_gene_sets`.
    Factor names are ``model.factor_names_`` (``"shared_k"``, ``f"{study}_{k}"``) when it has one
    name per factor, else ``f"{block}_{k}"``.  A study labelled ``"shared"`` becomes block
    ``"study_shared"`` (as in :func:`mssvae.io.varm_key`).

    Parameters
    ----------
    model : fitted MSSVAE (or any object with its fitted attributes)
    threshold : float
        Support threshold on ``|W|``.
    return_table : bool
        Return the :func:`factor_gene_sets` table instead of the dict.
    feature_names : sequence of str, shape (n_genes,), optional
        Names of the model's genes instead of ``model.feature_names_in_``, e.g. symbols from
        :func:`map_feature_names` for a model fitted on Ensembl ids (pass the same names to
        :func:`enrich` as ``background``).

    Returns
    -------
    dict of str -> list of str, or pandas.DataFrame
        Factor name -> genes sorted by decreasing ``|W|`` (factors with empty support absent).
    """
    W_shared = getattr(model, "W_shared_", None)
    W_specific = getattr(model, "W_specific_", None)
    if W_shared is None or W_specific is None:
        raise ValueError("`model` is not fitted: it has no `W_shared_` / `W_specific_` attributes")
    n_genes = np.shape(W_shared)[0]
    if feature_names is None:
        feature_names = getattr(model, "feature_names_in_", None)
    if feature_names is None:
        feature_names = [f"feature_{j}" for j in range(n_genes)]

    def key(study) -> str:
        return "study_shared" if str(study) == "shared" else str(study)

    blocks = {"shared": W_shared, **{key(s): W for s, W in W_specific.items()}}
    incl_shared = getattr(model, "inclusion_shared_", None)
    incl_specific = getattr(model, "inclusion_specific_", None)
    inclusion = None
    if incl_shared is not None and incl_specific is not None:
        inclusion = {"shared": incl_shared, **{key(s): P for s, P in incl_specific.items()}}
    names = getattr(model, "factor_names_", None)
    total = sum(np.shape(W)[1] for W in blocks.values())
    if names is None or len(names) != total:
        names = None
    table = factor_gene_sets(blocks, feature_names, inclusion=inclusion, threshold=threshold, factor_names=names)
    return table if return_table else gene_sets_from_table(table)


# ----------------------------------------------------------------------------------------------
# over-representation test
# ----------------------------------------------------------------------------------------------


def _gene_list(genes, name: str) -> list[str]:
    if isinstance(genes, str):
        raise ValueError(f"`{name}` must be a collection of genes, not a string")
    try:
        return [str(g) for g in genes]
    except TypeError:
        raise ValueError(f"`{name}` must be an iterable of genes; got {type(genes).__name__}") from None


def _membership(sets: Mapping[str, Iterable[str]], index: dict[str, int], name: str):
    """CSR boolean membership matrix (n_sets, n_background), restricted to the background."""
    rows, cols = [], []
    n_outside, outside = 0, set()
    for i, (key, genes) in enumerate(sets.items()):
        genes = _gene_list(genes, f"{name}[{key!r}]")
        idx = {index[g] for g in genes if g in index}
        miss = {g for g in genes if g not in index}
        n_outside += len(miss)
        outside |= miss
        rows.extend([i] * len(idx))
        cols.extend(idx)
    data = np.ones(len(rows), dtype=np.int32)
    mat = sparse.csr_matrix((data, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
                            shape=(len(sets), len(index)), dtype=np.int32)
    mat.sum_duplicates()
    mat.sort_indices()
    return mat, n_outside, outside


def _empty_results() -> pd.DataFrame:
    return pd.DataFrame({
        "gene_set": pd.Series(dtype=object), "term": pd.Series(dtype=object),
        "term_size": pd.Series(dtype=np.int64), "overlap": pd.Series(dtype=np.int64),
        "set_size": pd.Series(dtype=np.int64), "background_size": pd.Series(dtype=np.int64),
        "expected": pd.Series(dtype=float), "fold_enrichment": pd.Series(dtype=float),
        "p_value": pd.Series(dtype=float), "p_adj": pd.Series(dtype=float),
        "significant": pd.Series(dtype=bool), "overlap_genes": pd.Series(dtype=object),
    }, columns=RESULT_COLUMNS)


def _hypergeom_upper(k: np.ndarray, M: int, n: np.ndarray, N: np.ndarray) -> np.ndarray:
    """``P(X >= k)`` for X ~ Hypergeom(M, n, N), vectorised.

    ``hypergeom.sf`` costs ~10-20 µs per value, so it is called once per distinct triple: the
    distribution is symmetric in (n, N), and a triple is encoded as one int64 key
    ``(k * (M + 1) + min(n, N)) * (M + 1) + max(n, N)`` (all three are <= M) when it fits.
    """
    p = np.ones(k.shape, dtype=float)  # P(X >= 0) = 1
    pos = np.flatnonzero(k > 0)
    if pos.size:
        kk = k[pos].astype(np.int64)
        a = np.minimum(n[pos], N[pos]).astype(np.int64)
        b = np.maximum(n[pos], N[pos]).astype(np.int64)
        if M < 2_000_000:  # (M + 1) ** 3 fits in int64
            base = np.int64(M + 1)
            keys, inverse = np.unique((kk * base + a) * base + b, return_inverse=True)
            uk, rest = np.divmod(keys, base * base)
            ua, ub = np.divmod(rest, base)
        else:
            uniq, inverse = np.unique(np.stack([kk, a, b], axis=1), axis=0, return_inverse=True)
            uk, ua, ub = uniq.T
        sf = hypergeom.sf(uk - 1, M, ua, ub)
        p[pos] = np.clip(sf[inverse.ravel()], 0.0, 1.0)
    return p


def enrich(gene_sets: Mapping[str, Iterable[str]], collection: Mapping[str, Iterable[str]], background,
           min_term_size: int = 10, max_term_size: int = 500, fdr: float = 0.05, method: str = "by",
           only_significant: bool = False) -> pd.DataFrame:
    """One-sided over-representation test of each gene set against each term of a collection.

    For gene set ``A`` (``N`` genes) and term ``T`` (``n`` genes) within a background of ``M``
    genes, the p-value is ``P(X >= |A ∩ T|)`` with ``X ~ Hypergeom(M, n, N)`` -- the one-sided
    (``alternative="greater"``) Fisher exact test of the 2x2 table.

    * Terms are first restricted to the background; only terms whose restricted size is in
      ``[min_term_size, max_term_size]`` are tested.
    * Genes of a gene set outside the background are dropped (with a warning); a set left
      empty gives no row.
    * Collection genes outside the background are counted in a warning; if none is in the
      background a ValueError is raised (usually mismatched identifiers: Ensembl ids are renamed
      to symbols by :func:`map_feature_names`).
    * p-values are adjusted per gene set across all tested terms (including those with no
      overlap, whose p-value is 1) with ``scipy.stats.false_discovery_control(p, method=method)``;
      ``significant = p_adj <= fdr``.

    All overlaps come from one sparse product ``sets @ terms.T``; p-values from one vectorised
    call of ``scipy.stats.hypergeom.sf`` over the distinct ``(overlap, n, N)`` triples.

    Parameters
    ----------
    gene_sets : mapping str -> iterable of str
        E.g. from :func:`gene_sets_from_model`, ``n_sets`` entries.
    collection : mapping str -> iterable of str
        Annotation terms, e.g. from :func:`read_gmt`, ``n_terms`` entries.
    background : iterable of str, shape (M,)
        The analysed genes (e.g. ``model.feature_names_in_``); duplicates are removed.
    min_term_size, max_term_size : int
        Size range (after restriction to the background) of the tested terms.
    fdr : float in (0, 1]
        Level of the adjusted p-values for the ``significant`` column.
    method : {"by", "bh"}
        Benjamini-Yekutieli (default, valid under any dependence) or Benjamini-Hochberg.
    only_significant : bool
        Return only the rows with ``significant == True``.

    Returns
    -------
    pandas.DataFrame
        One row per (non-empty gene set, tested term) with columns ``gene_set, term, term_size,
        overlap, set_size, background_size, expected, fold_enrichment, p_value, p_adj,
        significant, overlap_genes`` (``";"``-joined, in background order), ordered by gene set
        (input order) then increasing p-value.
    """
    if not isinstance(gene_sets, Mapping):
        raise ValueError(f"`gene_sets` must be a mapping name -> genes; got {type(gene_sets).__name__}")
    if not isinstance(collection, Mapping) or not collection:
        raise ValueError("`collection` must be a non-empty mapping term -> genes")
    for value, name in ((min_term_size, "min_term_size"), (max_term_size, "max_term_size")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer; got {value!r}")
    if max_term_size < min_term_size:
        raise ValueError(f"`max_term_size` ({max_term_size}) is smaller than `min_term_size` ({min_term_size})")
    if isinstance(fdr, bool) or not isinstance(fdr, (int, float, np.number)) or not 0 < fdr <= 1:
        raise ValueError(f"`fdr` must be a number in (0, 1]; got {fdr!r}")
    if method not in ("by", "bh"):
        raise ValueError(f"`method` must be 'by' or 'bh'; got {method!r}")

    bg = list(dict.fromkeys(_gene_list(background, "background")))
    if not bg:
        raise ValueError("`background` is empty")
    n_bg_given = len(_gene_list(background, "background"))
    if n_bg_given != len(bg):
        warnings.warn(f"`background` has {n_bg_given - len(bg)} duplicated gene(s); each is counted once",
                      stacklevel=2)
    index = {g: i for i, g in enumerate(bg)}
    M = len(bg)

    terms = [str(t) for t in collection]
    T, _, outside_terms = _membership(collection, index, "collection")
    if T.nnz == 0:
        raise ValueError("no gene of `collection` is in `background`: the identifiers probably differ "
                         "(e.g. Ensembl ids vs gene symbols, or human vs mouse symbols); for human Ensembl "
                         "ids against a symbol collection, map the genes with --id-map hs (command line) or "
                         "map_feature_names(genes, 'hs') (Python)")
    if outside_terms:
        warnings.warn(f"{len(outside_terms)} distinct gene(s) of `collection` are not in `background` and "
                      "are ignored", stacklevel=2)
    term_size = np.asarray(T.sum(axis=1)).ravel().astype(np.int64)
    tested = np.flatnonzero((term_size >= min_term_size) & (term_size <= max_term_size))
    if tested.size == 0:
        warnings.warn(f"no term of `collection` has between {min_term_size} and {max_term_size} background "
                      "genes: nothing is tested", stacklevel=2)
        return _empty_results()
    T = T[tested]
    term_size = term_size[tested]
    terms = np.asarray(terms, dtype=object)[tested]

    set_names = [str(s) for s in gene_sets]
    S, n_outside, _ = _membership(gene_sets, index, "gene_sets")
    if n_outside:
        warnings.warn(f"{n_outside} gene(s) of `gene_sets` are not in `background` and are dropped", stacklevel=2)
    set_size = np.asarray(S.sum(axis=1)).ravel().astype(np.int64)
    keep = np.flatnonzero(set_size > 0)
    if keep.size == 0:
        return _empty_results()
    S, set_size = S[keep], set_size[keep]
    set_names = np.asarray(set_names, dtype=object)[keep]

    overlap = np.asarray((S @ T.T).toarray(), dtype=np.int64)  # (n_sets, n_tested)
    n_sets, n_terms = overlap.shape
    n_b = np.broadcast_to(term_size[None, :], overlap.shape)
    N_b = np.broadcast_to(set_size[:, None], overlap.shape)
    p = _hypergeom_upper(overlap.ravel(), M, n_b.ravel(), N_b.ravel()).reshape(overlap.shape)
    p_adj = false_discovery_control(p, axis=1, method=method)
    expected = N_b * n_b / M
    fold = overlap / expected
    significant = p_adj <= fdr

    rows, cols = (np.nonzero(significant) if only_significant else np.indices(overlap.shape).reshape(2, -1))
    order = np.lexsort((-fold[rows, cols], p[rows, cols], rows))
    rows, cols = rows[order], cols[order]
    res = pd.DataFrame({
        "gene_set": set_names[rows],
        "term": terms[cols],
        "term_size": term_size[cols],
        "overlap": overlap[rows, cols],
        "set_size": set_size[rows],
        "background_size": np.full(len(rows), M, dtype=np.int64),
        "expected": expected[rows, cols],
        "fold_enrichment": fold[rows, cols],
        "p_value": p[rows, cols],
        "p_adj": p_adj[rows, cols],
        "significant": significant[rows, cols],
        "overlap_genes": _overlap_genes(S, T, np.asarray(bg, dtype=object), rows, cols, overlap),
    }, columns=RESULT_COLUMNS)
    return res


def _overlap_genes(S, T, genes: np.ndarray, rows: np.ndarray, cols: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """``";"``-joined genes of set ``rows[i]`` ∩ term ``cols[i]`` for every requested pair."""
    out = np.full(len(rows), "", dtype=object)
    T_csc = T.tocsc()
    wanted = overlap[rows, cols] > 0
    for r in np.unique(rows[wanted]):
        members = S.indices[S.indptr[r]:S.indptr[r + 1]]
        sub = T_csc[:, members].tocsr()  # (n_terms, |set|): the set's genes in each term
        sub.sort_indices()
        names = genes[members]
        sel = np.flatnonzero((rows == r) & wanted)
        for i in sel:
            c = cols[i]
            out[i] = ";".join(names[sub.indices[sub.indptr[c]:sub.indptr[c + 1]]])
    return out


# ----------------------------------------------------------------------------------------------
# summaries
# ----------------------------------------------------------------------------------------------


def _check_results(results, needed: set[str]) -> None:
    if not isinstance(results, pd.DataFrame):
        raise ValueError(f"`results` must be the DataFrame returned by enrich(); got {type(results).__name__}")
    missing = needed - set(results.columns)
    if missing:
        raise ValueError(f"`results` lacks the column(s) {sorted(missing)} (expected the output of enrich())")


def _infer_block(name: str) -> str:
    m = _FACTOR_NAME.match(name)
    return m.group("block") if m else name


def enrichment_summary(results: pd.DataFrame, gene_sets, block_of: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Per block, how many gene sets have at least one significant term (cf. Figs. 4-5 of the paper).

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`enrich` (all rows or only the significant ones).
    gene_sets : mapping str -> genes, or iterable of str
        All gene sets that were analysed (those without any significant term included); empty
        gene sets are not counted.
    block_of : mapping str -> str, optional
        Gene set -> block.  Default: read from the factor name ``"{block}_{k}"`` (e.g.
        ``"shared_3"`` -> ``"shared"``, ``"study1_0"`` -> ``"study1"``).

    Returns
    -------
    pandas.DataFrame
        Columns ``block, n_gene_sets, n_enriched, share_enriched`` (share NaN for a block with no
        gene set): one row per block (``"shared"`` first, then in order of appearance), then,
        when there is a ``"shared"`` block and at least one other block, a ``"specific"`` row
        aggregating all non-shared blocks.
    """
    _check_results(results, {"gene_set", "significant"})
    if isinstance(gene_sets, Mapping):
        names = [str(k) for k, v in gene_sets.items() if len(_gene_list(v, f"gene_sets[{k!r}]")) > 0]
    elif isinstance(gene_sets, str):
        raise ValueError("`gene_sets` must be a mapping or an iterable of gene-set names, not a string")
    else:
        names = list(dict.fromkeys(str(k) for k in gene_sets))
    unknown = set(results["gene_set"].astype(str)) - set(names)
    if unknown:
        raise ValueError(f"`results` has gene sets missing from `gene_sets`: {sorted(unknown)[:5]}")
    if block_of is None:
        blocks = {n: _infer_block(n) for n in names}
    else:
        if not isinstance(block_of, Mapping):
            raise ValueError("`block_of` must be None or a mapping gene set -> block")
        lacking = [n for n in names if n not in block_of]
        if lacking:
            raise ValueError(f"`block_of` has no block for the gene set(s) {lacking[:5]}")
        blocks = {n: str(block_of[n]) for n in names}
    enriched = set(results.loc[results["significant"].astype(bool), "gene_set"].astype(str))
    order = list(dict.fromkeys(blocks.values()))
    if "shared" in order:
        order = ["shared"] + [b for b in order if b != "shared"]

    def row(label: str, members: list[str]) -> dict:
        n = len(members)
        k = sum(m in enriched for m in members)
        return {"block": label, "n_gene_sets": n, "n_enriched": k, "share_enriched": k / n if n else np.nan}

    out = [row(b, [n for n in names if blocks[n] == b]) for b in order]
    if "shared" in order and len(order) > 1:
        out.append(row("specific", [n for n in names if blocks[n] != "shared"]))
    return pd.DataFrame(out, columns=["block", "n_gene_sets", "n_enriched", "share_enriched"])


def top_terms(results: pd.DataFrame, n: int = 5, max_term_share: float | None = 0.10,
              n_gene_sets: int | None = None) -> pd.DataFrame:
    """Top significant terms of each gene set by fold enrichment, without ubiquitous terms.

    A term significant in more than ``max_term_share`` of the gene sets (and in more than one)
    is removed first, as the paper does for terms enriched in nearly every factor.

    Parameters
    ----------
    results : pandas.DataFrame
        Output of :func:`enrich`.
    n : int
        Number of terms kept per gene set.
    max_term_share : float in [0, 1] or None
        Largest share of gene sets in which a kept term may be significant; None keeps all.
    n_gene_sets : int, optional
        Denominator of that share.  Default: the number of gene sets in ``results``, which is
        right for ``only_significant=False`` output; pass the number of analysed gene sets when
        ``results`` holds only significant rows.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_set, term, rank, fold_enrichment, overlap, set_size, gene_ratio
        (overlap / set_size), p_adj, neg_log10_p_adj, term_share`` (``term_share``: share of
        gene sets in which the term is significant) -- one row per dot of a dot plot, ordered
        by gene set (order of ``results``) and rank.
    """
    _check_results(results, {"gene_set", "term", "fold_enrichment", "p_adj", "significant", "overlap", "set_size"})
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive integer; got {n!r}")
    if max_term_share is not None and not (0 <= float(max_term_share) <= 1):
        raise ValueError(f"`max_term_share` must be in [0, 1] or None; got {max_term_share!r}")
    n_total = results["gene_set"].nunique() if n_gene_sets is None else n_gene_sets
    if isinstance(n_total, bool) or not isinstance(n_total, (int, np.integer)) or n_total < 0:
        raise ValueError(f"`n_gene_sets` must be a positive integer or None; got {n_gene_sets!r}")
    columns = ["gene_set", "term", "rank", "fold_enrichment", "overlap", "set_size", "gene_ratio", "p_adj",
               "neg_log10_p_adj", "term_share"]
    sig = results.loc[results["significant"].astype(bool)].copy()
    if sig.empty:
        return pd.DataFrame(columns=columns)
    if n_total < sig["gene_set"].nunique():
        raise ValueError(f"`n_gene_sets` ({n_total}) is smaller than the number of gene sets with a significant "
                         f"term ({sig['gene_set'].nunique()})")
    counts = sig.groupby("term")["gene_set"].nunique()
    sig["term_share"] = sig["term"].map(counts / n_total)
    if max_term_share is not None:
        limit = max(1.0, float(max_term_share) * n_total)
        ubiquitous = counts.index[counts > limit]
        sig = sig.loc[~sig["term"].isin(ubiquitous)]
    set_order = {s: i for i, s in enumerate(dict.fromkeys(results["gene_set"]))}
    sig = sig.assign(_set=sig["gene_set"].map(set_order))
    sig = sig.sort_values(["_set", "fold_enrichment", "p_adj", "term"], ascending=[True, False, True, True],
                          kind="mergesort")
    sig = sig.groupby("_set", sort=False).head(n).copy()
    sig["rank"] = sig.groupby("_set", sort=False).cumcount() + 1
    sig["gene_ratio"] = sig["overlap"] / sig["set_size"]
    sig["neg_log10_p_adj"] = -np.log10(np.maximum(sig["p_adj"].to_numpy(dtype=float), np.finfo(float).tiny))
    return sig[columns].reset_index(drop=True)
