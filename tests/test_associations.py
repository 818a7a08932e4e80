"""Factor-covariate associations: a factor that follows a batch is flagged, others are not."""

import numpy as np
import pandas as pd
import pytest

from mssvae.associations import factor_associations


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    n = 120
    batch = np.repeat(["b1", "b2", "b3"], n // 3)
    age = rng.uniform(20, 80, n)
    Z = rng.normal(size=(n, 3))
    Z[:, 0] += np.select([batch == "b1", batch == "b2"], [-1.5, 0.0], 1.5)  # tracks batch
    Z[:, 2] += 0.05 * age                                                  # tracks age
    return Z, pd.DataFrame({"batch": batch, "age": age})


def test_factor_that_follows_batch_is_flagged_and_others_are_not(scores):
    Z, obs = scores
    t = factor_associations(Z, obs, ["batch", "age"], factor_names=["f0", "f1", "f2"])
    t = t.set_index(["factor", "covariate"])
    assert t.loc[("f0", "batch"), "p_adj"] < 1e-6 and t.loc[("f0", "batch"), "test"] == "kruskal"
    assert t.loc[("f2", "age"), "p_adj"] < 1e-6 and t.loc[("f2", "age"), "test"] == "spearman"
    assert t.loc[("f1", "batch"), "p_adj"] > 0.05 and t.loc[("f1", "age"), "p_adj"] > 0.05
    assert 0 < t.loc[("f0", "batch"), "effect"] <= 1


def test_only_owning_samples_are_tested(scores):
    Z, obs = scores
    owner = np.ones(Z.shape, dtype=bool)
    owner[:80, 0] = False  # factor 0 belongs to the last 40 samples only: one batch level left
    t = factor_associations(Z, obs, "batch", owner=owner).set_index("factor")
    assert t.loc["factor_0", "n_samples"] == 40 and np.isnan(t.loc["factor_0", "p_value"])


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(covariates="sex"), "not columns of `obs`"),
    (dict(covariates="batch", factor_names=["a"]), "factor_names"),
])
def test_bad_arguments_are_named(scores, kwargs, fragment):
    Z, obs = scores
    with pytest.raises(ValueError, match=fragment):
        factor_associations(Z, obs, **kwargs)


def test_model_factor_associations_uses_each_samples_own_factors(fitted_blocks, blocks):
    from mssvae.associations import model_factor_associations

    X, study, _, _ = blocks
    obs = pd.DataFrame({"study": study, "noise": np.random.default_rng(1).normal(size=len(study))})
    t = model_factor_associations(fitted_blocks, X, study, obs, "noise").set_index("factor")
    n_per_study = len(study) // 2
    assert (t.loc[[n for n in t.index if n.startswith("s0")], "n_samples"] == n_per_study).all()
    assert (t.loc[[n for n in t.index if n.startswith("shared")], "n_samples"] == len(study)).all()
