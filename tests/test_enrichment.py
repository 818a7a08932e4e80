"""Gene-set over-representation of factor gene sets (mssvae.enrichment) on tiny hand-made inputs."""

import gzip
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control, fisher_exact

from mssvae.enrichment import (
    enrich,
    enrichment_summary,
    factor_gene_sets,
    gene_sets_from_model,
    gene_sets_from_table,
    read_gmt,
    top_terms,
    write_gmt,
)

BG = [f"g{i}" for i in range(1000)]


def planted():
    """Gene set with 30 of the 40 genes of term A (+30 others) and 20 random 40-gene terms, background 1000."""
    rng = np.random.default_rng(0)
    others = rng.choice(BG[40:], 30, replace=False).tolist()
    sets = {"shared_0": BG[:30] + others, "s1_0": rng.choice(BG, 50, replace=False).tolist()}
    collection = {"A": BG[:40]}
    collection.update({f"R{i}": rng.choice(BG, 40, replace=False).tolist() for i in range(20)})
    return sets, collection


def result_table(rows):
    """Minimal enrich()-like table from (gene_set, term, fold, significant) tuples."""
    df = pd.DataFrame(rows, columns=["gene_set", "term", "fold_enrichment", "significant"])
    return df.assign(p_adj=0.01, overlap=5, set_size=50)


# ---------------------------------------------------------------------------- GMT files


def test_read_gmt_plain(tmp_path):
    path = tmp_path / "sets.gmt"
    path.write_text("T1\tdesc one\tA\tB\tC\nT2\thttp://x\tD\tE\n")
    assert read_gmt(path) == {"T1": ["A", "B", "C"], "T2": ["D", "E"]}


def test_read_gmt_gzip_by_suffix(tmp_path):
    path = tmp_path / "sets.gmt.gz"
    with gzip.open(path, "wt") as fh:
        fh.write("T1\tna\tA\tB\n")
    assert read_gmt(path) == {"T1": ["A", "B"]}


def test_read_gmt_gzip_detected_by_magic_bytes(tmp_path):
    path = tmp_path / "sets.gmt"  # no .gz suffix
    path.write_bytes(gzip.compress(b"T1\tna\tA\tB\n"))
    assert read_gmt(path) == {"T1": ["A", "B"]}


def test_read_gmt_enrichr_layout(tmp_path):
    # empty description, GENE,1.0 weights, a repeated gene, trailing tabs, CRLF and a blank line
    path = tmp_path / "enrichr.txt"
    path.write_bytes(b"TERM1\t\tA,1.0\tB,1.0\tA,1.0\t\t\r\n\r\nTERM2\t\tC,0.5\tD\t\r\n")
    assert read_gmt(path) == {"TERM1": ["A", "B"], "TERM2": ["C", "D"]}


def test_read_gmt_go_layout_names_each_term_by_its_description(tmp_path):
    # Bioconductor's GO export: the identifier first, the term's name as the description.
    path = tmp_path / "go.gmt"
    path.write_text("GO:0000002\tmitochondrial genome maintenance\tA\tB\nGO:0000003\tna\tC\n"
                    "HP:0001\thttps://hpo.jax.org\tD\nT1\tdesc one\tE\n")
    assert read_gmt(path) == {"mitochondrial genome maintenance (GO:0000002)": ["A", "B"], "GO:0000003": ["C"],
                              "HP:0001": ["D"], "T1": ["E"]}


def test_read_gmt_duplicated_term_keeps_first_with_warning(tmp_path):
    path = tmp_path / "dup.gmt"
    path.write_text("T1\tna\tA\nT1\tna\tB\n")
    with pytest.warns(UserWarning, match="duplicated term"):
        assert read_gmt(path) == {"T1": ["A"]}


def test_read_gmt_without_valid_line_names_path(tmp_path):
    path = tmp_path / "empty.gmt"
    path.write_text("\n\nonly_a_name\n")
    with pytest.raises(ValueError, match="empty.gmt"):
        read_gmt(path)


def test_read_gmt_size_filter(tmp_path):
    path = tmp_path / "sizes.gmt"
    path.write_text("S1\tna\tA\nS3\tna\tA\tB\tC\nS5\tna\tA\tB\tC\tD\tE\n")
    assert list(read_gmt(path, min_size=2, max_size=4)) == ["S3"]


@pytest.mark.parametrize("name", ["out.gmt", "out.gmt.gz"])
def test_write_read_round_trip(tmp_path, name):
    sets = {"T1": ["A", "B", "C"], "T2": ["D"]}
    write_gmt(sets, tmp_path / name, descriptions={"T1": "first"})
    assert read_gmt(tmp_path / name) == sets


def test_write_gmt_rejects_tab_in_gene(tmp_path):
    with pytest.raises(ValueError, match="gene_sets"):
        write_gmt({"T1": ["A\tB"]}, tmp_path / "bad.gmt")


# ---------------------------------------------------------------------------- enrich


def test_planted_term_is_significant_and_random_terms_are_not():
    sets, collection = planted()
    res = enrich(sets, collection, BG, min_term_size=10)
    sig = res[res["significant"]]
    assert list(zip(sig["gene_set"], sig["term"])) == [("shared_0", "A")]


def test_p_values_equal_one_sided_fisher_exact():
    sets, collection = planted()
    res = enrich(sets, collection, BG)
    for row in res.iloc[[0, 1, 5, 21, 30]].itertuples():
        table = [[row.overlap, row.set_size - row.overlap],
                 [row.term_size - row.overlap, row.background_size - row.set_size - row.term_size + row.overlap]]
        assert row.p_value == pytest.approx(fisher_exact(table, alternative="greater").pvalue, rel=1e-9, abs=1e-300)


def test_by_adjustment_per_gene_set_equals_false_discovery_control():
    sets, collection = planted()
    res = enrich(sets, collection, BG)
    for _, group in res.groupby("gene_set"):
        expected = false_discovery_control(group["p_value"].to_numpy(), method="by")
        np.testing.assert_allclose(group["p_adj"].to_numpy(), expected, rtol=1e-12)


def test_columns_and_expected_fold():
    sets, collection = planted()
    res = enrich(sets, collection, BG)
    row = res[(res["gene_set"] == "shared_0") & (res["term"] == "A")].iloc[0]
    assert (row.term_size, row.overlap, row.set_size, row.background_size) == (40, 30, 60, 1000)
    assert row.expected == pytest.approx(60 * 40 / 1000)
    assert row.fold_enrichment == pytest.approx(30 / 2.4)
    assert row.overlap_genes.split(";") == BG[:30]


def test_term_size_filter_applies_after_restriction_to_background():
    bg = [f"g{i}" for i in range(100)]
    collection = {"small": bg[:5], "lo": bg[:10], "hi": bg[:20], "big": bg[:21],
                  "shrinks": bg[:8] + ["x1", "x2", "x3"]}  # 11 genes, 8 in the background
    with pytest.warns(UserWarning, match="not in `background`"):
        res = enrich({"shared_0": bg[:15]}, collection, bg, min_term_size=10, max_term_size=20)
    assert sorted(res["term"]) == ["hi", "lo"]


def test_no_collection_gene_in_background_raises():
    with pytest.raises(ValueError, match="identifiers"):
        enrich({"shared_0": ["g1"]}, {"T": ["ENSG0001", "ENSG0002"]}, BG)


def test_gene_set_genes_outside_background_are_dropped_with_warning():
    with pytest.warns(UserWarning, match="gene_sets"):
        res = enrich({"shared_0": BG[:10] + ["unknown"]}, {"A": BG[:20]}, BG, min_term_size=1)
    assert res["set_size"].tolist() == [10]


def test_empty_gene_set_gives_no_rows():
    res = enrich({"shared_0": [], "shared_1": BG[:10]}, {"A": BG[:20]}, BG, min_term_size=1)
    assert res["gene_set"].unique().tolist() == ["shared_1"]


def test_only_significant_returns_the_significant_rows():
    sets, collection = planted()
    full = enrich(sets, collection, BG)
    sig = enrich(sets, collection, BG, only_significant=True)
    pd.testing.assert_frame_equal(sig, full[full["significant"]].reset_index(drop=True))


def test_bad_fdr_names_argument():
    with pytest.raises(ValueError, match="fdr"):
        enrich({"a": BG[:5]}, {"A": BG[:20]}, BG, fdr=0)


# ---------------------------------------------------------------------------- factor gene sets


def test_factor_gene_sets_thresholds_abs_weight_and_sorts():
    genes = ["a", "b", "c", "d"]
    W = {"shared": np.array([[0.6, 0.0], [-2.0, 0.1], [0.5, 0.0], [0.0, 0.9]]),  # 0.5 is not > 0.5
         "s1": np.array([[0.0], [0.0], [1.0], [0.0]])}
    table = factor_gene_sets(W, genes)
    assert list(table.columns) == ["block", "factor", "gene", "weight", "abs_weight", "inclusion"]
    assert table[["block", "factor", "gene"]].values.tolist() == [
        ["shared", "shared_0", "b"], ["shared", "shared_0", "a"], ["shared", "shared_1", "d"], ["s1", "s1_0", "c"]]
    assert table["weight"].tolist() == [-2.0, 0.6, 0.9, 1.0]
    assert table["inclusion"].isna().all()


def test_factor_gene_sets_reads_inclusion_and_threshold():
    W = {"shared": np.array([[0.6], [2.0], [0.2]])}
    P = {"shared": np.array([[0.7], [0.99], [0.1]])}
    table = factor_gene_sets(W, ["a", "b", "c"], inclusion=P, threshold=1.0)
    assert table[["gene", "inclusion"]].values.tolist() == [["b", 0.99]]


def test_factor_gene_sets_wrong_feature_names_length():
    with pytest.raises(ValueError, match="feature_names"):
        factor_gene_sets({"shared": np.ones((3, 1))}, ["a", "b"])


def test_gene_sets_from_table_keyed_by_factor():
    table = factor_gene_sets({"shared": np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 0.0]])}, ["a", "b", "c"])
    assert gene_sets_from_table(table) == {"shared_0": ["b", "a"]}


def test_gene_sets_from_model_uses_factor_names():
    model = SimpleNamespace(
        W_shared_=np.array([[1.0], [0.0]]), W_specific_={"s1": np.array([[0.0], [-1.0]])},
        inclusion_shared_=np.ones((2, 1)), inclusion_specific_={"s1": np.ones((2, 1))},
        feature_names_in_=np.array(["a", "b"]), factor_names_=["shared_0", "s1_0"])
    assert gene_sets_from_model(model) == {"shared_0": ["a"], "s1_0": ["b"]}


def test_gene_sets_from_unfitted_model_raises():
    with pytest.raises(ValueError, match="not fitted"):
        gene_sets_from_model(SimpleNamespace())


# ---------------------------------------------------------------------------- summaries


def test_enrichment_summary_counts_per_block():
    sets = {"shared_0": ["a"], "shared_1": ["b"], "s1_0": ["c"], "s2_0": ["d"]}
    res = pd.DataFrame({"gene_set": ["shared_0", "shared_1", "s1_0", "s2_0"],
                        "term": "T", "significant": [True, False, True, False]})
    summary = enrichment_summary(res, sets).set_index("block")
    assert summary.loc[["shared", "s1", "s2", "specific"], "n_enriched"].tolist() == [1, 1, 0, 1]
    assert summary.loc["specific", "share_enriched"] == pytest.approx(0.5)


def test_enrichment_summary_missing_block_raises():
    res = pd.DataFrame({"gene_set": ["x"], "significant": [True]})
    with pytest.raises(ValueError, match="block_of"):
        enrichment_summary(res, {"x": ["a"], "y": ["b"]}, block_of={"x": "shared"})


def test_top_terms_removes_ubiquitous_terms():
    # "ubiq" is significant in 5 of 10 gene sets (50 % > 10 %), "rare" in one
    rows = [(f"f{i}", "ubiq", 10.0, i < 5) for i in range(10)] + [("f0", "rare", 2.0, True)]
    top = top_terms(result_table(rows), n=5, max_term_share=0.10)
    assert top["term"].tolist() == ["rare"]


def test_top_terms_keeps_n_best_by_fold():
    rows = [("f0", f"T{i}", float(i), True) for i in range(4)] + [("f1", "T9", 1.0, False)]
    top = top_terms(result_table(rows), n=2, max_term_share=None)
    assert top[["term", "rank"]].values.tolist() == [["T3", 1], ["T2", 2]]


def test_builtin_go_bp_collection_is_shipped_intact_and_offline():
    import hashlib
    import json
    from importlib.resources import files

    from mssvae.enrichment import load_builtin

    data = files("mssvae") / "data"
    meta = json.loads((data / "go_bp_2023.json").read_text())
    assert hashlib.sha256((data / "go_bp_2023.gmt.gz").read_bytes()).hexdigest() == meta["output_sha256"]
    go = load_builtin("go_bp")
    assert len(go) == meta["terms_kept"] == 3623
    assert all(10 <= len(v) <= 500 for v in go.values())
    assert "ITGB3" in go["Platelet Aggregation (GO:0070527)"]
    with pytest.raises(ValueError, match="available"):
        load_builtin("kegg")
