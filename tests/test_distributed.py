"""Data-parallel training (torchrun, gloo on CPU): ranks stay in step and learn what one process learns."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from conftest import two_block_data

from mssvae import MSSVAE
from mssvae.metrics import jaccard_matrix, support
from mssvae.training import BalancedBatches

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="no gloo backend")


def test_each_rank_draws_its_share_of_a_balanced_batch_with_unbiased_weights():
    study = np.repeat([0, 1, 2], [50, 30, 20])
    one = BalancedBatches(study, 120, torch.Generator().manual_seed(0))
    two = BalancedBatches(study, 120, torch.Generator().manual_seed(0), world_size=2)
    assert (one.per_study, two.per_study) == (40, 20)
    assert one.steps_per_epoch == two.steps_per_epoch == 1
    # every rank's weighted count is N: the mean of the ranks' estimates is unbiased for the N-sample sum
    assert one.weight.sum() == pytest.approx(100) and two.weight.sum() == pytest.approx(100)


def _launch(tmp_path, *args, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _two_ranks(tmp_path, *args):
    proc = _launch(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)]


def test_two_gloo_ranks_stay_in_step_and_recover_the_blocks_like_one_process(tmp_path):
    r0, r1 = _two_ranks(tmp_path)
    # W and η identical on both ranks: gradients averaged, E-step and η M-step computed from them
    for key in ("W", "eta", "loss", "weight"):
        assert np.array_equal(r0[key], r1[key]), key
    # and so is the fitted model: the last step's batch-norm statistics are rank 0's on both, so the
    # mask check, the reported masks and the factors agree
    for key in ("buffers", "pruned", "W_shared", "Z"):
        assert np.array_equal(r0[key], r1[key]), key

    X, study, Ws, Wm = two_block_data(n=300)
    single = MSSVAE(n_shared=4, n_specific=1, hidden=(16, 16), batch_size=128, max_epochs=60, lr=0.01,
                    random_state=1).fit(X, study)
    truth = np.hstack([Ws, Wm["s0"], Wm["s1"]])
    for W in (r0["W"], single.module_.W.detach().numpy()):
        assert jaccard_matrix(support(truth), support(W)).max(1).min() >= 0.9
    # the same objective on the same scale (each is an estimate of the per-sample bound)
    assert r0["loss"][-1] == pytest.approx(single.history_["loss"].iloc[-1], rel=0.1)


def test_an_empirical_slab_penalty_stays_the_same_on_every_rank(tmp_path):
    # λ1's M-step reads W and p*, which are identical on the ranks: no extra all-reduce is needed.
    r0, r1 = _two_ranks(tmp_path, "empirical")
    for key in ("W", "eta", "lambda1"):
        assert np.array_equal(r0[key], r1[key]), key
    assert len(np.unique(r0["lambda1"])) > 2


def test_a_rank_given_other_data_is_refused_on_every_rank_instead_of_waiting_forever(tmp_path):
    proc = _launch(tmp_path, "shard", timeout=300)
    assert proc.returncode != 0
    assert "was given other data than another rank" in proc.stderr
    assert "every rank must call fit with the whole X and study" in proc.stderr


def test_a_torchrun_process_without_a_process_group_is_warned_that_it_fits_alone(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    X, study, _, _ = two_block_data(n=60)
    with pytest.warns(RuntimeWarning, match="torch.distributed is not initialised"):
        MSSVAE(n_shared=2, n_specific=1, hidden=(8, 8), max_epochs=1, batch_size=32).fit(X, study)


def test_two_ranks_compare_the_nb_candidates_alike_and_stay_in_step(tmp_path):
    # item 27 under torchrun: the history is the mean over ranks, so every rank pauses, compares and
    # resumes the same candidates, and the fit kept is the same on both
    r0, r1 = _two_ranks(tmp_path, "nb")
    for key in ("candidates", "W", "eta", "loss", "buffers", "W_shared"):
        assert np.array_equal(r0[key], r1[key]), key
    assert len(r0["candidates"]) == 3
