"""The command line: fit / simulate / evaluate / demo through click's CliRunner (tiny, few-epoch fits)."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import assert_clean_error, run

from mssvae import MSSVAE

# Tiny networks and few epochs: every fit here takes a second or two.
FAST = ["--hidden", "8,8", "--epochs", "3", "--batch-size", "32", "--threads", "1", "--quiet"]


pytestmark = pytest.mark.usefixtures("one_thread")




def ok(result):
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result




def make_table(n=12, G=9, studies=("s1", "s2", "s3"), seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n * len(studies), G))
    df = pd.DataFrame(X, columns=[f"gene{j}" for j in range(G)])
    df.insert(0, "sample", [f"cell{i}" for i in range(len(df))])
    df["study"] = np.repeat(studies, n)
    return df


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "data.csv"
    make_table().to_csv(path, index=False)
    return path


# ---------------------------------------------------------------------------------------------- fit


def test_fit_csv_writes_every_output_with_the_right_shapes(csv_file, tmp_path):
    out = tmp_path / "out"
    res = ok(run("fit", csv_file, "--n-shared", 3, "--n-specific", 2, "--seed", 1, "-o", out, *FAST))
    G, N, studies = 9, 36, ["s1", "s2", "s3"]
    names = {"result.h5ad", "W_shared.csv", "factors.csv", "history.csv", "model", "masks.png", "training.png"}
    assert names | {f"W_{s}.csv" for s in studies} == {p.name for p in out.iterdir()}

    Ws = pd.read_csv(out / "W_shared.csv", index_col=0)
    assert Ws.shape == (G, 3) and list(Ws.index) == [f"gene{j}" for j in range(G)]
    assert list(Ws.columns) == ["shared_0", "shared_1", "shared_2"]
    for s in studies:
        Wm = pd.read_csv(out / f"W_{s}.csv", index_col=0)
        assert Wm.shape == (G, 2) and list(Wm.columns) == [f"{s}_0", f"{s}_1"]
    Z = pd.read_csv(out / "factors.csv", index_col=0)
    assert Z.shape == (N, 3 + 3 * 2) and Z.index[0] == "cell0" and Z.columns[0] == "shared_0"
    hist = pd.read_csv(out / "history.csv")
    assert len(hist) == 3 and {"loss", "lambda0", "active_shared"} <= set(hist.columns)

    model = MSSVAE.load(out / "model")
    assert np.allclose(model.W_shared_, Ws.to_numpy()) and model.studies_ == studies
    adata = ad.read_h5ad(out / "result.h5ad")
    assert adata.obsm["X_mssvae"].shape == (N, 9) and adata.varm["mssvae_W_s2"].shape == (G, 2)
    assert np.allclose(adata.obsm["X_mssvae"], Z.to_numpy())
    for png in ("masks.png", "training.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"

    assert "K_S (active shared factors):" in res.output and "of 3" in res.output
    assert "K_m s2:" in res.output and "on cpu" in res.output


def test_fit_h5ad_counts_layer_and_odd_study_labels(tmp_path):
    rng = np.random.default_rng(2)
    n, G = 30, 8
    counts = rng.poisson(20, size=(n, G)).astype(np.float32)
    adata = ad.AnnData(X=np.log1p(counts), obs=pd.DataFrame({"batch": np.repeat(["lab:A", "lab B"], n // 2)},
                                                               index=[f"c{i}" for i in range(n)]))
    adata.layers["counts"] = counts
    path = tmp_path / "in.h5ad"
    adata.write_h5ad(path)
    out = tmp_path / "out"
    ok(run("fit", path, "--study-key", "batch", "--likelihood", "nb", "--layer", "counts",
           "--n-shared", 2, "--n-specific", "lab:A=1,lab B=2", "-o", out, *FAST))
    assert pd.read_csv(out / "W_lab_A.csv", index_col=0).shape == (G, 1)
    assert pd.read_csv(out / "W_lab_B.csv", index_col=0).shape == (G, 2)
    assert pd.read_csv(out / "factors.csv", index_col=0).shape == (n, 2 + 1 + 2)
    params = MSSVAE.load(out / "model").get_params()
    assert params["likelihood"] == "nb" and params["hidden"] == (8, 8) and params["max_epochs"] == 3
    # options not given stay at the model's defaults (Table 2 is filled in by the model)
    assert params["lr"] is None and params["lr_W"] is None and params["prior_weight"] == "auto"
    # the NB default compares both starts (design.md item 26); the result records which was kept
    uns = ad.read_h5ad(out / "result.h5ad").uns["mssvae"]
    assert set(uns["start_scores"]) == {"ones", "varimax"} and uns["mask_init"] in uns["start_scores"]
    assert uns["select_epoch"] == 2   # compared after 35 % of the 3 epochs (item 27)


def test_a_diverged_fit_writes_its_last_finite_state_before_the_error(csv_file, tmp_path, monkeypatch):
    # the message says the last finite state is kept: on the command line that means on disk
    monkeypatch.setattr(MSSVAE, "_fault_injection", staticmethod(lambda epoch, step: epoch == 2), raising=False)
    out = tmp_path / "out"
    res = run("fit", csv_file, "--epochs", 5, "-o", out, "--quiet")
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "training failed: Training diverged in epoch 3 of 5" in res.output and f"written to {out}" in res.output
    saved = MSSVAE.load(out / "model")
    assert not saved.converged_ and len(saved.history_) == 2 and np.isfinite(saved.W_shared_).all()
    assert not ad.read_h5ad(out / "result.h5ad").uns["mssvae"]["converged"]


def test_a_fit_that_diverges_in_its_first_epoch_writes_nothing_and_fails_cleanly(csv_file, tmp_path, monkeypatch):
    monkeypatch.setattr(MSSVAE, "_fault_injection", staticmethod(lambda epoch, step: epoch == 0), raising=False)
    res = run("fit", csv_file, "--epochs", 5, "-o", tmp_path / "out", "--quiet")
    assert_clean_error(res, "training failed: Training diverged in epoch 1 of 5")
    assert "written to" not in res.output and not (tmp_path / "out").exists()


def test_file_names_keep_letters_of_any_script_and_stay_distinct():
    from mssvae.cli import _safe_names

    names = _safe_names(["Lüneburg", "東京", "B/C", "α-β", "a b", "a_b", "..", "shared"])
    assert list(names.values()) == ["Lüneburg", "東京", "B_C", "α-β", "a_b", "a_b_2", "study", "shared_2"]


def test_fit_passes_only_the_options_given(csv_file, tmp_path, monkeypatch):
    import mssvae.io

    seen = {}

    def fake_fit(adata, study_key, layer=None, model=None, **kw):
        # the command builds the model: what it was given is what differs from MSSVAE's defaults
        defaults = MSSVAE().get_params()
        seen.update({k: v for k, v in model.get_params().items() if k != "verbose" and v != defaults[k]},
                    verbose=model.verbose, study_key=study_key, layer=layer)
        raise ValueError("stop here")

    monkeypatch.setattr(mssvae.io, "fit_anndata", fake_fit)
    res = run("fit", csv_file, "--epochs", 2, "--quiet", "-o", tmp_path / "out")
    assert_clean_error(res, "stop here")
    assert seen == {"max_epochs": 2, "verbose": False, "study_key": "study", "layer": None}
    assert not (tmp_path / "out").exists()  # nothing created when the fit fails
    seen.clear()
    run("fit", csv_file, "--prior-weight", "Calibrated", "--prior-scale", "0.01", "--prior-per-feature",
        "-o", tmp_path / "out")
    assert seen["prior_weight"] == "calibrated" and seen["prior_scale"] == 0.01 and seen["prior_per_feature"] is True
    seen.clear()
    run("fit", csv_file, "--prior-weight", "4", "-o", tmp_path / "out")
    assert seen["prior_weight"] == 4.0
    seen.clear()
    run("fit", csv_file, "--merge-dependent", "off", "-o", tmp_path / "out")
    assert seen["merge_dependent"] is False
    seen.clear()
    run("fit", csv_file, "--merge-dependent", "0.7", "-o", tmp_path / "out")
    assert seen["merge_dependent"] == 0.7
    seen.clear()
    run("fit", csv_file, "--n-init", "3", "-o", tmp_path / "out")
    assert seen["n_init"] == 3
    seen.clear()
    run("fit", csv_file, "--lambda1", "1", "-o", tmp_path / "out")
    assert seen["lambda1"] == 1.0
    seen.clear()
    run("fit", csv_file, "--lambda1", "Empirical", "-o", tmp_path / "out")
    assert seen["lambda1"] == "empirical"
    seen.clear()
    run("fit", csv_file, "--lambda1", "0.1,1,0.1", "-o", tmp_path / "out")
    assert seen["lambda1"] == (0.1, 1.0, 0.1)
    seen.clear()
    run("fit", csv_file, "--select-after", "1", "-o", tmp_path / "out")
    assert seen["select_after"] == 1.0
    assert_clean_error(run("fit", csv_file, "--select-after", "0", "-o", tmp_path / "out"), "(0, 1]")


def _bad_inputs(tmp_path):
    df = make_table()
    df.drop(columns="study").to_csv(tmp_path / "nostudy.csv", index=False)
    nan = df.copy()
    nan.loc[4, "gene3"] = np.nan
    nan.to_csv(tmp_path / "nan.csv", index=False)
    one = df.copy()
    one["study"] = "s1"
    one.to_csv(tmp_path / "one.csv", index=False)
    text = df.copy()
    text["gene2"] = "x"
    text.to_csv(tmp_path / "text.csv", index=False)
    df.to_csv(tmp_path / "ok.csv", index=False)
    (tmp_path / "broken.h5ad").write_text("not an hdf5 file")


@pytest.mark.parametrize("args, fragment", [
    (["nostudy.csv"], "'study' is not a column"),
    (["ok.csv", "--study-key", "batch"], "'batch' is not a column"),
    (["nan.csv"], "NaN"),
    (["one.csv"], "at least 2 studies"),
    (["text.csv"], "non-numeric"),
    (["missing.csv"], "does not exist"),
    (["broken.h5ad"], "cannot read"),
    (["ok.csv", "--likelihood", "poisson"], "'poisson' is not one of"),
    (["ok.csv", "--likelihood", "nb"], "raw counts"),
    (["ok.csv", "--layer", "counts"], "'counts' is not in adata.layers"),
    (["ok.csv", "--n-specific", "s1=1"], "missing studies"),
    (["ok.csv", "--n-specific", "two"], "--n-specific"),
    (["ok.csv", "--hidden", "5"], "--hidden"),
    (["ok.csv", "--epochs", "0"], "--epochs"),
    (["ok.csv", "--device", "nonsense"], "--device"),
    (["ok.csv", "--prior-weight", "strong"], "--prior-weight"),
    (["ok.csv", "--prior-weight", "-1"], "--prior-weight"),
    (["ok.csv", "--merge-dependent", "2"], "--merge-dependent"),
    (["ok.csv", "--dispersion-init", "poisson"], "--dispersion-init"),
    (["ok.csv", "--lambda1", "0.1,1"], "--lambda1"),
    (["ok.csv", "--lambda1", "empirical"], "needs normalize_decoder=True"),   # the Gaussian default
])
def test_fit_bad_input_is_a_one_line_error(tmp_path, args, fragment):
    _bad_inputs(tmp_path)
    res = run("fit", tmp_path / args[0], "-o", tmp_path / "out", "--epochs", 1, "--quiet", *args[1:])
    assert_clean_error(res, fragment)
    assert not (tmp_path / "out").exists()


def test_fit_refuses_to_overwrite_results(csv_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.h5ad").write_text("old")
    assert_clean_error(run("fit", csv_file, "-o", out, *FAST), "--overwrite")
    ok(run("fit", csv_file, "-o", out, "--overwrite", "--n-shared", 2, "--n-specific", 1, *FAST))
    assert ad.read_h5ad(out / "result.h5ad").n_obs == 36


# ------------------------------------------------------------------------------ simulate / evaluate


def test_simulate_gaussian_writes_data_and_truth(tmp_path):
    path = tmp_path / "sim.h5ad"
    res = ok(run("simulate", "--kind", "gaussian", "--seed", 3, "--n-per-study", 10, "--n-features", 42,
                 "--output", path))
    assert "30 samples x 42 features" in res.output
    a = ad.read_h5ad(path)
    assert a.shape == (30, 42) and list(a.obs["study"].unique()) == ["study1", "study2", "study3"]
    assert a.varm["true_W_shared"].shape == (42, 8) and a.varm["true_W_study2"].shape == (42, 2)
    assert a.obsm["true_Z_shared"].shape == (30, 8)
    Z2 = a.obsm["true_Z_study2"]
    assert (Z2[a.obs["study"] != "study2"] == 0).all() and (Z2[a.obs["study"] == "study2"] != 0).all()
    assert a.uns["simulation"]["kind"] == "gaussian"


def test_simulate_rnaseq_writes_counts(tmp_path):
    path = tmp_path / "rna.h5ad"
    ok(run("simulate", "--kind", "rnaseq", "--n-samples", 40, "--n-features", 60, "--n-shared", 3,
           "--n-specific", 1, "--proportions", "0.5,0.5", "-o", path))
    a = ad.read_h5ad(path)
    assert a.shape == (40, 60) and np.issubdtype(a.X.dtype, np.integer)
    assert "library_size" in a.obs and a.varm["true_W_study2"].shape == (60, 1)


@pytest.mark.parametrize("args, fragment", [
    (["--kind", "rnaseq", "--n-per-study", "5"], "only for --kind gaussian"),
    (["--n-features", "10"], "too small"),
    (["--kind", "other"], "'other' is not one of"),
])
def test_simulate_bad_options(tmp_path, args, fragment):
    assert_clean_error(run("simulate", *args, "-o", tmp_path / "x.h5ad"), fragment)
    assert_clean_error(run("simulate", "-o", tmp_path / "x.csv"), ".h5ad")


def test_simulate_fit_evaluate_round_trip(tmp_path):
    sim = tmp_path / "sim.h5ad"
    ok(run("simulate", "--n-per-study", 15, "--n-features", 42, "-o", sim))
    out = tmp_path / "fit"
    ok(run("fit", sim, "--n-shared", 4, "--n-specific", 1, "-o", out, *FAST))
    scores = tmp_path / "scores.csv"
    res = ok(run("evaluate", out / "result.h5ad", "--truth", sim, "--output", scores))
    for label in ("shared consensus", "group recovery", "disentanglement (DCI)", "K_S estimated"):
        assert label in res.output
    assert "(true 8)" in res.output and "K_m estimated, study3" in res.output
    row = pd.read_csv(scores)
    assert len(row) == 1
    metrics = ["shared_consensus", "shared_relevance", "shared_recovery", "group_consensus", "group_relevance",
               "group_recovery", "dci"]
    assert ((row[metrics] >= 0) & (row[metrics] <= 1)).all(axis=None)
    assert 0 <= row.loc[0, "n_shared_est"] <= 4 and "n_specific_est_study1" in row

    # the result of fitting the simulated file carries the truth: --truth may be left out
    res2 = ok(run("evaluate", out, "--no-dci"))
    assert "n/a" in res2.output


def test_evaluate_refuses_a_truth_from_another_simulation(tmp_path):
    sims = {seed: tmp_path / f"sim{seed}.h5ad" for seed in (0, 1)}
    for seed, path in sims.items():
        ok(run("simulate", "--n-per-study", 10, "--n-features", 42, "--seed", seed, "-o", path))
    ok(run("fit", sims[0], "--n-shared", 4, "--n-specific", 1, "-o", tmp_path / "fit", *FAST))
    res = run("evaluate", tmp_path / "fit", "--truth", sims[1], "--no-dci")
    assert_clean_error(res, "--truth", "another simulation", "random_state 1 vs 0")
    ok(run("evaluate", tmp_path / "fit", "--truth", sims[0], "--no-dci"))

    # same settings recorded (or none in the truth file) but other truth matrices: refused as well
    other = ad.read_h5ad(sims[1])
    del other.uns["simulation"]
    other.write_h5ad(tmp_path / "bare1.h5ad")
    assert_clean_error(run("evaluate", tmp_path / "fit", "--truth", tmp_path / "bare1.h5ad", "--no-dci"),
                       "another ground truth", "true_W_shared")

    # a result that records no simulation is scored against any truth, as before
    data = ad.read_h5ad(sims[0])
    del data.uns["simulation"]
    for k in list(data.varm):
        del data.varm[k]
    data.write_h5ad(tmp_path / "plain.h5ad")
    ok(run("fit", tmp_path / "plain.h5ad", "--n-shared", 4, "--n-specific", 1, "-o", tmp_path / "fit2", *FAST))
    assert "shared consensus" in ok(run("evaluate", tmp_path / "fit2", "--truth", sims[1], "--no-dci")).output


def test_evaluate_errors(tmp_path, csv_file):
    sim = tmp_path / "sim.h5ad"
    ok(run("simulate", "--n-per-study", 5, "--n-features", 42, "-o", sim))
    assert_clean_error(run("evaluate", sim, "--truth", sim), "holds no fit")
    assert_clean_error(run("evaluate", tmp_path / "nothing.h5ad", "--truth", sim), "does not exist")
    assert_clean_error(run("evaluate", csv_file, "--truth", sim), "cannot read")


# ---------------------------------------------------------------------------------------------- demo


def test_demo_runs_end_to_end_on_tiny_data(tmp_path):
    out = tmp_path / "demo"
    res = ok(run("demo", "--epochs", 3, "--seed", 1, "--output-dir", out, "--n-per-study", 10,
                 "--n-features", 42, "--threads", 1, "--quiet"))
    for name in ("masks_true_vs_estimated.png", "training.png", "metrics.csv", "W_shared.csv", "W_study1.csv",
                 "W_study3.csv", "history.csv", "model"):
        assert (out / name).exists(), name
    assert "shared consensus" in res.output and "(true 8)" in res.output
    # Table 2 settings: K_S = 30, K_m = 5 initial columns
    assert pd.read_csv(out / "W_shared.csv", index_col=0).shape == (42, 30)
    assert pd.read_csv(out / "W_study2.csv", index_col=0).shape == (42, 5)
    m = pd.read_csv(out / "metrics.csv")
    assert len(m) == 1 and {"shared_consensus", "group_recovery", "dci", "n_shared_est"} <= set(m.columns)
    params = MSSVAE.load(out / "model").get_params()
    assert params["likelihood"] == "gaussian" and params["random_state"] == 1 and params["max_epochs"] == 3
    assert params["hidden"] is None and params["lr"] is None  # Table 2 defaults of the model


def test_help_and_version():
    res = ok(run("--help"))
    for cmd in ("fit", "simulate", "evaluate", "demo"):
        assert cmd in res.output
    assert "--n-per-study" not in ok(run("demo", "--help")).output  # test-only options stay hidden
    assert "0.1.0" in ok(run("--version")).output


def _counts_table(tmp_path, n_genes=60, n_per_group=8):
    """GEO layout: genes x samples counts with a gene_id column, and a sample sheet."""
    rng = np.random.default_rng(0)
    samples = [f"S{i}" for i in range(2 * n_per_group)]
    X = rng.negative_binomial(5, 5 / (5 + rng.uniform(20, 400, size=n_genes)), size=(len(samples), n_genes))
    X[0] //= 100  # one shallow sample for the depth filter
    counts = pd.DataFrame(X.T, index=[f"ENSG{j:011d}.1" for j in range(n_genes)], columns=samples)
    counts.index.name = "gene_id"
    counts.to_csv(tmp_path / "counts.csv.gz")
    sheet = pd.DataFrame({"sample": samples[::-1], "group": ["a", "b"] * n_per_group})
    sheet.to_csv(tmp_path / "samples.csv", index=False)
    return counts, sheet


def test_preprocess_counts_table_with_sample_sheet(tmp_path):
    pytest.importorskip("scanpy")
    counts, sheet = _counts_table(tmp_path)
    out = tmp_path / "prep.h5ad"
    res = run("preprocess", tmp_path / "counts.csv.gz", "--samples", tmp_path / "samples.csv", "--study-key",
              "group", "--min-total-log", 8, "--n-top-genes", 20, "--id-map", "none", "-o", out)
    assert res.exit_code == 0, res.output
    a = ad.read_h5ad(out)
    assert a.n_vars == 20 and "S0" not in a.obs_names and a.n_obs == len(sheet) - 1
    # the sheet's rows were matched to the counts columns by name, not by order
    assert (a.obs.loc["S3", "group"] == sheet.set_index("sample").loc["S3", "group"])
    assert np.array_equal(a[["S5"]].X.ravel(), counts.loc[a.var_names, "S5"].to_numpy())
    report = pd.read_csv(tmp_path / "prep_report.csv")
    assert report["removed_samples"].sum() == 1 and report["genes_after"].iloc[-1] == 20


def test_preprocess_maps_ensembl_ids_with_the_shipped_map_by_default(tmp_path):
    pytest.importorskip("scanpy")
    _counts_table(tmp_path)
    out = tmp_path / "prep.h5ad"
    ok(run("preprocess", tmp_path / "counts.csv.gz", "--samples", tmp_path / "samples.csv", "--study-key",
           "group", "--min-total-log", 8, "--n-top-genes", 60, "--min-cpm", 0, "--min-gene-counts", 0, "-o", out))
    a = ad.read_h5ad(out)
    # ENSG00000000003 and ENSG00000000005 are real ids (TSPAN6, TNMD); the other made-up ids stay as they are
    assert {"TSPAN6", "TNMD"} <= set(a.var_names) and "ENSG00000000001" in set(a.var_names)
    assert a.var.loc["TSPAN6", "gene_id"].startswith("ENSG00000000003")


@pytest.mark.parametrize("extra, fragment", [
    ([], "needs --samples"),
    (["--samples", "bad_samples.csv"], "are not columns of"),
    (["--samples", "samples.csv", "--study-key", "disease"], "disease"),
])
def test_preprocess_bad_input_is_a_one_line_error(tmp_path, extra, fragment):
    _counts_table(tmp_path)
    pd.DataFrame({"sample": ["nope", "S1"], "group": ["a", "b"]}).to_csv(tmp_path / "bad_samples.csv", index=False)
    extra = [str(tmp_path / e) if e.endswith(".csv") else e for e in extra]
    res = run("preprocess", tmp_path / "counts.csv.gz", *extra, "-o", tmp_path / "prep.h5ad")
    assert_clean_error(res, fragment)
    assert not (tmp_path / "prep.h5ad").exists()


def test_preprocess_refuses_an_output_that_is_not_h5ad_and_a_sheet_beside_an_h5ad(tmp_path):
    _counts_table(tmp_path)
    res = run("preprocess", tmp_path / "counts.csv.gz", "--samples", tmp_path / "samples.csv", "--study-key",
              "group", "-o", tmp_path / "prep.csv")
    assert_clean_error(res, "must end in .h5ad")
    assert not (tmp_path / "prep.csv").exists()
    ad.AnnData(np.ones((4, 3), dtype=np.float32)).write_h5ad(tmp_path / "in.h5ad")
    res = run("preprocess", tmp_path / "in.h5ad", "--samples", tmp_path / "samples.csv", "-o", tmp_path / "p.h5ad")
    assert_clean_error(res, "--samples is for a")


def test_enrich_finds_the_planted_modules_and_not_unrelated_terms(fitted_blocks, tmp_path):
    # The toy fit has shared modules on features 0-9 and 10-19 and study modules on 20-29 / 30-39.
    model = fitted_blocks
    model.save(tmp_path / "model")
    names = list(model.feature_names_in_)
    (tmp_path / "terms.gmt").write_text(
        "PLANTED_SHARED_A\tx\t" + "\t".join(names[0:10]) + "\n"
        "PLANTED_S0\tx\t" + "\t".join(names[20:30]) + "\n"
        "UNRELATED\tx\t" + "\t".join(names[5:40:4]) + "\n"
    )
    res = run("enrich", tmp_path / "model", "--gmt", tmp_path / "terms.gmt", "--min-term-size", 5,
              "-o", tmp_path / "enr")
    assert res.exit_code == 0, res.output
    enr = pd.read_csv(tmp_path / "enr" / "enrichment.csv")
    significant = set(enr.loc[enr["significant"], "term"])
    assert {"PLANTED_SHARED_A", "PLANTED_S0"} <= significant
    assert "UNRELATED" not in significant
    sets = pd.read_csv(tmp_path / "enr" / "gene_sets.csv")
    assert {"block", "factor", "gene", "weight", "inclusion"} <= set(sets.columns)
    assert (tmp_path / "enr" / "gene_sets.gmt").read_text().count("\n") == sets["factor"].nunique()


def test_a_warning_on_the_command_line_is_one_line_without_the_packages_source(fitted_blocks, tmp_path):
    # In a real process (pytest records warnings instead of printing them, so CliRunner would not show one).
    import subprocess
    import sys

    fitted_blocks.save(tmp_path / "model")
    names = list(fitted_blocks.feature_names_in_)
    (tmp_path / "terms.gmt").write_text("T\tx\t" + "\t".join(names[0:10] + ["NOT_A_FEATURE"]) + "\n")
    command = [sys.executable, "-c", "from mssvae.cli import main; main()", "enrich", str(tmp_path / "model"),
               "--gmt", str(tmp_path / "terms.gmt"), "--min-term-size", "5", "-o", str(tmp_path / "enr")]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Warning: 1 distinct gene(s) of `collection` are not in `background`" in proc.stderr
    assert ".py:" not in proc.stderr and "en.enrich(" not in proc.stderr


def test_enrich_with_foreign_gene_ids_is_a_one_line_error(fitted_blocks, tmp_path):
    fitted_blocks.save(tmp_path / "model")
    (tmp_path / "terms.gmt").write_text("T\tx\t" + "\t".join(f"ENSG{i}" for i in range(20)) + "\n")
    res = run("enrich", tmp_path / "model", "--gmt", tmp_path / "terms.gmt", "-o", tmp_path / "enr")
    assert_clean_error(res, "identifiers probably differ")


def test_enrich_defaults_to_the_shipped_go_bp_collection(fitted_blocks, tmp_path):
    # The toy's features are not gene symbols, so the shipped GO BP collection cannot match them.
    fitted_blocks.save(tmp_path / "model")
    res = run("enrich", tmp_path / "model", "-o", tmp_path / "enr")
    assert_clean_error(res, "identifiers probably differ")


def test_enrich_id_map_renames_ensembl_ids_to_symbols(tmp_path):
    from mssvae.enrichment import map_feature_names

    # Real ids of the shipped map (two of GATA4's), one with a version, and one id it lacks.
    ids = ["ENSG00000179348.11", "ENSG00000107485", "ENSG00000136574", "ENSG00000285109", "ENSG00000141448",
           "ENSG00000171766", "ENSG00000177628", "ENSG00000114480", "ENSG00000117228", "ENSG99999999999"]
    symbols = ["GATA2", "GATA3", "GATA4", "GATA4|ENSG00000285109", "GATA6", "GATM", "GBA1", "GBE1", "GBP1",
               "ENSG99999999999"]
    assert map_feature_names(ids, "hs") == symbols
    assert map_feature_names(ids, "none") == ids

    df = make_table(G=len(ids), studies=("s1", "s2"))
    df.columns = ["sample", *ids, "study"]
    df.to_csv(tmp_path / "ens.csv", index=False)
    # unpruned masks: a 3-epoch fit of noise would otherwise have no gene set to test
    ok(run("fit", tmp_path / "ens.csv", "--n-shared", 2, "--n-specific", 1, "--no-prune-masks", "-o", tmp_path / "fit",
           *FAST))
    (tmp_path / "terms.gmt").write_text("GATA_TERM\tx\tGATA2\tGATA3\tGATA4\tGATA6\tNOT_HERE\n")
    args = ("enrich", tmp_path / "fit" / "model", "--gmt", tmp_path / "terms.gmt", "--min-term-size", 1,
            "--threshold", 1e-12)

    # no mapping by default, and the refusal says how to map
    assert_clean_error(run(*args, "-o", tmp_path / "enr0"), "identifiers probably differ", "--id-map hs")
    res = ok(run(*args, "--id-map", "hs", "-o", tmp_path / "enr"))
    assert "--id-map hs: 9 of 10 genes renamed to symbols" in res.output
    enr = pd.read_csv(tmp_path / "enr" / "enrichment.csv")
    assert set(enr["term"]) == {"GATA_TERM"} and (enr["term_size"] == 4).all()
    assert (enr["background_size"] == len(ids)).all()  # the unmapped id stays in the background
    genes = set(pd.read_csv(tmp_path / "enr" / "gene_sets.csv")["gene"])
    assert genes <= set(symbols) and "GATA2" in genes
    assert_clean_error(run(*args, "--id-map", tmp_path / "missing.tsv", "-o", tmp_path / "enr2"),
                       "id map file", "does not exist")


def test_fit_checkpoint_dir_resumes_and_refuses_other_settings(csv_file, tmp_path, caplog):
    ck = tmp_path / "ck"
    first = ok(run("fit", csv_file, *FAST, "-o", tmp_path / "a", "--checkpoint-dir", ck, "--checkpoint-every", 2))
    assert (ck / "checkpoint.safetensors").is_file() and "resuming" not in caplog.text
    ok(run("fit", csv_file, *FAST, "-o", tmp_path / "b", "--checkpoint-dir", ck))
    assert "resuming from checkpoint" in caplog.text and "after epoch 3 of 3" in caplog.text
    a, b = (pd.read_csv(tmp_path / d / "W_shared.csv", index_col=0) for d in ("a", "b"))
    pd.testing.assert_frame_equal(a, b)
    assert "fit:" in first.output
    other = run("fit", csv_file, *[f if f != "3" else "4" for f in FAST], "-o", tmp_path / "c", "--checkpoint-dir", ck)
    assert_clean_error(other, "another fit", "max_epochs 3 (checkpoint) vs 4 (now)")
