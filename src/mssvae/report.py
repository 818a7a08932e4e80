"""One self-contained HTML page about a fitted MSSVAE: what a user reads before trusting a factor.

The page holds, in this order (:data:`SECTIONS`): a summary of the data, the fit and its
settings; the masks; the training curves; the variance each factor explains in each study; the
factor scores by study; the top genes of each factor (weights and p*); the gene-set sizes; the
enrichment of the gene sets (the share of shared and study-specific gene sets with a significant
term, and the top terms, as in Figs. 4-5 of the paper); and the association of each factor with
the sample annotations the user names (e.g. a technical batch).

Typical use::

    from mssvae.report import write_report
    write_report("report.html", model, X, study, obs=samples, enrichment="enr/", covariates=["batch"])

or ``mssvae report FIT_DIR --enrich-dir enr/ --covariate batch`` on the output folder of
``mssvae fit``.

The page opens offline and is safe to open: figures are embedded as base64 PNG ``data:`` URIs,
the style sheet is inline, and there is no script, font or link to anything outside the file (a
Content-Security-Policy forbids loading any).  Every string that comes from the user or the data
(study labels, gene and term names, obs columns, the title) is HTML-escaped.  A section whose
input is missing (no enrichment results, no covariates, an empty history) keeps its heading and
says why it is empty.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd

from . import __version__
from .associations import factor_associations, factor_owner
from .enrichment import enrichment_summary, gene_sets_from_model, top_terms

__all__ = [
    "ENRICH_FILES",
    "SECTIONS",
    "ReportWarning",
    "build_report",
    "read_enrichment_dir",
    "write_report",
    "write_report_anndata",
]

#: (anchor, heading) of every section, in page order.
SECTIONS = (
    ("summary", "Summary"),
    ("masks", "Masks"),
    ("training", "Training history"),
    ("variance", "Variance explained"),
    ("scores", "Factor scores by study"),
    ("top-genes", "Top genes per factor"),
    ("gene-sets", "Gene sets"),
    ("enrichment", "Enrichment"),
    ("covariates", "Covariate associations"),
)

#: Tables of an ``mssvae enrich`` output folder that the report reads (enrichment.csv, every tested
#: pair, can be large and is only read when the summary or the top terms are missing).
ENRICH_FILES = {"gene_sets": "gene_sets.csv", "summary": "enrichment_summary.csv", "top_terms": "top_terms.csv"}

_STRING_COLUMNS = {"block", "factor", "gene", "gene_set", "term", "overlap_genes"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 0 1.5em 3em; color: #222; line-height: 1.45; }
h1 { margin-top: 1em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; padding-bottom: .2em; }
nav ol { columns: 3; font-size: .95em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0 1em; }
th, td { border: 1px solid #ddd; padding: .2em .55em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flag td { background: #fff1c7; }
.scroll { max-height: 32em; overflow: auto; display: inline-block; max-width: 100%; }
.note { color: #666; font-style: italic; }
figure { margin: .5em 0 1.2em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


class ReportWarning(UserWarning):
    """A section of the report could not be drawn; the page says so in its place."""


# ----------------------------------------------------------------------------------------------
# HTML pieces (every piece of text goes through html.escape)
# ----------------------------------------------------------------------------------------------


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _p(text: str, cls: str | None = None) -> str:
    return f'<p class="{cls}">{_esc(text)}</p>' if cls else f"<p>{_esc(text)}</p>"


def _note(text: str) -> str:
    return _p(text, "note")


def _fmt_value(v) -> tuple[str, bool]:
    """Cell text and whether it is a number (right-aligned)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "n/a", True
    if isinstance(v, (bool, np.bool_)):
        return ("yes" if v else "no"), False
    if isinstance(v, numbers.Integral):
        return f"{int(v)}", True
    if isinstance(v, numbers.Real):
        v = float(v)
        if v == 0:
            return "0", True
        return (f"{v:.3g}" if abs(v) >= 1e-3 and abs(v) < 1e5 else f"{v:.2e}"), True
    return str(v), False


def _table(df: pd.DataFrame, formats: Mapping[str, Callable] | None = None, flag: Sequence[bool] | None = None,
           index: bool = False, scroll: bool = True) -> str:
    """An HTML table with every header and cell escaped; ``flag`` highlights rows."""
    formats = dict(formats or {})
    frame = df.reset_index() if index else df
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = []
    flags = [False] * len(frame) if flag is None else [bool(f) for f in flag]
    for flagged, (_, row) in zip(flags, frame.iterrows()):
        cells = []
        for col, v in row.items():
            if col in formats and not (isinstance(v, float) and np.isnan(v)):
                text, num = formats[col](v), True
            else:
                text, num = _fmt_value(v)
            cells.append(f'<td class="num">{_esc(text)}</td>' if num else f"<td>{_esc(text)}</td>")
        rows.append(f'<tr class="flag">{"".join(cells)}</tr>' if flagged else f"<tr>{''.join(cells)}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="scroll">{table}</div>' if scroll else table


def _percent(v) -> str:
    return f"{100 * float(v):.1f} %"


def _figure(fig, caption: str, dpi: int) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


# ----------------------------------------------------------------------------------------------
# inputs
# ----------------------------------------------------------------------------------------------


def _read_table(path: Path) -> pd.DataFrame:
    """CSV with gene/term/factor names kept as written ("NA" and "NULL" are gene symbols here)."""
    head = pd.read_csv(path, nrows=0).columns
    strings = [c for c in head if c in _STRING_COLUMNS]
    na = {c: ["", "nan", "NaN"] for c in head if c not in _STRING_COLUMNS}
    return pd.read_csv(path, dtype={c: str for c in strings}, keep_default_na=False, na_values=na)


def read_enrichment_dir(path) -> dict[str, pd.DataFrame]:
    """Read the tables that ``mssvae enrich`` wrote to ``path``.

    Parameters
    ----------
    path : str or path-like
        The ``--output-dir`` of ``mssvae enrich``.

    Returns
    -------
    dict with keys ``"gene_sets"`` (block, factor, gene, weight, abs_weight, inclusion; one row
    per gene of each factor's set), ``"summary"`` (block, n_gene_sets, n_enriched,
    share_enriched) and ``"top_terms"`` (gene_set, term, rank, fold_enrichment, ..., p_adj,
    neg_log10_p_adj, term_share).

    Raises
    ------
    ValueError
        If ``path`` is not a folder or lacks one of :data:`ENRICH_FILES`.
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"enrichment folder {path} does not exist (expected the --output-dir of `mssvae enrich`)")
    missing = [name for name in ENRICH_FILES.values() if not (path / name).is_file()]
    if missing:
        raise ValueError(f"enrichment folder {path} lacks {', '.join(missing)}: is it the output of `mssvae enrich`?")
    out = {}
    for key, name in ENRICH_FILES.items():
        try:
            out[key] = _read_table(path / name)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"cannot read {path / name}: {err}") from None
    return out


def _enrichment_tables(enrichment, model=None, threshold: float = 0.5) -> dict[str, pd.DataFrame] | None:
    """None, an ``mssvae enrich`` folder, or a mapping of DataFrames → the tables the report shows.

    A summary needs every gene set analysed, those without a significant term too: from
    ``"gene_sets"`` when given, else the model's own gene sets at ``threshold``."""
    if enrichment is None:
        return None
    if isinstance(enrichment, (str, Path)):
        return read_enrichment_dir(enrichment)
    if not isinstance(enrichment, Mapping):
        raise TypeError("`enrichment` must be None, the output folder of `mssvae enrich`, or a dict of DataFrames "
                        f"(gene_sets, results, summary, top_terms); got {type(enrichment).__name__}")
    known = {"gene_sets", "results", "summary", "top_terms"}
    unknown = set(enrichment) - known
    if unknown:
        raise ValueError(f"`enrichment` has unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    tables = {}
    for key, value in enrichment.items():
        if value is not None and not isinstance(value, pd.DataFrame):
            raise TypeError(f"`enrichment[{key!r}]` must be a DataFrame; got {type(value).__name__}")
        if value is not None:
            tables[key] = value
    results = tables.get("results")
    if results is not None:
        if "summary" not in tables and "gene_sets" in tables:
            sets = tables["gene_sets"]["factor"].astype(str).unique().tolist()
            tables["summary"] = enrichment_summary(results, sets)
        elif "summary" not in tables and model is not None:
            tables["summary"] = enrichment_summary(results, gene_sets_from_model(model, threshold))
        if "top_terms" not in tables:
            n_sets = tables["gene_sets"]["factor"].nunique() if "gene_sets" in tables else None
            tables["top_terms"] = top_terms(results, n=5, n_gene_sets=n_sets)
    return tables


def _in_factor_order(shared, specific, studies) -> np.ndarray:
    """[shared | study 1 | study 2 | …]: (G, K), the column order of ``factor_names_``."""
    return np.hstack([np.asarray(shared)] + [np.asarray(specific[s]) for s in studies])


def _check_gene_sets_are_the_models(gene_sets: pd.DataFrame, model) -> None:
    """Refuse gene sets written for another fit: the page would show its enrichment under this fit's
    factor names without a sign.  Every listed weight must be an entry of the named factor's column
    of W; genes are not compared, since ``mssvae enrich --id-map`` renames them."""
    if not {"factor", "weight"} <= set(gene_sets.columns):
        raise ValueError("the enrichment's gene_sets table needs columns factor and weight; "
                         f"got {list(gene_sets.columns)}")
    W = _in_factor_order(model.W_shared_, model.W_specific_, model.studies_)
    column = {name: j for j, name in enumerate(model.factor_names_)}
    for factor, rows in gene_sets.groupby(gene_sets["factor"].astype(str), sort=False):
        if factor not in column:
            raise ValueError(f"the enrichment's gene sets name factor {factor!r}, which this model does not have "
                             f"(its factors: {', '.join(model.factor_names_[:6])}, ...): were they made from "
                             "another fit? Run `mssvae enrich` on this fit's model/ folder")
        weights = pd.to_numeric(rows["weight"], errors="coerce").to_numpy(dtype=float)
        # The nearest entry of the sorted column, found by bisection: O((|set| + G) log G), where a
        # set × G comparison took gigabytes for large gene sets of 20,000 genes.
        col = np.sort(W[:, column[factor]].astype(float))
        pos = np.searchsorted(col, weights)
        lo, hi = col[np.clip(pos - 1, 0, len(col) - 1)], col[np.clip(pos, 0, len(col) - 1)]
        nearest = np.minimum(np.abs(weights - lo), np.abs(weights - hi))
        found = nearest <= 1e-7 + 1e-5 * np.abs(weights)
        if not found.all():
            raise ValueError(f"the enrichment's gene set of {factor} has {int((~found).sum())} of {len(found)} "
                             "weights that are not in this model's W: was it made from another fit? Run "
                             "`mssvae enrich` on this fit's model/ folder")


def _as_labels(study, n: int) -> np.ndarray:
    """Study labels as strings, shape (n,); the model matches its studies by ``str`` too."""
    if study is None or isinstance(study, (str, bytes)):
        raise TypeError("`study` must be one label per sample (a list, array or Series)")
    labels = np.asarray(study, dtype=object)
    if labels.shape != (n,):
        raise ValueError(f"`study` must have one label per sample of X ({n}); got shape {labels.shape}")
    return labels.astype(str)


# ----------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------


def build_report(model, X, study, obs: pd.DataFrame | None = None, *, enrichment=None, covariates=(),
                 title: str = "MSSVAE report", source: Mapping[str, object] | None = None, threshold: float = 0.5,
                 n_top_genes: int = 10, alpha: float = 0.05, min_variance: float = 0.01, dpi: int = 90) -> str:
    """The report as one HTML string (see :func:`write_report`, which writes it to a file)."""
    from .model import MSSVAE

    if isinstance(model, (str, Path)):
        model = MSSVAE.load(model)
    if not hasattr(model, "W_shared_") or not hasattr(model, "factor_names_"):
        raise ValueError("`model` must be a fitted MSSVAE (or the folder it was saved to)")
    if not isinstance(title, str):
        raise TypeError(f"`title` must be a string; got {type(title).__name__}")
    if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, numbers.Integral) or n_top_genes < 1:
        raise ValueError(f"`n_top_genes` must be a positive integer; got {n_top_genes!r}")
    if not 0 < float(alpha) < 1:
        raise ValueError(f"`alpha` must be in (0, 1); got {alpha!r}")
    covariates = [covariates] if isinstance(covariates, str) else [str(c) for c in covariates]
    n_samples = np.shape(X)[0]
    if obs is not None:
        if not isinstance(obs, pd.DataFrame) or len(obs) != n_samples:
            raise ValueError(f"`obs` must be a DataFrame with one row per sample of X ({n_samples})")
    if covariates:
        if obs is None:
            raise ValueError(f"`covariates` {covariates} need `obs`, the sample annotations")
        missing = [c for c in covariates if c not in obs.columns]
        if missing:
            raise ValueError(f"`covariates` {missing} are not columns of `obs` (columns: {list(obs.columns)[:20]})")
    labels = _as_labels(study, n_samples)
    tables = _enrichment_tables(enrichment, model, threshold)
    if tables is not None and "gene_sets" in tables:
        _check_gene_sets_are_the_models(tables["gene_sets"], model)

    # A label such as "$\alpha" would be read as mathtext and abort the drawing: user text is literal.
    with matplotlib.rc_context({"text.parse_math": False}):
        Z = model.transform(X, labels)
        ctx = _Context(model, X, labels, obs, Z, tables, covariates, threshold, n_top_genes, alpha,
                       min_variance, dpi, source or {})
        body = []
        for anchor, heading in SECTIONS:
            builder = getattr(ctx, "section_" + anchor.replace("-", "_"))
            try:
                content = builder()
            except (ValueError, TypeError, KeyError, RuntimeError) as err:
                warnings.warn(f"report section {heading!r} could not be drawn: {err}", ReportWarning, stacklevel=2)
                content = _note(f"This section could not be drawn: {err}")
            body.append(f'<section id="{anchor}"><h2>{_esc(heading)}</h2>\n{content}\n</section>')

    nav = "".join(f'<li><a href="#{a}">{_esc(h)}</a></li>' for a, h in SECTIONS)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        # Nothing may be fetched: images are data: URIs, the style is inline, there is no script.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n"
        f"{_p(f'Written by mssvae {__version__} on {stamp}. Self-contained: it opens offline.', 'note')}\n"
        f"<nav><ol>{nav}</ol></nav>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


class _Context:
    """What the sections share: the model, the data, the factors and the derived tables."""

    def __init__(self, model, X, labels, obs, Z, tables, covariates, threshold, n_top, alpha, min_variance, dpi,
                 source):
        self.model, self.X, self.labels, self.obs, self.Z = model, X, labels, obs, Z
        self.tables, self.covariates, self.source = tables, covariates, source
        self.threshold, self.n_top, self.alpha = float(threshold), int(n_top), float(alpha)
        self.min_variance, self.dpi = float(min_variance), int(dpi)
        self.studies = [str(s) for s in model.studies_]
        self.names = [str(f) for f in model.factor_names_]
        self.genes = [str(g) for g in model.feature_names_in_]
        self.W = _in_factor_order(model.W_shared_, model.W_specific_, model.studies_)
        self.P = _in_factor_order(model.inclusion_shared_, model.inclusion_specific_, model.studies_)
        self.owner = factor_owner(model, labels)
        self.active = np.flatnonzero((np.abs(self.W) > self.threshold).any(axis=0))

    def figure(self, fig, caption: str) -> str:
        return _figure(fig, caption, self.dpi)

    # ------------------------------------------------------------------------------ sections
    def section_summary(self) -> str:
        m, h = self.model, self.model.history_
        n_shared_active = int((np.abs(m.W_shared_) > self.threshold).any(axis=0).sum())
        aside = set(getattr(m, "redundant_factors_", []))   # a merged group can be set aside after merging
        facts = [
            ("samples", len(self.labels)),
            ("features", len(self.genes)),
            ("studies", len(self.studies)),
            ("likelihood", m.likelihood),
            ("active shared factors K̂_S", f"{n_shared_active} of {m.W_shared_.shape[1]}"),
            ("active study-specific factors Σ K̂_m",
             f"{len(self.active) - n_shared_active} of {self.W.shape[1] - m.W_shared_.shape[1]}"),
            ("merged factors (functions of one another)",
             "; ".join(" + ".join(g) + (" (then set aside as redundant)" if g[0] in aside else "")
                       for g in getattr(m, "merged_factors_", [])) or "none"),
            ("redundant factors (fewer than two anchor genes)",
             ", ".join(getattr(m, "redundant_factors_", [])) or "none"),
            ("composite factors, folded into the two they are a function of",
             "; ".join(f"{c} → {a} and {b}" for c, a, b in getattr(m, "composite_factors_", [])) or "none"),
            ("epochs run", len(h)),
            ("converged (ran to the end)", bool(getattr(m, "converged_", False))),
            ("device", getattr(m, "device_", "n/a")),
        ]
        for col, label in (("loss", "final loss"), ("log_lik", "final log-likelihood")):
            if col in h and len(h):
                facts.append((label, float(h[col].iloc[-1])))
        facts.append(("support rule", f"gene g is in factor k iff |W_gk| > {self.threshold:g}"))
        facts += [(str(k), v) for k, v in self.source.items()]
        out = [_table(pd.DataFrame(facts, columns=["", "value"]), scroll=False)]

        counts = pd.Series(self.labels).value_counts()
        per_study = pd.DataFrame({
            "study": self.studies,
            "samples": [int(counts.get(s, 0)) for s in self.studies],
            "active K̂_m": [int((np.abs(m.W_specific_[lab]) > self.threshold).any(axis=0).sum())
                           for lab in m.studies_],
            "K_m (initial)": [m.W_specific_[lab].shape[1] for lab in m.studies_],
        })
        out.append(_table(per_study, scroll=False))
        params = pd.DataFrame([(k, "None" if v is None else str(v)) for k, v in m.get_params().items()],
                              columns=["setting", "value"])
        out.append("<details><summary>Settings (all model parameters)</summary>"
                   + _table(params, scroll=False) + "</details>")
        return "\n".join(out)

    def section_masks(self) -> str:
        from .plotting import plot_masks

        m = self.model
        specific = {s: m.W_specific_[lab] for lab, s in zip(m.studies_, self.studies)}
        fig = plot_masks(m.W_shared_, specific, threshold=self.threshold,
                         feature_names=self.genes if len(self.genes) <= 60 else None)
        return self.figure(fig, f"|W| of the active columns (|W| > {self.threshold:g} somewhere), shared block "
                                "first, then each study's; empty columns are dropped.")

    def section_training(self) -> str:
        from .plotting import plot_history

        if len(self.model.history_) == 0:
            return _note("The model holds no training history.")
        return self.figure(plot_history(self.model.history_), "Loss and its terms per epoch; dashed lines: "
                                                                "λ0 annealing stages. The active columns are the "
                                                                "decoder's during training, before the mask check, "
                                                                "merging and the anchor rule, which set the "
                                                                "summary's counts.")

    def section_variance(self) -> str:
        from .plotting import plot_variance_explained

        ve = self.model.variance_explained(self.X, self.labels)
        factors = ve.drop(index="total")
        shown = ve.loc[list(factors.index[factors.max(axis=1) > self.min_variance]) + ["total"]]
        fmt = {c: _percent for c in shown.columns}
        out = [_p("Share of each study's variance explained by each factor: the drop in the reconstruction "
                  "R² of the study's samples when the factor is set to its prior mean (0); "
                  + ("for counts, R² is computed on log1p(10⁴ · counts / library size); " if
                     self.model.likelihood == "nb" else "")
                  + "a merged factor's columns are set to 0 together; 'other columns' sets every decoder column "
                    "that no reported factor stands for (inactive, set aside by the anchor rule, folded "
                    "composites) to 0 together; 'total' is the R² of the whole model. Factors interact "
                    "through the nonlinear decoder, so the shares need not add up to the total.")]
        omitted = len(factors) - (len(shown) - 1)
        if omitted:
            out.append(_note(f"{omitted} factor(s) explaining at most {100 * self.min_variance:g} % in every study "
                             "are not listed."))
        out.append(_table(shown.rename_axis("factor"), formats=fmt, index=True))
        out.append(self.figure(plot_variance_explained(ve, threshold=self.min_variance),
                               "Variance explained (%) per factor and study."))
        return "\n".join(out)

    def section_scores(self) -> str:
        from .plotting import plot_factor_scores

        if len(self.active) == 0:
            return _note(f"No active factor (no |W| > {self.threshold:g}): nothing to draw.")
        fig = plot_factor_scores(self.Z, self.labels, self.names, owner=self.owner, factors=self.active)
        return self.figure(fig, "Posterior mean of each active factor per sample, by study (a study's own factors "
                                "only for its samples).")

    def section_top_genes(self) -> str:
        from .plotting import plot_top_genes

        if len(self.active) == 0:
            return _note(f"No active factor (no |W| > {self.threshold:g}): no gene to list.")
        rows = []
        for k in self.active:
            w = self.W[:, k]
            for rank, g in enumerate(np.argsort(-np.abs(w), kind="stable")[: self.n_top], start=1):
                rows.append({"factor": self.names[k], "rank": rank, "gene": self.genes[g], "weight": w[g],
                             "p*": self.P[g, k], "in gene set": bool(abs(w[g]) > self.threshold)})
        table = pd.DataFrame(rows)
        out = [_p(f"The {self.n_top} genes with the largest |W| of each active factor, with the weight W_gk and "
                  f"the posterior inclusion probability p* (gene set: |W| > {self.threshold:g})."),
               _table(table, formats={"weight": lambda v: f"{v:.3f}", "p*": lambda v: f"{v:.3f}"}),
               self.figure(plot_top_genes(self.W, self.genes, self.names, n=self.n_top, factors=self.active,
                                          threshold=self.threshold), "Top genes per active factor by |W|.")]
        return "\n".join(out)

    def section_gene_sets(self) -> str:
        if self.tables is not None and "gene_sets" in self.tables:
            sets = self.tables["gene_sets"]
            origin = "as written by the enrichment (mssvae enrich)"
        else:
            sets = gene_sets_from_model(self.model, threshold=self.threshold, return_table=True)
            origin = f"from the model, |W| > {self.threshold:g}"
        if sets.empty:
            return _note(f"No gene set: no factor has a gene with |W| > {self.threshold:g}.")
        need = {"block", "factor", "gene"}
        if need - set(sets.columns):
            raise ValueError(f"the gene-set table lacks the column(s) {sorted(need - set(sets.columns))}")
        grouped = sets.groupby(["block", "factor"], sort=False)
        sizes = grouped.size().rename("genes").reset_index()
        if "inclusion" in sets:
            sizes["median p*"] = grouped["inclusion"].median().to_numpy()
        sizes["first genes (by |W|)"] = grouped["gene"].apply(lambda g: ", ".join(map(str, g.head(8)))).to_numpy()
        per_block = sizes.groupby("block", sort=False)["genes"].agg(["count", "median", "min", "max"]).reset_index()
        per_block.columns = ["block", "gene sets", "median size", "smallest", "largest"]
        unknown = sorted(set(sizes["factor"].astype(str)) - set(self.names))
        out = [_p(f"Gene set of factor k: the genes with |W_gk| above the threshold ({origin})."),
               _table(per_block, scroll=False), _table(sizes)]
        if unknown:
            listed = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            out.insert(1, _note(f"Warning: the gene sets name factors this model does not have ({listed}): "
                                "were they computed from another fit?"))
        return "\n".join(out)

    def section_enrichment(self) -> str:
        from .plotting import plot_enrichment_dots

        if self.tables is None:
            return _note("No enrichment results given: run `mssvae enrich MODEL_DIR -o ENRICH_DIR` and pass "
                         "--enrich-dir ENRICH_DIR (or enrichment= in Python).")
        out = []
        summary = self.tables.get("summary")
        if summary is None:
            out.append(_note("No enrichment summary given."))
        else:
            out.append(_p("Share of gene sets with at least one significant term (Benjamini-Yekutieli adjusted "
                          "p-value below the level chosen in mssvae enrich), for the shared factors, each study's "
                          "factors, and all study-specific factors together ('specific'), as in Figs. 4-5 of "
                          "the paper."))
            fmt = {"share_enriched": _percent} if "share_enriched" in summary else {}
            out.append(_table(summary, formats=fmt, scroll=False))
            lines = []
            for block, label in (("shared", "shared"), ("specific", "study-specific")):
                row = summary.loc[summary["block"].astype(str) == block] if "block" in summary else summary.iloc[:0]
                if len(row) and {"n_enriched", "n_gene_sets"} <= set(summary.columns):
                    r = row.iloc[0]
                    share = r["n_enriched"] / r["n_gene_sets"] if r["n_gene_sets"] else float("nan")
                    lines.append(f"{int(r['n_enriched'])} of {int(r['n_gene_sets'])} {label} gene sets "
                                 f"({_percent(share) if np.isfinite(share) else 'n/a'})")
            if lines:
                out.append(_p("Gene sets with ≥ 1 significant term: " + "; ".join(lines) + "."))
        tt = self.tables.get("top_terms")
        if tt is None:
            out.append(_note("No top-terms table given."))
        elif tt.empty:
            out.append(_note("No gene set has a significant term: no top terms to show."))
        else:
            out.append(self.figure(plot_enrichment_dots(tt), "Top terms per gene set by fold enrichment (terms "
                                   "significant in more than 10 % of the gene sets removed); dot area: fold "
                                   "enrichment, colour: −log10 of the adjusted p-value."))
            cols = [c for c in ("gene_set", "rank", "term", "fold_enrichment", "overlap", "set_size", "p_adj")
                    if c in tt.columns]
            out.append(_table(tt[cols], formats={"fold_enrichment": lambda v: f"{v:.2f}"}))
        return "\n".join(out)

    def section_covariates(self) -> str:
        if not self.covariates:
            return _note("No covariate named: pass --covariate COLUMN (e.g. batch), or covariates= in Python, to "
                         "see which factors track a sample annotation rather than the biology.")
        if len(self.active) == 0:
            return _note("No active factor: nothing to test.")
        table = factor_associations(self.Z[:, self.active], self.obs, self.covariates,
                                    factor_names=[self.names[k] for k in self.active],
                                    owner=self.owner[:, self.active])
        flag = (table["p_adj"] < self.alpha).to_numpy()
        hits = table.loc[flag]
        out = [_p("Association of each active factor with each named annotation, on the samples that own the "
                  "factor: Kruskal-Wallis for categories (effect ε² = share of rank variance between levels), "
                  "Spearman for numbers with more than 10 values (effect ρ); p_adj: Benjamini-Hochberg over "
                  f"the table. Highlighted: p_adj < {self.alpha:g}.")]
        for cov in self.covariates:
            names = hits.loc[hits["covariate"] == cov, "factor"].tolist()
            out.append(_p(f"{cov}: " + (f"{len(names)} factor(s) associated ({', '.join(names)})" if names
                                        else f"no factor associated at p_adj < {self.alpha:g}")))
        out.append(_table(table, formats={"p_value": lambda v: f"{v:.2e}", "p_adj": lambda v: f"{v:.2e}"},
                          flag=flag))
        return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def write_report(path, model, X, study, obs: pd.DataFrame | None = None, *, enrichment=None, covariates=(),
                 title: str = "MSSVAE report", overwrite: bool = True, **kwargs) -> Path:
    """Write one self-contained HTML page about a fitted model.

    Parameters
    ----------
    path : str or path-like
        The ``.html`` file to write.
    model : fitted MSSVAE, or the folder it was saved to (``mssvae fit``'s ``out/model``)
    X : array-like or scipy.sparse, shape (N, G)
        The data the model was fitted on (raw counts for an NB fit), one row per sample.
    study : array-like, shape (N,)
        Study label of each sample.
    obs : pandas.DataFrame with N rows, optional
        Sample annotations, needed for ``covariates``.
    enrichment : None, str/path, or dict of DataFrames
        The output folder of ``mssvae enrich`` (read with :func:`read_enrichment_dir`), or a
        dict with any of ``"gene_sets"`` (:func:`mssvae.enrichment.factor_gene_sets` table),
        ``"results"`` (:func:`mssvae.enrichment.enrich` output), ``"summary"`` and
        ``"top_terms"`` (computed from ``"results"`` when missing; the summary then counts the
        ``"gene_sets"`` given, else the model's gene sets at ``threshold``).  None: the enrichment
        section says that none was given.
    covariates : str or sequence of str
        Columns of ``obs`` tested against each active factor (e.g. ``"batch"``).
    title : str
        Page title (escaped).
    overwrite : bool
        Replace an existing file (otherwise a ValueError).
    **kwargs
        ``source`` (dict of extra summary rows, e.g. the input files), ``threshold`` (support
        rule, 0.5), ``n_top_genes`` (10), ``alpha`` (level of the covariate flags, 0.05),
        ``min_variance`` (factors explaining at most this share everywhere are not listed,
        0.01), ``dpi`` (of the embedded figures, 90).

    Returns
    -------
    pathlib.Path of the written file.

    Raises
    ------
    ValueError
        Unfitted model, data that do not match it, unknown covariates, an incomplete
        enrichment folder, or an existing file with ``overwrite=False``.  A section that fails
        while drawing is replaced by a note and a :class:`ReportWarning`.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"`path` {path} is a folder; give the .html file to write")
    if path.exists() and not overwrite:
        raise ValueError(f"`path` {path} exists; pass overwrite=True to replace it")
    page = build_report(model, X, study, obs, enrichment=enrichment, covariates=covariates, title=title, **kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)  # a reader never sees half a page
    return path


def write_report_anndata(path, model, adata, study_key: str = "study", layer: str | None = None, **kwargs) -> Path:
    """:func:`write_report` for an AnnData: X from ``adata.X`` or ``adata.layers[layer]``, the study
    from ``adata.obs[study_key]``, ``obs = adata.obs`` (for ``covariates``).  The AnnData's
    ``var_names`` must be the model's features, in order."""
    from .io import _get_matrix, _get_study
    from .model import MSSVAE

    if isinstance(model, (str, Path)):
        model = MSSVAE.load(model)
    if not hasattr(model, "feature_names_in_"):
        raise ValueError("`model` must be a fitted MSSVAE (or the folder it was saved to)")
    X = _get_matrix(adata, layer)
    study = _get_study(adata, study_key)
    if study.isna().any():
        raise ValueError(f"adata.obs[{study_key!r}] has {int(study.isna().sum())} missing label(s)")
    names = np.asarray(adata.var_names).astype(str)
    fitted = np.asarray(model.feature_names_in_).astype(str)
    if names.shape != fitted.shape or (names != fitted).any():
        raise ValueError(f"the data's {len(names)} features are not the model's {len(fitted)} features "
                         "(same names, same order)")
    return write_report(path, model, X, study.astype(str).to_numpy(), adata.obs, **kwargs)
