"""App. C.4 count preprocessing and Ensembl id → symbol mapping, on tiny handcrafted AnnData."""

import gzip
import json
import math
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from mssvae.preprocess import map_gene_ids, preprocess_counts, read_id_map

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
PLATELETS = SHARED / "platelets_gse68086"
ID_MAP = SHARED / "genesets" / "ensembl_to_symbol_orgHsEgDb3.16.tsv.gz"

# Steps that would otherwise run by default, switched off so each test isolates one filter.
NO_DEPTH = {"min_total_log": None}
NO_GENE_FILTER = {"min_gene_counts": 0, "min_cpm_fraction": 0.0}
NO_HVG = {"n_top_genes": None}


def make_adata(X, study, var_names=None):
    X = np.asarray(X) if not sparse.issparse(X) else X
    obs = pd.DataFrame({"study": study}, index=[f"s{i}" for i in range(X.shape[0])])
    adata = ad.AnnData(X=X, obs=obs)
    adata.var_names = var_names if var_names is not None else [f"g{j}" for j in range(X.shape[1])]
    return adata


def depth_gene_matrix():
    """7 samples (a,a,a,a,b,b,b); s3 is shallow (total 50), the others total 1000.

    genes: big (fills each library), few (3 counts in kept samples), only_low (40 counts, all in s3),
    exact (exactly 10 counts in kept samples).
    """
    few = [1, 1, 0, 0, 1, 0, 0]
    only_low = [0, 0, 0, 40, 0, 0, 0]
    exact = [2, 2, 2, 0, 2, 1, 1]
    depth = [1000, 1000, 1000, 50, 1000, 1000, 1000]
    big = [d - f - o - e for d, f, o, e in zip(depth, few, only_low, exact)]
    X = np.array([big, few, only_low, exact], dtype=np.int64).T
    study = ["a", "a", "a", "a", "b", "b", "b"]
    return make_adata(X, study, ["big", "few", "only_low", "exact"])


def cpm_matrix():
    """10 samples with library size exactly 1e6, so CPM equals the count.

    gA: 2 in two samples (CPM 2 > 1 in 2/10 = 20% → kept at min_cpm_fraction=0.2);
    gB: 2 in one sample, 1 elsewhere (CPM > 1 in only 1 sample → dropped; CPM == 1 does not count);
    gC: 1 everywhere (CPM == 1, never > 1 → dropped).
    """
    n = 10
    gA = np.zeros(n, dtype=np.int64)
    gA[[0, 7]] = 2
    gB = np.ones(n, dtype=np.int64)
    gB[3] = 2
    gC = np.ones(n, dtype=np.int64)
    filler = 1_000_000 - gA - gB - gC
    X = np.stack([filler, gA, gB, gC], axis=1)
    return make_adata(X, ["a"] * 5 + ["b"] * 5, ["filler", "gA", "gB", "gC"])


def nb_counts(n=24, G=60, seed=0, dtype=np.int64):
    """Counts with genes 0-9 strongly overdispersed (NB, theta=0.5) and the rest Poisson."""
    rng = np.random.default_rng(seed)
    mu = np.full(G, 50.0)
    X = rng.poisson(mu, size=(n, G)).astype(dtype)
    X[:, :10] = rng.negative_binomial(0.5, 0.5 / (0.5 + mu[:10]), size=(n, 10))
    return make_adata(X, np.repeat(["a", "b", "c"], n // 3))


# ---------------------------------------------------------------------------------------------- filters


def test_depth_filter_drops_only_the_shallow_sample():
    out, _ = preprocess_counts(depth_gene_matrix(), "study", min_total_log=math.log(500), **NO_GENE_FILTER, **NO_HVG)
    assert list(out.obs_names) == ["s0", "s1", "s2", "s4", "s5", "s6"]


def test_gene_count_filter_uses_kept_samples_and_is_inclusive():
    # only_low has 40 counts overall but none in kept samples; few has 3; exact has exactly 10.
    out, _ = preprocess_counts(depth_gene_matrix(), "study", min_total_log=math.log(500), min_gene_counts=10,
                               min_cpm_fraction=0.0, **NO_HVG)
    assert list(out.var_names) == ["big", "exact"]


@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_cpm_rule_strictly_above_min_cpm_in_enough_samples(fmt):
    adata = cpm_matrix()
    if fmt == "csr":
        adata.X = sparse.csr_matrix(adata.X)
    out, _ = preprocess_counts(adata, "study", min_cpm=1.0, min_cpm_fraction=0.2, min_gene_counts=0,
                               **NO_DEPTH, **NO_HVG)
    assert list(out.var_names) == ["filler", "gA"]


def test_output_holds_the_raw_counts_of_kept_cells_and_genes():
    adata = depth_gene_matrix()
    out, _ = preprocess_counts(adata, "study", min_total_log=math.log(500), min_gene_counts=10,
                               min_cpm_fraction=0.0, **NO_HVG)
    expected = adata[out.obs_names, out.var_names].X
    np.testing.assert_array_equal(out.X, expected)
    np.testing.assert_array_equal(out.layers["counts"], expected)


def test_counts_read_from_layer_end_up_in_X():
    adata = depth_gene_matrix()
    adata.layers["raw"] = adata.X.copy()
    adata.X = np.log1p(adata.X.astype(float))
    out, _ = preprocess_counts(adata, "study", layer="raw", min_total_log=math.log(500), **NO_GENE_FILTER, **NO_HVG)
    np.testing.assert_array_equal(out.X, adata.layers["raw"][[0, 1, 2, 4, 5, 6]])


def test_integer_valued_floats_are_accepted():
    adata = depth_gene_matrix()
    adata.X = adata.X.astype(np.float32)
    out, _ = preprocess_counts(adata, "study", min_total_log=math.log(500), **NO_GENE_FILTER, **NO_HVG)
    assert out.shape == (6, 4)
    assert out.X.dtype == np.float32


def test_copy_true_leaves_input_untouched():
    adata = depth_gene_matrix()
    before = adata.X.copy()
    preprocess_counts(adata, "study", min_total_log=math.log(500), min_gene_counts=10, **NO_HVG)
    assert adata.shape == (7, 4)
    np.testing.assert_array_equal(adata.X, before)
    assert "mssvae_preprocess" not in adata.uns


def test_preprocessing_a_preprocessed_adata_again_warns():
    # the second depth filter sums only the kept genes, so it can drop samples the first pass kept
    out, _ = preprocess_counts(depth_gene_matrix(), "study", min_total_log=math.log(500), **NO_HVG)
    with pytest.warns(UserWarning, match="already preprocessed"):
        preprocess_counts(out, "study", min_total_log=math.log(500), **NO_HVG)


def test_copy_false_subsets_in_place():
    adata = depth_gene_matrix()
    out, _ = preprocess_counts(adata, "study", min_total_log=math.log(500), min_gene_counts=10,
                               min_cpm_fraction=0.0, copy=False, **NO_HVG)
    assert out is adata
    assert adata.shape == (6, 2)


# ---------------------------------------------------------------------------------------------- report


def test_report_has_one_row_per_step_with_consistent_numbers():
    out, report = preprocess_counts(depth_gene_matrix(), "study", min_total_log=math.log(500), min_gene_counts=10,
                                    min_cpm_fraction=0.0, **NO_HVG)
    assert list(report["step"]) == ["min_total_counts", "min_gene_counts", "min_cpm", "pearson_residuals_hvg"]
    assert list(report["removed_samples"]) == [1, 0, 0, 0]
    assert list(report["removed_genes"]) == [0, 2, 0, 0]
    assert report["samples_after"].iloc[-1] == out.n_obs and report["genes_after"].iloc[-1] == out.n_vars


def test_report_in_uns_is_json_able_and_h5ad_writable(tmp_path):
    out, report = preprocess_counts(depth_gene_matrix(), "study", min_total_log=math.log(500), **NO_HVG)
    stored = out.uns["mssvae_preprocess"]
    json.dumps(stored)
    assert pd.DataFrame(stored["steps"]).equals(report)
    out.write_h5ad(tmp_path / "p.h5ad")
    back = ad.read_h5ad(tmp_path / "p.h5ad")
    assert list(back.uns["mssvae_preprocess"]["steps"]["genes_after"]) == list(report["genes_after"])


# ---------------------------------------------------------------------------------------------- HVG (scanpy)


def test_hvg_keeps_n_top_genes_with_raw_integer_counts():
    pytest.importorskip("scanpy")
    adata = nb_counts()
    out, report = preprocess_counts(adata, "study", **NO_DEPTH, **NO_GENE_FILTER, n_top_genes=10)
    assert out.n_vars == 10
    assert out.X.dtype == np.int64
    np.testing.assert_array_equal(out.X, adata[:, out.var_names].X)
    assert report["genes_after"].iloc[-1] == 10


def test_hvg_keeps_all_genes_when_fewer_than_n_top_genes():
    pytest.importorskip("scanpy")
    out, report = preprocess_counts(nb_counts(G=30), "study", **NO_DEPTH, **NO_GENE_FILTER, n_top_genes=50)
    assert out.n_vars == 30
    assert "all kept" in report["note"].iloc[-1]


def test_missing_scanpy_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "scanpy", None)
    with pytest.raises(ImportError, match=r"mssvae\[bio\]"):
        preprocess_counts(nb_counts(), "study", **NO_DEPTH, **NO_GENE_FILTER, n_top_genes=10)


# ---------------------------------------------------------------------------------------------- bad input


def _with_study(values):
    adata = depth_gene_matrix()
    adata.obs["study"] = values
    return adata


def _with_X(X):
    adata = depth_gene_matrix()
    adata.X = X
    return adata


_base = depth_gene_matrix().X


@pytest.mark.parametrize(
    "adata, kwargs, match",
    [
        (_with_study(["a", np.nan, "a", "a", "b", "b", "b"]), {}, r"`study_key`.*missing"),
        (_with_study(["a", None, "a", "a", "b", "b", "b"]), {}, r"`study_key`.*missing"),
        (_with_study(["a", " ", "a", "a", "b", "b", "b"]), {}, r"`study_key`.*missing"),
        (_with_study(["a"] * 7), {}, r"`study_key`.*at least 2 studies"),
        (depth_gene_matrix(), {"study_key": "batch"}, r"`study_key` 'batch'"),
        (_with_X(_base * np.where(np.arange(7) == 2, -1, 1)[:, None]), {}, r"adata\.X.*negative"),
        (_with_X(_base + np.where(np.arange(7) == 2, 0.5, 0)[:, None]), {}, r"adata\.X.*non-integer"),
        (_with_X(np.where(_base == 2, np.inf, _base)), {}, r"adata\.X.*non-finite"),
        (_with_X(sparse.csr_matrix(_base * -1)), {}, r"adata\.X.*negative"),
        (depth_gene_matrix(), {"layer": "raw"}, r"`layer` 'raw'"),
        (depth_gene_matrix(), {"min_cpm_fraction": 1.5}, r"`min_cpm_fraction`"),
    ],
    ids=["nan-study", "none-study", "blank-study", "one-study", "no-study-key", "negative", "non-integer",
         "inf", "sparse-negative", "no-layer", "bad-fraction"],
)
def test_bad_input_raises_value_error_naming_the_argument(adata, kwargs, match):
    kwargs = {"study_key": "study", **kwargs}
    with pytest.raises(ValueError, match=match):
        preprocess_counts(adata, **kwargs, **NO_HVG)


def test_study_left_with_one_sample_is_named():
    # Study b's s4 and s5 are shallow: only s6 survives the depth filter.
    adata = depth_gene_matrix()
    adata.X[[4, 5], 0] = 10
    with pytest.raises(ValueError, match=r"study 'b' has 1 sample.*`min_study_samples`=2"):
        preprocess_counts(adata, "study", min_total_log=math.log(500), **NO_HVG)


# ---------------------------------------------------------------------------------------------- gene ids


def id_adata(var_names, totals=None):
    totals = np.ones(len(var_names)) if totals is None else np.asarray(totals, dtype=float)
    return make_adata(np.tile(totals, (2, 1)), ["a", "b"], var_names)


def test_map_gene_ids_strips_version_suffixes():
    adata = id_adata(["ENSG00000000001.5", "ENSG00000000002.12"])
    out = map_gene_ids(adata, {"ENSG00000000001": "AAA", "ENSG00000000002.3": "BBB"})
    assert list(out.var_names) == ["AAA", "BBB"]
    assert list(out.var["gene_id"]) == ["ENSG00000000001.5", "ENSG00000000002.12"]


def test_map_gene_ids_keeps_or_drops_unmapped():
    adata = id_adata(["ENSG00000000001.5", "ENSG00000000002.1", "ENSG00000000003"])
    id_map = pd.Series({"ENSG00000000001": "AAA", "ENSG00000000002": ""})
    assert list(map_gene_ids(adata, id_map).var_names) == ["AAA", "ENSG00000000002", "ENSG00000000003"]
    assert list(map_gene_ids(adata, id_map, keep_unmapped=False).var_names) == ["AAA"]


def test_map_gene_ids_duplicates_keep_symbol_on_highest_total():
    adata = id_adata(["ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000004"],
                     totals=[5, 50, 7, 1])
    id_map = {"ENSG00000000001": "DUP", "ENSG00000000002": "DUP", "ENSG00000000003": "DUP",
              "ENSG00000000004": "ONE"}
    out = map_gene_ids(adata, id_map)
    assert list(out.var_names) == ["DUP|ENSG00000000001", "DUP", "DUP|ENSG00000000003", "ONE"]
    assert adata.var_names[0] == "ENSG00000000001"  # input untouched


def test_read_id_map_tsv_gz_with_header_and_repeated_ids(tmp_path):
    path = tmp_path / "map.tsv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("ensembl_id\tsymbol\nENSG00000000001.4\tAAA\nENSG00000000002\tBBB\nENSG00000000002\tLOC1\n"
                 "ENSG00000000003\t\n")
    m = read_id_map(path)
    assert m.to_dict() == {"ENSG00000000001": "AAA", "ENSG00000000002": "BBB"}


def test_read_id_map_csv_without_header(tmp_path):
    path = tmp_path / "map.csv"
    path.write_text("ENSG00000000001,AAA\nENSG00000000002,BBB\n")
    assert read_id_map(path).to_dict() == {"ENSG00000000001": "AAA", "ENSG00000000002": "BBB"}


@pytest.mark.skipif(not ID_MAP.is_file(), reason="shared/data id map not present")
def test_read_id_map_reads_the_shared_org_hs_eg_db_table():
    m = read_id_map(ID_MAP)
    assert m.index.is_unique
    assert 39_000 < len(m) <= 40_102
    assert m["ENSG00000121410"] == "A1BG"


def test_shipped_human_map_is_the_org_hs_eg_db_table():
    from mssvae.preprocess import load_builtin_id_map, looks_like_human_ensembl

    m = load_builtin_id_map("hs")
    assert m.index.is_unique and 39_000 < len(m) <= 40_102
    assert m["ENSG00000121410"] == "A1BG" and m["ENSG00000000003"] == "TSPAN6"
    if ID_MAP.is_file():  # built by scripts/build_id_map.py from the same Debian package as the shared file
        assert m.equals(read_id_map(ID_MAP))
    assert looks_like_human_ensembl(["ENSG00000121410.3", "ENSG00000000003", "foo"])
    assert not looks_like_human_ensembl(["A1BG", "TSPAN6", "ENSMUSG00000000001"])
    with pytest.raises(ValueError, match="not a shipped map"):
        load_builtin_id_map("mouse")


# ---------------------------------------------------------------------------------------------- real data


@pytest.mark.skipif(not PLATELETS.is_dir(), reason="shared/data/platelets_gse68086 not present")
def test_real_platelet_counts_give_sane_report():
    pytest.importorskip("scanpy")
    counts = pd.read_csv(PLATELETS / "counts.csv.gz", index_col=0)
    samples = pd.read_csv(PLATELETS / "samples.csv", index_col="sample")
    assert list(counts.columns) == list(samples.index)
    adata = ad.AnnData(X=counts.to_numpy().T, obs=samples[["group", "library_size"]])
    adata.var_names = counts.index
    out, report = preprocess_counts(adata, "group")
    assert 250 <= out.n_obs <= 285
    assert set(out.obs_names) == set(samples.index[samples["library_size"] >= math.exp(12.5)])
    assert out.n_vars == min(5000, report["genes_before"].iloc[-1])
    assert (report["samples_after"] <= report["samples_before"]).all()
    assert (report["genes_after"] <= report["genes_before"]).all()
    assert np.issubdtype(out.X.dtype, np.integer)
    assert out.obs["group"].value_counts().min() >= 2


# ----------------------------------------------------------------------------------------------
# counts table + sample sheet, and writing the output (mssvae preprocess)


def write_counts_and_sheet(tmp_path, n_samples=8, n_genes=6, sheet_rows=None, header=None):
    """GEO layout: a genes x samples counts CSV (columns S0..S7, or ``header``) and a sample sheet."""
    rng = np.random.default_rng(0)
    names = header if header is not None else [f"S{i}" for i in range(n_samples)]
    X = rng.integers(50, 500, size=(n_genes, len(names)))
    rows = [",".join(["gene_id", *names])] + [",".join([f"g{j}", *map(str, X[j])]) for j in range(n_genes)]
    (tmp_path / "counts.csv").write_text("\n".join(rows) + "\n")
    sheet = sheet_rows if sheet_rows is not None else pd.DataFrame(
        {"sample": names, "group": ["a", "b"] * (len(names) // 2)})
    sheet.to_csv(tmp_path / "samples.csv", index=False)
    return tmp_path / "counts.csv", tmp_path / "samples.csv"


def run_preprocess(tmp_path, *args, out="prep.h5ad"):
    from click.testing import CliRunner

    from mssvae.cli import main

    argv = ["preprocess", str(tmp_path / "counts.csv"), "--samples", str(tmp_path / "samples.csv"),
            "--study-key", "group", "--min-total-log", "0", "--min-gene-counts", "0", "--min-cpm", "0",
            "--n-top-genes", "1000", "--id-map", "none", *map(str, args), "-o", str(tmp_path / out)]
    return CliRunner().invoke(main, argv)


def assert_one_line_error(res, *fragments):
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and "Traceback" not in res.output, res.output
    for f in fragments:
        assert f in res.output, res.output


SHEET = pd.DataFrame({"sample": [f"S{i}" for i in range(8)], "group": ["a", "b"] * 4})


@pytest.mark.parametrize("sheet, repeated", [
    (pd.concat([SHEET, SHEET.iloc[[3]]], ignore_index=True), "S3"),  # a duplicated row
    (SHEET.assign(sample=["S0", "S1", "S2", "S3", "S4", "S5", "S6", "S5"]), "S5"),  # one id on two rows
])
def test_repeated_sample_ids_in_the_sheet_are_refused(tmp_path, sheet, repeated):
    from mssvae.io import read_counts_table

    write_counts_and_sheet(tmp_path, sheet_rows=sheet)
    with pytest.raises(ValueError, match=f"more than one row.*'{repeated}'"):
        read_counts_table(tmp_path / "counts.csv", tmp_path / "samples.csv")
    res = run_preprocess(tmp_path)
    assert_one_line_error(res, "more than one row", f"'{repeated}'")
    assert not (tmp_path / "prep.h5ad").exists()


def test_repeated_counts_column_names_are_refused(tmp_path):
    header = ["S0", "S1", "S2", "S1", "S4", "S5"]
    sheet = pd.DataFrame({"sample": ["S0", "S1", "S2", "S4", "S5"], "group": ["a", "b", "a", "b", "a"]})
    write_counts_and_sheet(tmp_path, header=header, sheet_rows=sheet)
    res = run_preprocess(tmp_path)
    assert_one_line_error(res, "appear more than once", "'S1'")
    assert not (tmp_path / "prep.h5ad").exists()


def test_explicit_sample_column_must_exist(tmp_path):
    from mssvae.io import read_counts_table

    write_counts_and_sheet(tmp_path)
    with pytest.raises(ValueError, match=r"'sampel' is not a column .*\['sample', 'group'\]"):
        read_counts_table(tmp_path / "counts.csv", tmp_path / "samples.csv", "sampel")
    res = run_preprocess(tmp_path, "--sample-column", "sampel")
    assert_one_line_error(res, "'sampel'", "'sample', 'group'")
    assert not (tmp_path / "prep.h5ad").exists()


def test_default_sample_column_absent_matches_by_position_with_a_warning(tmp_path):
    write_counts_and_sheet(tmp_path, sheet_rows=SHEET.rename(columns={"sample": "id"}))
    with pytest.warns(UserWarning, match="matched to the columns of .* by position"):
        res = run_preprocess(tmp_path)
    assert res.exit_code == 0, res.output
    a = ad.read_h5ad(tmp_path / "prep.h5ad")
    assert list(a.obs_names) == [f"S{i}" for i in range(8)]


def test_counts_columns_without_a_sheet_row_are_reported(tmp_path):
    write_counts_and_sheet(tmp_path, sheet_rows=SHEET.iloc[2:])  # S0 and S1 have no row
    with pytest.warns(UserWarning, match=r"2 of 8 sample column\(s\) .* no row .*\['S0', 'S1'\]"):
        res = run_preprocess(tmp_path)
    assert res.exit_code == 0, res.output
    report = pd.read_csv(tmp_path / "prep_report.csv")
    first = report.iloc[0]
    assert first["step"] == "in_sample_sheet" and "S0" in first["note"] and "S1" in first["note"]
    assert (first["samples_before"], first["samples_after"], first["removed_samples"]) == (8, 6, 2)
    assert report["samples_before"].iloc[1] == 6  # the steps chain
    a = ad.read_h5ad(tmp_path / "prep.h5ad")
    assert a.n_obs == 6 and a.uns["mssvae_preprocess"]["steps"]["step"][0] == "in_sample_sheet"


def test_remapping_genes_that_are_symbols_already_writes_cleanly(tmp_path):
    # No gene maps: var["symbol"] is all missing, which anndata could not write as a plain object column.
    adata = make_adata(np.ones((2, 3), dtype=np.int64), ["a", "b"], ["TP53", "EGFR", "MYC"])
    out = map_gene_ids(adata, {"ENSG00000141510": "TP53"})
    assert out.var["symbol"].isna().all()
    out.write_h5ad(tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    assert list(back.var_names) == ["TP53", "EGFR", "MYC"] and back.var["symbol"].isna().all()


def test_failed_write_leaves_no_partial_output(tmp_path, monkeypatch):
    write_counts_and_sheet(tmp_path)

    def broken_write(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial")
        raise TypeError("Can't implicitly convert non-string objects to strings")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", broken_write)
    res = run_preprocess(tmp_path)
    assert_one_line_error(res, "cannot write", "non-string")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.csv", "samples.csv"]
