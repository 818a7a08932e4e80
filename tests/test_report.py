"""The HTML report (mssvae.report, `mssvae report`): sections, self-containment, escaping, errors,
and a render in a real headless browser when one is installed."""

import base64
import html
import re
import shutil
import subprocess
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import assert_clean_error, run, two_block_data

from mssvae import MSSVAE
from mssvae.enrichment import enrich, enrichment_summary, gene_sets_from_model, top_terms, write_gmt
from mssvae.io import write_anndata
from mssvae.report import SECTIONS, ReportWarning, build_report, read_enrichment_dir, write_report

EVIL_STUDY = "<script>"  # a study label (no "/": h5 keys cannot hold one)
MATH_STUDY = r"$\foo$"  # the other study: mathtext that matplotlib cannot parse, unless drawn literally
EVIL_BATCH = '<img src=x onerror="alert(1)">'
EVIL_TITLE = "Report <b>&</b> </title><script>alert(2)</script>"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted():
    """A tiny Gaussian fit (a few s): shared modules on features 0-9 / 10-19, one per study on 20-29 / 30-39
    (seed 2 recovers all four); the studies are called <script> and $\\foo$; the features have gene-like names."""
    torch.set_num_threads(1)
    X, study, _, _ = two_block_data(n=80)
    study = np.where(study == "s0", EVIL_STUDY, MATH_STUDY)
    genes = np.array([f"GENE{j}" for j in range(X.shape[1])])
    model = MSSVAE(n_shared=3, n_specific=2, hidden=(8, 8), max_epochs=150, batch_size=32, lr=0.01, random_state=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "1 factor.s. carry information", RuntimeWarning)  # a spare column
        model.fit(X, study, feature_names=genes)
    rng = np.random.default_rng(0)
    Z = model.transform(X, study)
    k = int(np.argmax(np.abs(model.W_shared_).sum(axis=0)))  # the strongest shared factor
    obs = pd.DataFrame({
        "batch": rng.choice(["b1", "b2", EVIL_BATCH], len(X)),  # unrelated to the data
        "tracks_factor": np.where(Z[:, k] > 0, "high", "low"),  # follows one factor exactly
        "age": rng.uniform(20, 80, len(X)),
    }, index=[f"sample{i}" for i in range(len(X))])
    return model, X, study, obs


@pytest.fixture(scope="module")
def enrichment_tables(fitted):
    model = fitted[0]
    genes = list(model.feature_names_in_)
    collection = {"SHARED_A": genes[0:10], "SHARED_B": genes[10:20], "S0_TERM <i>&</i>": genes[20:30],
                  "RANDOM": genes[3:40:5]}
    sets = gene_sets_from_model(model)
    res = enrich(sets, collection, background=genes, min_term_size=5)
    return {"gene_sets": gene_sets_from_model(model, return_table=True), "results": res,
            "summary": enrichment_summary(res, sets), "top_terms": top_terms(res, n=5, n_gene_sets=len(sets))}


@pytest.fixture(scope="module")
def page(fitted, enrichment_tables):
    model, X, study, obs = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)  # every section must draw
        return build_report(model, X, study, obs, enrichment=enrichment_tables,
                            covariates=["batch", "tracks_factor", "age"], title=EVIL_TITLE)


def section(page_html, anchor):
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', page_html, flags=re.S)
    assert m, anchor
    return m.group(1)


# ---------------------------------------------------------------------------------------------- content


def test_every_section_has_its_heading_and_figures_are_embedded_png(page):
    for anchor, heading in SECTIONS:
        assert f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>' in page
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # masks, training, variance explained, factor scores, top genes, enrichment dot plot
    assert len(images) == 6
    for data in images:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    for anchor in ("masks", "training", "variance", "scores", "top-genes", "enrichment"):
        assert "<img" in section(page, anchor), anchor
    assert "could not be drawn" not in page


def test_summary_reports_the_fit(page, fitted):
    model = fitted[0]
    s = section(page, "summary")
    assert "<td>samples</td><td class=\"num\">160</td>" in s
    assert f"{model.n_shared_active_} of 3" in s
    assert "epochs run</td><td class=\"num\">150</td>" in s
    assert "gaussian" in s and "Settings" in s


def test_tables_hold_the_numbers_of_the_model(page, fitted):
    model, X, study, _ = fitted
    ve = model.variance_explained(X, study)
    v = section(page, "variance")
    assert f"{100 * ve.loc['total', MATH_STUDY]:.1f} %" in v
    top = section(page, "top-genes")
    k = model.active_shared_[0]
    g = int(np.argmax(np.abs(model.W_shared_[:, k])))
    assert f"<td>shared_{k}</td><td class=\"num\">1</td><td>GENE{g}</td>" in top
    assert f"{model.W_shared_[g, k]:.3f}" in top
    sets = section(page, "gene-sets")
    assert "median p*" in sets and "first genes (by |W|)" in sets


def test_enrichment_section_shows_shares_and_top_terms(page, enrichment_tables):
    e = section(page, "enrichment")
    summary = enrichment_tables["summary"]
    shared = summary.loc[summary["block"] == "shared"].iloc[0]
    assert f"{int(shared['n_enriched'])} of {int(shared['n_gene_sets'])} shared gene sets" in e
    terms = enrichment_tables["top_terms"]["term"]
    assert len(terms) > 0  # the planted blocks overlap the toy fit's gene sets
    for term in terms:
        assert f"<td>{html.escape(term)}</td>" in e  # escaped: "S0_TERM <i>&</i>" is a term name here


def test_results_alone_give_the_summary_of_the_models_own_gene_sets(fitted, enrichment_tables):
    model, X, study, _ = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)
        e = section(build_report(model, X, study, enrichment={"results": enrichment_tables["results"]}), "enrichment")
    summary = enrichment_tables["summary"]
    shared = summary.loc[summary["block"] == "shared"].iloc[0]
    assert f"{int(shared['n_enriched'])} of {int(shared['n_gene_sets'])} shared gene sets" in e


def test_covariate_associations_flag_the_factor_a_covariate_tracks(page):
    c = section(page, "covariates")
    flagged = re.findall(r'<tr class="flag"><td>([^<]*)</td><td>([^<]*)</td>', c)
    assert ("shared_" in flagged[0][0]) and any(cov == "tracks_factor" for _, cov in flagged), flagged
    # batch and age were drawn at random, unrelated to the data
    assert not any(cov in ("batch", "age") for _, cov in flagged), flagged
    assert "batch: no factor associated" in c


# ---------------------------------------------------------------------------------------------- safety


def test_page_is_self_contained(page):
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    assert "url(" not in page
    for value in re.findall(r'\bsrc="([^"]*)"', page):
        assert value.startswith("data:image/png;base64,"), value[:40]
    for value in re.findall(r'\bhref="([^"]*)"', page):
        assert value.startswith("#"), value
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_user_strings_are_escaped(page):
    for raw in (EVIL_STUDY, EVIL_BATCH, EVIL_TITLE, "<i>&</i>"):
        assert raw not in page
    assert html.escape(EVIL_STUDY) in page  # in the tables, as text
    assert f"<title>{html.escape(EVIL_TITLE)}</title>" in page
    assert f"<h1>{html.escape(EVIL_TITLE)}</h1>" in page


def test_literal_labels_no_significant_term_and_no_covariate_give_notes(fitted, enrichment_tables, tmp_path):
    model, X, study, _ = fitted
    res = enrichment_tables["results"].assign(significant=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)
        path = write_report(tmp_path / "sub" / "r.html", model, X, study, title=r"$\foo$ report",
                            enrichment={"results": res, "gene_sets": enrichment_tables["gene_sets"]})
    text = path.read_text(encoding="utf-8")
    assert r"<h1>$\foo$ report</h1>" in text
    for _, heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in text
    assert "No gene set has a significant term" in section(text, "enrichment")
    assert "0 of" in section(text, "enrichment")
    assert "No covariate named" in section(text, "covariates")
    assert "as written by the enrichment" in section(text, "gene-sets")


def test_gene_sets_of_another_fit_are_refused(fitted, enrichment_tables):
    # written for another fit, they would put its enrichment under this fit's factor names
    model, X, study, _ = fitted
    other = enrichment_tables["gene_sets"].assign(weight=lambda t: t["weight"] * 1.1)
    with pytest.raises(ValueError, match="not in this model's W: was it made from another fit"):
        build_report(model, X, study, enrichment={"gene_sets": other, "results": enrichment_tables["results"]})
    renamed = enrichment_tables["gene_sets"].assign(factor="shared_99")
    with pytest.raises(ValueError, match="factor 'shared_99', which this model does not have"):
        build_report(model, X, study, enrichment={"gene_sets": renamed})


def test_api_rejects_bad_input_with_clear_errors(fitted, tmp_path):
    model, X, study, obs = fitted
    with pytest.raises(ValueError, match=r"\['nope'\] are not columns of `obs`"):
        build_report(model, X, study, obs, covariates=["batch", "nope"])
    with pytest.raises(ValueError, match="need `obs`"):
        build_report(model, X, study, covariates="batch")
    with pytest.raises(ValueError, match="one label per sample"):
        build_report(model, X, study[:-1])
    with pytest.raises(ValueError, match="lacks enrichment_summary.csv, top_terms.csv"):
        (tmp_path / "enr").mkdir()
        pd.DataFrame({"factor": ["a"], "gene": ["g"], "block": ["b"]}).to_csv(tmp_path / "enr" / "gene_sets.csv")
        build_report(model, X, study, enrichment=tmp_path / "enr")
    with pytest.raises(ValueError, match="not fitted|fitted MSSVAE"):
        build_report(MSSVAE(), X, study)
    (tmp_path / "r.html").write_text("old")
    with pytest.raises(ValueError, match="exists"):
        write_report(tmp_path / "r.html", model, X, study, overwrite=False)
    assert (tmp_path / "r.html").read_text() == "old"


# ---------------------------------------------------------------------------------------------- command line






@pytest.fixture(scope="module")
def fit_dir(fitted, tmp_path_factory):
    """What `mssvae fit data.h5ad --study-key group` leaves: result.h5ad (obs 'group', no 'study'), model/;
    plus what `mssvae enrich` writes."""
    model, X, study, obs = fitted
    root = tmp_path_factory.mktemp("cli")
    adata = ad.AnnData(X=X, obs=obs.assign(group=study))
    adata.var_names = list(model.feature_names_in_)
    write_anndata(model, adata, "group")
    out = root / "fit"
    out.mkdir()
    adata.write_h5ad(out / "result.h5ad")
    model.save(out / "model")
    genes = list(model.feature_names_in_)
    write_gmt({"SHARED_A": genes[0:10], "S0_TERM": genes[20:30]}, root / "terms.gmt")
    res = run("enrich", out / "model", "--gmt", root / "terms.gmt", "--min-term-size", 5, "-o", root / "enr")
    assert res.exit_code == 0, res.output
    return out, root / "enr"


def test_cli_report_writes_the_page_beside_the_fit(fit_dir):
    out, enr = fit_dir
    res = run("report", out, "--enrich-dir", enr, "--covariate", "batch", "--covariate", "tracks_factor",
              "--threads", 1)
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert f"wrote {out / 'report.html'}" in res.output
    text = (out / "report.html").read_text(encoding="utf-8")
    for _, heading in SECTIONS:
        assert f"<h2>{heading}</h2>" in text
    assert "SHARED_A" in section(text, "enrichment")
    assert "tracks_factor:" in section(text, "covariates")
    assert "<td>study column</td><td>group</td>" in text  # read from uns['mssvae'] (no --study-key)
    assert EVIL_STUDY not in text and html.escape(EVIL_STUDY) in text
    again = run("report", out)
    assert_clean_error(again, "report.html exists", "--overwrite")
    ok = run("report", out, "--overwrite", "-o", out / "other" / "r.html", "--title", "<t>", "--threads", 1)
    assert ok.exit_code == 0, ok.output
    bare = (out / "other" / "r.html").read_text(encoding="utf-8")
    assert "<h1>&lt;t&gt;</h1>" in bare
    assert "No enrichment results given" in section(bare, "enrichment")
    assert "No covariate named" in section(bare, "covariates")
    assert "from the model, |W| &gt; 0.5" in section(bare, "gene-sets")


@pytest.mark.parametrize("case, fragments", [
    ("no-fit-dir", ["does not exist", "mssvae fit"]),
    ("no-result", ["has no result.h5ad"]),
    ("no-model", ["has no model"]),
    ("unknown-covariate", ["--covariate", "'nope' is not a column", "batch"]),
    ("unknown-study-key", ["--study-key", "'cohort' is not a column"]),
    ("bad-enrich-dir", ["lacks", "top_terms.csv", "mssvae enrich"]),
    ("missing-enrich-dir", ["enrichment folder", "does not exist"]),
    ("bad-layer", ["--layer", "'counts' is not a layer", "layers: none"]),
])
def test_cli_report_errors_are_one_line(fit_dir, tmp_path, case, fragments):
    out, enr = fit_dir
    args = [out]
    if case == "no-fit-dir":
        args = [tmp_path / "nowhere"]
    elif case in ("no-result", "no-model"):
        partial = tmp_path / "partial"
        partial.mkdir()
        if case == "no-model":
            shutil.copy(out / "result.h5ad", partial / "result.h5ad")
        args = [partial]
    elif case == "unknown-covariate":
        args += ["--covariate", "batch", "--covariate", "nope"]
    elif case == "unknown-study-key":
        args += ["--study-key", "cohort"]
    elif case == "bad-enrich-dir":
        (tmp_path / "enr").mkdir()
        shutil.copy(enr / "gene_sets.csv", tmp_path / "enr" / "gene_sets.csv")
        args += ["--enrich-dir", tmp_path / "enr"]
    elif case == "missing-enrich-dir":
        args += ["--enrich-dir", tmp_path / "none"]
    elif case == "bad-layer":
        args += ["--layer", "counts"]
    res = run("report", *args, "-o", tmp_path / "r.html")
    assert_clean_error(res, *fragments)
    assert not (tmp_path / "r.html").exists()


def test_read_enrichment_dir_keeps_gene_names_such_as_NA(tmp_path):
    (tmp_path / "gene_sets.csv").write_text("block,factor,gene,weight,abs_weight,inclusion\n"
                                            "shared,shared_0,NA,1.5,1.5,0.9\nshared,shared_0,NULL,-1,1,\n")
    (tmp_path / "enrichment_summary.csv").write_text("block,n_gene_sets,n_enriched,share_enriched\nshared,1,0,0\n")
    (tmp_path / "top_terms.csv").write_text("gene_set,term,rank,fold_enrichment,overlap,set_size,gene_ratio,"
                                            "p_adj,neg_log10_p_adj,term_share\n")
    tables = read_enrichment_dir(tmp_path)
    assert tables["gene_sets"]["gene"].tolist() == ["NA", "NULL"]
    assert np.isnan(tables["gene_sets"]["inclusion"].iloc[1])
    assert tables["top_terms"].empty


# ---------------------------------------------------------------------------------------------- a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path, *args):
    profile = tmp_path / "profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={profile}", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def coloured_share(png_path):
    """Share of pixels with a clearly saturated colour (the figures' colour maps; text and tables are grey)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(png_path)[..., :3]
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert (img.min(axis=2) < 0.5).mean() > 0.005  # not blank: there is text
    return float(((img.max(axis=2) - img.min(axis=2)) > 0.25).mean())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install -y chromium)")
def test_the_page_renders_in_headless_chromium(page, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    dom = chromium(tmp_path, "--dump-dom", path.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for _, heading in SECTIONS:
        assert f"<h2>{html.escape(heading)}</h2>" in dom.stdout
    assert html.escape(EVIL_STUDY) in dom.stdout and "<script" not in dom.stdout.lower()

    # The figures are drawn (not broken images): the top of the page holds many more coloured pixels
    # than the same page with its images removed.
    shots = {}
    for name, text in (("full", page), ("no_images", re.sub(r"<img [^>]*>", "", page))):
        source, shot = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
        source.write_text(text, encoding="utf-8")
        res = chromium(tmp_path, "--window-size=1280,3000", f"--screenshot={shot}", source.as_uri())
        assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
        shots[name] = coloured_share(shot)
    # measured: ~1.5 % of the pixels with the figures, ~0.15 % (blue links) without
    assert shots["full"] > 0.005 and shots["full"] > 4 * shots["no_images"], shots


# ---------------------------------------------------------------------------------------------- the new figures


def test_plot_variance_explained_keeps_factors_above_the_threshold():
    from mssvae.plotting import plot_variance_explained

    ve = pd.DataFrame({"a": [0.2, 0.001, 0.0, 0.5], "b": [0.0, 0.002, 0.3, 0.6]},
                      index=["shared_0", "shared_1", "b_0", "total"])
    fig = plot_variance_explained(ve, threshold=0.01)
    heat, total = [ax for ax in fig.axes if ax.images]
    assert [t.get_text() for t in heat.get_yticklabels()] == ["shared_0", "b_0"]
    assert [t.get_text() for t in total.get_yticklabels()] == ["total"]
    assert "20.0" in [t.get_text() for t in heat.texts]  # annotated in %
    with pytest.raises(TypeError):
        plot_variance_explained(ve.to_numpy())


def test_plot_factor_scores_draws_owners_only_and_caps_panels():
    from mssvae.plotting import plot_factor_scores

    rng = np.random.default_rng(0)
    study = np.repeat(["a", "b"], 20)
    Z = rng.normal(size=(40, 3))
    owner = np.ones_like(Z, dtype=bool)
    owner[study == "b", 2] = False  # factor 2 belongs to study a
    fig = plot_factor_scores(Z, study, ["shared_0", "shared_1", "a_0"], owner=owner, max_factors=None)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["shared_0", "shared_1", "a_0"]
    assert sum(len(c.get_offsets()) for c in panels[2].collections) == 20  # study a's points only
    fig = plot_factor_scores(Z, study, ["x", "y", "z"], factors=["z", 0], max_factors=1)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["z"]
    assert "1 more not shown" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="unknown factor"):
        plot_factor_scores(Z, study, ["x", "y", "z"], factors=["nope"])


def test_plot_top_genes_defaults_to_active_factors():
    from mssvae.plotting import plot_top_genes

    W = np.zeros((12, 3))
    W[:4, 0] = [3, -2, 1, 0.2]
    W[5, 2] = 0.4  # below 0.5: factor 2 is not active
    fig = plot_top_genes(W, [f"g{i}" for i in range(12)], ["f0", "f1", "f2"], n=3)
    (ax,) = [ax for ax in fig.axes if ax.get_title()]
    assert ax.get_title() == "f0 (3 genes)"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["g0", "g1", "g2"]
    fig = plot_top_genes(np.zeros((4, 2)), list("abcd"), ["f0", "f1"])
    assert "no factor with |W| > 0.5" in fig.axes[0].texts[0].get_text()


def test_plot_enrichment_dots_rows_terms_columns_sets():
    from mssvae.plotting import plot_enrichment_dots

    tt = pd.DataFrame({"gene_set": ["shared_0", "shared_0", "a_0"], "term": ["T1", "T2", "T1"],
                       "fold_enrichment": [4.0, 2.0, 8.0], "p_adj": [1e-4, 1e-2, 1e-6]})
    fig = plot_enrichment_dots(tt)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["T1", "T2"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["shared_0", "a_0"]
    dots = ax.collections[0]
    assert np.allclose(dots.get_array(), [4, 2, 6])  # colour: -log10 p_adj, computed from p_adj
    assert dots.get_sizes()[2] > dots.get_sizes()[0] > dots.get_sizes()[1]  # area grows with fold
    empty = plot_enrichment_dots(tt.iloc[:0])
    assert "no significant term" in empty.axes[0].texts[0].get_text()
    with pytest.raises(ValueError, match="fold_enrichment"):
        plot_enrichment_dots(tt.drop(columns="fold_enrichment"))
