"""The estimator: recovery on known blocks, determinism, persistence, divergence handling."""

import copy
import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from mssvae import MSSVAE, TrainingDivergedError
from mssvae.metrics import jaccard_matrix, support
from mssvae.training import evaluate_bound


def test_fit_recovers_which_features_go_with_which_block(fitted_blocks, blocks):
    _, _, Ws, Wm = blocks
    model = fitted_blocks
    # every true shared column is matched by an estimated shared column with the same features
    J = jaccard_matrix(support(Ws), support(model.W_shared_))
    assert J.max(1).min() >= 0.9, J.max(1)
    for lab in ("s0", "s1"):
        Jm = jaccard_matrix(support(Wm[lab]), support(model.W_specific_[lab]))
        assert Jm.max() >= 0.9, (lab, Jm)


def test_a_quarter_of_the_features_per_step_recovers_the_same_blocks(blocks):
    # Feature subsampling (issue 9): each step sees 10 of the 40 features, scaled ×4.
    X, study, Ws, Wm = blocks
    model = MSSVAE(n_shared=5, n_specific=2, max_epochs=150, batch_size=256, random_state=1, lr=0.01,
                   feature_subsample=0.25).fit(X, study)
    assert jaccard_matrix(support(Ws), support(model.W_shared_)).max(1).min() >= 0.9
    for lab in ("s0", "s1"):
        assert jaccard_matrix(support(Wm[lab]), support(model.W_specific_[lab])).max() >= 0.9
    assert model.n_shared_active_ == 2 and model.n_specific_active_ == {"s0": 1, "s1": 1}


def test_a_learning_rate_decay_lets_the_spike_entries_settle_under_subsampling(blocks):
    """With a quarter of the features per step, Adam keeps the entries the spike holds at 0 jittering
    (median |w| 0.013-0.015 on these data, 0.002 at full cost, 3 seeds each); lr_decay="auto" (the
    last 20 % of the epochs at falling rates) brings them back to the full-cost level."""
    X, study, _, _ = blocks
    small = {}
    for decay in (0.0, "auto"):
        model = MSSVAE(n_shared=5, n_specific=2, max_epochs=150, batch_size=256, random_state=1, lr=0.01,
                       feature_subsample=0.25, lr_decay=decay).fit(X, study)
        W = np.abs(model.module_.W.detach().numpy())
        small[decay] = np.median(W[W < 0.5])
    assert small[0.0] > 0.008 and small["auto"] < 0.004, small
    assert model.history_["lr_factor"].iloc[:120].eq(1.0).all()          # 150 epochs: the last 30 decay
    np.testing.assert_allclose(model.history_["lr_factor"].iloc[120:], np.arange(30, 0, -1) / 31)


def test_unneeded_factors_are_switched_off(fitted_blocks):
    model = fitted_blocks
    assert model.n_shared_active_ == 2  # 5 columns offered, 2 true
    assert model.n_specific_active_ == {"s0": 1, "s1": 1}  # 2 offered per study, 1 true
    assert model.history_["active_shared"].iloc[0] == 5  # it started dense (W = 1)


def test_fitted_attributes_have_documented_shapes(fitted_blocks):
    m = fitted_blocks
    assert m.W_shared_.shape == (40, 5) and m.inclusion_shared_.shape == (40, 5)
    assert set(m.W_specific_) == {"s0", "s1"} and m.W_specific_["s0"].shape == (40, 2)
    assert ((m.inclusion_shared_ >= 0) & (m.inclusion_shared_ <= 1)).all()
    assert len(m.factor_names_) == 5 + 2 + 2 and m.device_ == "cpu"
    assert {"loss", "log_lik", "kl_shared", "kl_specific", "log_prior_masks"} <= set(m.history_.columns)
    assert len(m.history_) == 150 and m.converged_ and m.prior_weight_ == 1000 / 300


def test_transform_puts_each_sample_in_its_own_block(fitted_blocks, blocks):
    X, study, _, _ = blocks
    Z = fitted_blocks.transform(X, study)
    assert Z.shape == (1000, 9)
    assert (Z[study == "s0"][:, 7:] == 0).all() and (Z[study == "s1"][:, 5:7] == 0).all()
    assert (np.abs(Z[study == "s0"][:, 5:7]).sum(0) > 0).all()


def test_score_is_eq24_per_sample_with_the_paper_weights_and_repeats_exactly(fitted_blocks, blocks):
    import torch

    X, study, _, _ = blocks
    m = fitted_blocks
    state = torch.get_rng_state()
    first = m.score(X, study, n_draws=2)
    assert torch.equal(torch.get_rng_state(), state)          # no random state is consumed
    assert m.score(X, study, n_draws=2) == first                # so it repeats exactly
    assert m.score(X, study, n_draws=2, batch_size=97) == pytest.approx(first, abs=0.05 * abs(first))
    # one draw over the whole data in one batch: −loss of the module with prior and KL at weight 1
    torch.manual_seed(m.random_state)
    Xt, st = m._prepare(X, study)
    m.module_.eval()
    with torch.no_grad():
        p = m._score_settings()
        terms, _ = m.module_.loss(Xt, st, torch.ones(len(X)), len(X), p["lambda0"], p["lambda1"], p["a"], p["b"],
                                  1.0, p["noise_prior"], p["library_prior"])
    assert m.score(X, study, n_draws=1, batch_size=len(X)) == pytest.approx(-float(terms.loss), rel=1e-5)
    assert m.lambda0[-1] == p["lambda0"] and p["b"] == X.shape[1]   # λ0 at its final value; b = G (Table 2)
    # its terms (what benchmarks/probes/score_fits.py --terms prints) add up to it
    parts = evaluate_bound(m.module_, Xt, st, p, 2, 1024, m.random_state, m._feature_chunk(len(X)))
    assert parts["bound"] == first
    assert parts["log_lik"] - parts["kl_shared"] - parts["kl_specific"] - parts["kl_library"] \
        + parts["log_prior_masks"] + parts["log_prior_noise"] == pytest.approx(first, rel=1e-6)
    with pytest.raises(ValueError, match="`n_draws` must be a positive integer"):
        m.score(X, study, n_draws=0)


def test_same_seed_same_result_and_other_seed_differs(blocks):
    X, study, _, _ = blocks
    kw = dict(n_shared=3, n_specific=1, max_epochs=3, batch_size=64)
    a = MSSVAE(random_state=7, **kw).fit(X, study)
    b = MSSVAE(random_state=7, **kw).fit(X, study)
    c = MSSVAE(random_state=8, **kw).fit(X, study)
    assert np.array_equal(a.W_shared_, b.W_shared_)
    assert np.array_equal(a.transform(X, study), b.transform(X, study))
    assert not np.array_equal(a.W_shared_, c.W_shared_)


def test_save_load_round_trip_gives_identical_transform(fitted_blocks, blocks, tmp_path):
    X, study, _, _ = blocks
    fitted_blocks.save(tmp_path / "m")
    loaded = MSSVAE.load(tmp_path / "m")
    assert np.array_equal(loaded.transform(X, study), fitted_blocks.transform(X, study))
    assert np.array_equal(loaded.W_shared_, fitted_blocks.W_shared_)
    assert loaded.studies_ == fitted_blocks.studies_
    params = {k: v for k, v in fitted_blocks.get_params().items() if k != "device"}
    assert {k: v for k, v in loaded.get_params().items() if k != "device"} == params
    assert len(loaded.history_) == len(fitted_blocks.history_)
    assert np.array_equal(loaded.factor_kl_, fitted_blocks.factor_kl_)


def test_a_model_saved_before_lr_decay_loads_with_the_constant_rates_it_trained_with(fitted_blocks, tmp_path):
    fitted_blocks.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    del meta["params"]["lr_decay"]
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    assert MSSVAE.load(tmp_path / "m").lr_decay == 0.0


def test_load_refuses_modified_or_foreign_files(fitted_blocks, tmp_path):
    path = tmp_path / "m"
    fitted_blocks.save(path)
    with pytest.raises(ValueError, match="not empty"):
        fitted_blocks.save(path)
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="checksum"):
        MSSVAE.load(path)
    with pytest.raises(ValueError, match="not a saved MSSVAE"):
        MSSVAE.load(tmp_path / "nothing")


@pytest.mark.parametrize("edit", ["hidden", "studies", "params.foo"])
def test_load_refuses_an_edited_model_json_by_name(fitted_blocks, tmp_path, edit):
    # The checksum covers the tensors only: a hand-edited model.json must still be a clear refusal.
    path = tmp_path / "m"
    fitted_blocks.save(path)
    meta = json.loads((path / "model.json").read_text())
    if edit == "hidden":
        meta["hidden"] = [7, 7]          # shapes that the tensors do not have
    elif edit == "studies":
        del meta["studies"]
    else:
        meta["params"]["foo"] = 1         # a setting MSSVAE does not take
    (path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"model\.json does not describe the model in .*model\.safetensors"):
        MSSVAE.load(path)


def test_load_on_a_device_this_machine_lacks_blames_the_device_not_the_file(fitted_blocks, tmp_path):
    fitted_blocks.save(tmp_path / "m")
    with pytest.raises(ValueError, match="device") as err:
        MSSVAE.load(tmp_path / "m", device="meta" if torch.cuda.is_available() else "cuda")
    assert "does not describe" not in str(err.value)


def test_nan_loss_stops_with_the_epoch_and_keeps_last_finite_parameters(blocks):
    X, study, _, _ = blocks
    kw = dict(n_shared=3, n_specific=1, batch_size=64, random_state=0, lambda0=(10.0, 10.0, 10.0),  # no annealing
              device="cpu")
    # A finished fit prunes its masks (prune_masks); a stopped one keeps its last good state as it was.
    reference = MSSVAE(max_epochs=2, prune_masks=False, **kw).fit(X, study)
    model = MSSVAE(max_epochs=5, **kw)
    model._fault_injection = lambda epoch, step: epoch == 2  # test hook: poison the loss at epoch 2
    with pytest.raises(TrainingDivergedError, match=r"in epoch 3 of 5: .* after 2 completed epoch"):
        model.fit(X, study)
    assert not model.converged_ and len(model.history_) == 2
    assert np.isfinite(model.W_shared_).all()
    # the parameters are those at the end of epoch 1, i.e. of an uninterrupted 2-epoch fit (compared
    # on the module: the finished fit's report also merges and sets columns aside, a stopped one does not)
    assert np.allclose(model.module_.W.detach().numpy(), reference.module_.W.detach().numpy())


def test_a_loss_that_blows_up_without_a_nan_is_a_warning(blocks):
    # A learning rate of 10 sends the loss up by orders of magnitude and keeps it finite, so the NaN
    # check alone passed it as a fit.
    X, study, _, _ = blocks
    kw = dict(n_shared=3, n_specific=1, batch_size=64, max_epochs=20, random_state=0, device="cpu")
    with pytest.warns(RuntimeWarning, match="Training blew up"):
        blown = MSSVAE(lr=10.0, **kw).fit(X, study)
    assert not blown.converged_   # recorded, so it reaches uns["mssvae"] and the saved model
    with warnings.catch_warnings():
        warnings.filterwarnings("error", "Training blew up", RuntimeWarning)
        MSSVAE(**kw).fit(X, study)


def test_ctrl_c_in_the_mask_check_keeps_the_trained_masks(blocks, monkeypatch):
    X, study, _, _ = blocks
    kw = dict(n_shared=3, n_specific=1, batch_size=64, max_epochs=5, random_state=0, device="cpu",
              merge_dependent=None)
    unpruned = MSSVAE(prune_masks=False, **kw).fit(X, study)

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("mssvae.model.map_prune", ctrl_c)
    with pytest.warns(RuntimeWarning, match="Mask check interrupted"):
        model = MSSVAE(**kw).fit(X, study)
    assert not model.converged_ and model.pruned_entries_ == 0
    assert np.array_equal(model.module_.W.detach().numpy(), unpruned.module_.W.detach().numpy())


def test_nb_model_fits_counts_and_learns_dispersion(small_counts):
    X, study = small_counts
    m = MSSVAE(likelihood="nb", n_shared=3, n_specific=1, hidden=(16, 8), max_epochs=5, batch_size=30,
               random_state=0).fit(X, study)
    assert m.inverse_dispersion_.shape == (20,) and np.isfinite(m.inverse_dispersion_).all()
    assert np.isfinite(m.history_["kl_library"]).all() and (m.history_["kl_library"] > 0).all()
    rec = m.reconstruct(X, study)
    assert rec.shape == X.shape and (rec > 0).all()


def test_table2_defaults_per_likelihood(blocks):
    X, study, _, _ = blocks
    m = MSSVAE(max_epochs=1, batch_size=64).fit(X, study)
    assert m.W_shared_.shape[1] == 30 and m.W_specific_["s0"].shape[1] == 5
    assert m.module_.decoder.V1.weight.shape[0] == 50


def test_anndata_entry_point_writes_obsm_varm_uns(blocks):
    ad = pytest.importorskip("anndata")
    import pandas as pd

    from mssvae.io import fit_anndata

    X, study, _, _ = blocks
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"batch": study}, index=[f"c{i}" for i in range(len(X))]))
    model = fit_anndata(adata, "batch", n_shared=3, n_specific=1, max_epochs=2, batch_size=64)
    assert adata.obsm["X_mssvae"].shape == (1000, 5)
    assert adata.varm["mssvae_W_shared"].shape == (40, 3) and adata.varm["mssvae_W_s1"].shape == (40, 1)
    assert adata.uns["mssvae"]["studies"] == ["s0", "s1"]
    assert model.feature_names_in_[0] == adata.var_names[0]


def test_anndata_keys_of_awkward_study_labels(blocks, tmp_path):
    ad = pytest.importorskip("anndata")
    import pandas as pd

    from mssvae.io import fit_anndata

    X, study, _, _ = blocks
    labels = np.where(study == "s0", "c d", "a/b")   # (a study called "shared" is refused: study-labelled-shared)
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"g": labels}, index=[f"c{i}" for i in range(len(X))]))
    fit_anndata(adata, "g", n_shared=2, n_specific=1, max_epochs=1, batch_size=64)
    assert adata.varm["mssvae_W_shared"].shape == (40, 2)
    assert adata.varm["mssvae_W_c d"].shape == (40, 1) and "mssvae_W_a_b" in adata.varm
    # and uns's study-keyed dicts round-trip through h5ad ("/" would have become a nested group)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)   # anndata's "forward slashes will be disallowed"
        adata.write_h5ad(tmp_path / "a.h5ad")
    uns = ad.read_h5ad(tmp_path / "a.h5ad").uns["mssvae"]
    assert sorted(uns["active_specific"]) == sorted(uns["n_specific_active"]) == ["a_b", "c d"]
    assert list(uns["studies"]) == ["a/b", "c d"]


def test_a_study_with_no_more_samples_than_its_factors_is_warned_about(fitted_blocks):
    m = fitted_blocks
    assert all(k >= 1 for k in m.n_specific_active_.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m._warn_small_studies(np.array([300, 300]))            # the toy's own sizes: silent
    with pytest.warns(RuntimeWarning, match=r"1 study\(ies\) have no more samples than active .*'s1': 1 samples"):
        m._warn_small_studies(np.array([300, 1]))


def test_factor_kl_marks_the_factors_in_use(fitted_blocks):
    m = fitted_blocks
    kl = m.factor_kl_
    assert kl.shape == (len(m.factor_names_),) and (kl >= 0).all()
    active = set(m.active_shared_)
    inactive = [k for k in range(5) if k not in active]
    # the factors with support carry information; switched-off ones sit at the prior
    assert min(kl[k] for k in active) > 0.5 and max(kl[k] for k in inactive) < 0.1


def test_variance_explained_credits_the_factors_that_carry_the_blocks(fitted_blocks, blocks):
    X, study, _, _ = blocks
    ve = fitted_blocks.variance_explained(X, study, factors="all")
    assert list(ve.columns) == ["s0", "s1"] and ve.index[-1] == "total"
    assert (ve.loc["total"] > 0.5).all()  # 4 blocks of 10 features with loading 3 and noise sd 0.5
    S = support(fitted_blocks.W_shared_)
    active = [n for n, a in zip(fitted_blocks.factor_names_, S.any(0)) if a]
    inactive = [n for n, a in zip(fitted_blocks.factor_names_, S.any(0)) if not a]
    assert (ve.loc[active] > 0.05).all().all()  # each shared block is ~1/4 of either study's variance
    assert (ve.loc[inactive].abs() < 0.02).all().all()
    # a study's own factor explains nothing in the other study (its latent is 0 there)
    own = [n for n in fitted_blocks.factor_names_ if n.startswith("s0")]
    assert (ve.loc[own, "s1"].abs() < 1e-9).all()


def test_variance_explained_lists_the_reported_factors_and_the_rest_together(fitted_blocks, blocks):
    # The default rows are the factors that have a gene set, as the summary counts them (K̂_S, K̂_m),
    # and one row for every other decoder column, which the decoder may still use.
    X, study, _, _ = blocks
    m = fitted_blocks
    ve = m.variance_explained(X, study)
    reported = [m.factor_names_[k] for k in m.active_shared_] + [
        f"{lab}_{k}" for lab in m.studies_ for k in m.active_specific_[lab]]
    assert list(ve.index) == reported + ["other columns", "total"]
    per_column = m.variance_explained(X, study, factors="all")
    pd.testing.assert_frame_equal(ve.loc[reported + ["total"]], per_column.loc[reported + ["total"]])
    assert (ve.loc["other columns"].abs() < 0.02).all()   # the inactive columns, at their prior
    with pytest.raises(ValueError, match="`factors`"):
        m.variance_explained(X, study, factors="active")


def test_a_merged_factor_explains_its_columns_together(fitted_blocks, blocks):
    X, study, _, _ = blocks
    m = copy.deepcopy(fitted_blocks)
    a, b = (int(k) for k in m.active_shared_[:2])
    alone = m.variance_explained(X, study, factors="all")
    # as merging.py reports a merge: the kept column holds the union, the other is no longer active
    m.merged_factors_ = [[m.factor_names_[a], m.factor_names_[b]]]
    m.active_shared_ = np.array([k for k in m.active_shared_ if k != b])
    ve = m.variance_explained(X, study)
    assert m.factor_names_[b] not in ve.index
    # two disjoint blocks of genes: setting both to 0 removes about the sum of their shares
    both = ve.loc[m.factor_names_[a]]
    np.testing.assert_allclose(both, alone.loc[m.factor_names_[a]] + alone.loc[m.factor_names_[b]], rtol=0.1)
    assert (both > alone.loc[m.factor_names_[a]] + 0.05).all()


def test_a_decreasing_spike_schedule_is_accepted_with_a_warning(blocks):
    X, study, _, _ = blocks
    with pytest.warns(UserWarning, match=r"`lambda0` \(15.0, 10.0, 1.0\) decreases"):
        MSSVAE(n_shared=2, n_specific=1, max_epochs=1, batch_size=256, lambda0=(15.0, 10.0, 1.0)).fit(X, study)
    # a slab penalty above the first stage's λ0 (e.g. a fitted lambda1_ reused): warned, the last stage decides
    with pytest.warns(UserWarning, match="not above `lambda1` at stage 0: 1 <= 2"):
        MSSVAE(n_shared=2, n_specific=1, max_epochs=1, batch_size=256, lambda1=2.0).fit(X, study)


def test_an_empirical_slab_penalty_is_fitted_kept_and_saved(small_counts, tmp_path):
    # lambda1="empirical": λ1 follows its M-step (1 / the p*-weighted mean |w| of the slab entries),
    # capped at λ0 / 10; the fitted value is what pruning, the report and `score` use.
    X, study = small_counts
    m = MSSVAE(likelihood="nb", n_shared=3, n_specific=1, hidden=(16, 8), max_epochs=20, batch_size=30,
               lambda1="empirical", random_state=0).fit(X, study)
    lam = m.history_["lambda1"].to_numpy()
    assert lam[0] <= 0.1 + 1e-7 and len(np.unique(lam)) > 2   # capped in the λ0 = 1 stage, then moves
    assert (lam <= m.history_["lambda0"].to_numpy() / 10 + 1e-6).all()
    assert m.lambda1_ == pytest.approx(lam[-1]) and m.lambda1_ != 0.1
    fixed = MSSVAE(**{**m.get_params(), "lambda1": m.lambda1_})
    fixed.__dict__.update({k: v for k, v in m.__dict__.items() if k.endswith("_") or k.startswith("_")})
    assert m.score(X, study) == fixed.score(X, study)   # the bound is taken at the fitted λ1
    m.save(tmp_path / "m")
    loaded = MSSVAE.load(tmp_path / "m")
    assert loaded.lambda1 == "empirical" and loaded.lambda1_ == m.lambda1_
    assert loaded.score(X, study) == m.score(X, study)


def test_a_slab_penalty_per_annealing_stage_is_used_stage_by_stage(small_counts):
    X, study = small_counts
    m = MSSVAE(likelihood="nb", n_shared=3, n_specific=1, hidden=(16, 8), max_epochs=20, batch_size=30,
               lambda1=(0.1, 1.0, 0.2), random_state=0).fit(X, study)
    by_stage = m.history_.groupby("lambda0")["lambda1"].unique()
    assert [list(np.round(v, 6)) for v in by_stage] == [[0.1], [1.0], [0.2]]   # λ0 = 1, 10, 15
    assert m.lambda1_ == pytest.approx(0.2)   # the last stage's: pruning and `score` use it
