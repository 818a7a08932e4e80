"""The GPU training step (issue 9, goal 4): one CUDA graph replayed per step, the same training as eager steps.

The sync-free step runs on the CPU in every other test; these need a CUDA device (skipped without one).
"""

import numpy as np
import pytest
import torch
from conftest import two_block_data

from mssvae import MSSVAE

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _counts(n=240):
    X, study, _, _ = two_block_data(n=n)
    return np.random.default_rng(0).poisson(np.exp(2 + X.clip(-3, 3) / 2)).astype(np.float32), study


@cuda
@pytest.mark.parametrize("extra", [dict(feature_subsample=1.0), dict(feature_subsample=0.5),
                                   dict(lambda1="empirical")], ids=["all-features", "subsets", "empirical-lambda1"])
def test_graph_replay_trains_like_eager_steps(monkeypatch, extra):
    # An empirical λ1 is a device scalar the captured step updates in place, as it does η.
    X, study = _counts()
    kw = dict(likelihood="nb", n_shared=3, n_specific=1, hidden=(16, 16), max_epochs=30, batch_size=64,
              kl_free=0.5, device="cuda", precision="fp32", random_state=0, **extra)
    graphs = MSSVAE(**kw).fit(X, study)
    monkeypatch.setenv("MSSVAE_CUDA_GRAPHS", "0")
    eager = MSSVAE(**kw).fit(X, study)
    a, b = graphs.history_, eager.history_
    # The warm-up steps are eager, so the first epoch is the same arithmetic; later ones replay the graph.
    assert a["loss"].iloc[0] == pytest.approx(b["loss"].iloc[0], rel=1e-5)
    assert a["loss"].iloc[-1] == pytest.approx(b["loss"].iloc[-1], rel=0.02)
    assert a["prior_weight"].iloc[-1] == pytest.approx(b["prior_weight"].iloc[-1], rel=0.02)
    assert a["lambda1"].iloc[-1] == pytest.approx(b["lambda1"].iloc[-1], rel=0.02)
    assert np.isfinite(a[["loss", "log_lik", "prior_weight"]].to_numpy()).all()


@cuda
def test_graph_replay_recaptures_when_lambda0_changes():
    # λ0 takes its three values (1, 10, 15) within these epochs: each value needs its own graph, so a
    # stale graph would keep the first penalty and leave the masks dense.
    X, study = _counts()
    m = MSSVAE(likelihood="nb", n_shared=3, n_specific=1, hidden=(16, 16), max_epochs=40, batch_size=64,
               kl_free=0.5, device="cuda", random_state=0).fit(X, study)
    assert sorted(m.history_["lambda0"].unique()) == [1.0, 10.0, 15.0]
    first = m.history_.groupby("lambda0")["log_prior_masks"].first()
    assert first[15.0] != pytest.approx(first[1.0], rel=1e-3)
