"""Trust in files and long runs: checkpoints that resume exactly, refuse foreign state, and model
files that cannot run code when loaded."""

import json
import logging
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import two_block_data
from safetensors.torch import load_file

from mssvae import MSSVAE
from mssvae.checkpoint import CHECKPOINT_FILE

WORKER = Path(__file__).parent / "fit_worker.py"
EPOCHS = 40


def _worker(out, checkpoint_dir, epochs=EPOCHS):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(WORKER), str(out), str(checkpoint_dir), str(epochs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, proc, timeout=120.0):
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.02)


def _epochs_done(checkpoint_dir: Path) -> int:
    from mssvae import checkpoint

    return checkpoint.load(checkpoint_dir)[1]["epochs_done"]


def test_fit_killed_at_a_random_moment_then_resumed_equals_an_uninterrupted_fit(tmp_path):
    reference = _worker(tmp_path / "ref", "-")
    assert reference.wait(timeout=300) == 0, reference.communicate()

    ck = tmp_path / "ck"
    victim = _worker(tmp_path / "unused", ck)
    _wait_for(ck / CHECKPOINT_FILE, victim)
    time.sleep(random.uniform(0.0, 1.0))  # somewhere in the middle of an epoch or of a checkpoint write
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = _epochs_done(ck)
    assert victim.returncode == -signal.SIGKILL and 1 <= done < EPOCHS, done

    resumed = _worker(tmp_path / "resumed", ck)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert f"resuming from checkpoint {ck / CHECKPOINT_FILE} after epoch {done} of {EPOCHS}" in err
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("ref", "resumed"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), [k for k in a if not (a[k] == b[k]).all()]
    hist_a = json.loads((tmp_path / "ref" / "model.json").read_text())["history"]
    hist_b = json.loads((tmp_path / "resumed" / "model.json").read_text())["history"]
    assert hist_a == hist_b


def test_ctrl_c_keeps_the_last_completed_epoch_and_says_not_converged(tmp_path):
    ck = tmp_path / "ck"
    proc = _worker(tmp_path / "out", ck, epochs=400)
    _wait_for(ck / CHECKPOINT_FILE, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "Training interrupted" in err and "the mask check (prune_masks) is skipped" in err
    assert out.startswith("not converged")
    saved = MSSVAE.load(tmp_path / "out")
    assert not saved.converged_ and 1 <= len(saved.history_) < 400 and saved.pruned_entries_ == 0
    assert np.isfinite(saved.W_shared_).all()


def _small(**kw):
    return MSSVAE(**dict(dict(n_shared=2, n_specific=1, hidden=(8, 8), batch_size=64, max_epochs=6,
                              random_state=0), **kw))


@pytest.fixture(scope="module")
def small_data():
    X, study, _, _ = two_block_data(n=60)
    return X, study


def test_a_checkpoint_of_other_data_or_settings_is_refused(small_data, tmp_path):
    X, study = small_data
    _small().fit(X, study, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"another fit: the settings differ: max_epochs 6 \(checkpoint\) vs 7"):
        _small(max_epochs=7).fit(X, study, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another fit: the data differ"):
        _small().fit(X * 2, study, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="`checkpoint_every` must be a positive integer"):
        _small().fit(X, study, checkpoint_dir=tmp_path, checkpoint_every=0)


def test_resuming_a_finished_fit_says_so_and_returns_the_same_model(small_data, tmp_path, caplog):
    X, study = small_data
    first = _small().fit(X, study, checkpoint_dir=tmp_path, checkpoint_every=4)
    with caplog.at_level(logging.WARNING, logger="mssvae"):
        again = _small().fit(X, study, checkpoint_dir=tmp_path)
    assert "resuming from checkpoint" in caplog.text and "after epoch 6 of 6" in caplog.text
    assert np.array_equal(first.W_shared_, again.W_shared_) and len(again.history_) == 6


class _Hostile:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_corrupted_foreign_or_hostile_checkpoints_are_refused_without_running_them(small_data, tmp_path):
    X, study = small_data
    _small().fit(X, study, checkpoint_dir=tmp_path)
    path = tmp_path / CHECKPOINT_FILE
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="cannot be read"):
        _small().fit(X, study, checkpoint_dir=tmp_path)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF  # a bit flip inside the tensors: the header still parses
    path.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="does not match its checksum"):
        _small().fit(X, study, checkpoint_dir=tmp_path)
    marker = tmp_path / "pwned"
    path.write_bytes(pickle.dumps(_Hostile(marker)))
    with pytest.raises(ValueError, match="cannot be read"):
        _small().fit(X, study, checkpoint_dir=tmp_path)
    assert not marker.exists()


def test_model_files_refuse_hostile_pickles_other_versions_and_other_features(small_data, tmp_path):
    X, study = small_data
    model = _small(max_epochs=2).fit(X, study)
    model.save(tmp_path / "m")
    meta_path, tensor_path = tmp_path / "m" / "model.json", tmp_path / "m" / "model.safetensors"
    meta = json.loads(meta_path.read_text())

    with pytest.raises(ValueError, match="`X` has 39 features but the model was fitted on 40"):
        MSSVAE.load(tmp_path / "m").transform(X[:, :39], study)

    meta_path.write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(ValueError, match="format version 99"):
        MSSVAE.load(tmp_path / "m")
    meta_path.write_text("[1, 2")
    with pytest.raises(ValueError, match="not valid MSSVAE metadata"):
        MSSVAE.load(tmp_path / "m")

    # An attacker who controls both files: a pickle with a matching checksum is still never unpickled.
    marker = tmp_path / "pwned"
    hostile = pickle.dumps(_Hostile(marker))
    tensor_path.write_bytes(hostile)
    import hashlib

    meta_path.write_text(json.dumps(dict(meta, tensors_sha256=hashlib.sha256(hostile).hexdigest())))
    with pytest.raises(ValueError, match="could not be read"):
        MSSVAE.load(tmp_path / "m")
    assert not marker.exists()


@pytest.mark.parametrize("extra", [dict(feature_subsample=0.5), dict(lambda1="empirical", normalize_decoder=True)],
                         ids=["feature-subsets", "empirical-lambda1"])
def test_a_fit_with_feature_subsets_or_an_empirical_slab_resumes_to_the_same_result(tmp_path, extra):
    # The feature subsets come from their own generator, and the empirical λ1 is a training state:
    # both are saved in the checkpoint.
    import torch

    from mssvae import TrainingDivergedError

    torch.set_num_threads(1)
    X, study, _, _ = two_block_data(n=100)
    kw = dict(n_shared=3, n_specific=1, hidden=(8, 8), batch_size=32, max_epochs=6, random_state=3,
              device="cpu", **extra)   # exact resumption is a CPU promise (README)
    reference = MSSVAE(**kw).fit(X, study)
    broken = MSSVAE(**kw)
    broken._fault_injection = lambda epoch, step: epoch == 3   # stops after 3 checkpointed epochs
    with pytest.raises(TrainingDivergedError):
        broken.fit(X, study, checkpoint_dir=tmp_path, checkpoint_every=1)
    assert _epochs_done(tmp_path) == 3
    resumed = MSSVAE(**kw).fit(X, study, checkpoint_dir=tmp_path, checkpoint_every=1)
    np.testing.assert_array_equal(resumed.W_shared_, reference.W_shared_)
    np.testing.assert_array_equal(resumed.W_specific_["s1"], reference.W_specific_["s1"])
    assert resumed.lambda1_ == reference.lambda1_


def test_each_kl_free_candidate_checkpoints_in_its_own_folder_and_a_finished_one_is_reloaded(tmp_path, caplog):
    from mssvae.simulate import simulate_rnaseq

    sim = simulate_rnaseq(n_samples=60, n_features=12, n_shared=1, n_specific=1, random_state=1)
    kw = dict(likelihood="nb", n_shared=2, n_specific=1, hidden=(4, 4), max_epochs=40, batch_size=32)
    # NB default: W = 1 with kl_free 0.5 and 0, the varimax start with 0.5 (items 18, 26)
    first = MSSVAE(**kw).fit(sim.X, sim.study, checkpoint_dir=tmp_path, checkpoint_every=100)
    folders = ("mask_init=ones/kl_free=0.5", "mask_init=ones/kl_free=0", "mask_init=varimax/kl_free=0.5")
    assert all((tmp_path / f / CHECKPOINT_FILE).is_file() for f in folders)
    assert not (tmp_path / "mask_init=varimax/kl_free=0").exists()
    # the candidates that stopped at the select epoch (item 27) have their checkpoint there
    on = {f"mask_init={c.mask_init}/kl_free={c.kl_free:g}" for c in first.candidates_.itertuples() if c.trained_to_end}
    assert first.select_epoch_ == 14 and 0 < len(on) < 3
    assert {f: _epochs_done(tmp_path / f) for f in folders} == {f: 40 if f in on else 14 for f in folders}
    with caplog.at_level("WARNING", logger="mssvae"):
        again = MSSVAE(**kw).fit(sim.X, sim.study, checkpoint_dir=tmp_path)
    assert caplog.text.count("after epoch 14 of 40") == 3 - len(on)
    assert caplog.text.count("after epoch 40 of 40") == len(on)
    pd.testing.assert_frame_equal(again.candidates_, first.candidates_)
    assert again.candidate_scores_ == first.candidate_scores_ and again.kl_free_ == first.kl_free_
    assert again.start_scores_ == first.start_scores_ and again.mask_init_ == first.mask_init_
    np.testing.assert_array_equal(again.W_shared_, first.W_shared_)


def test_an_interrupted_candidate_is_kept_and_the_others_are_not_trained(monkeypatch):
    from mssvae.simulate import simulate_rnaseq

    sim = simulate_rnaseq(n_samples=60, n_features=12, n_shared=1, n_specific=1, random_state=1)
    calls = []
    train_once = MSSVAE._train_once

    def interrupted(self, s, seed, start, masks, kl_free, *args, **kw):   # as after Ctrl-C in the first candidate
        calls.append(kl_free)
        return dict(train_once(self, s, seed, start, masks, kl_free, *args, **kw), converged_=False,
                    interrupted=True)

    monkeypatch.setattr(MSSVAE, "_train_once", interrupted)
    model = MSSVAE(likelihood="nb", n_shared=2, n_specific=1, hidden=(4, 4), max_epochs=2, batch_size=32, n_init=2)
    model.fit(sim.X, sim.study)
    assert calls == [0.5] and model.kl_free_ == 0.5 and not model.converged_ and model.candidate_scores_ == {}
    assert model.mask_init_ == "ones" and model.start_scores_ == {}
    assert np.isnan(model.init_scores_).all() and model.init_seed_ == 0   # the second restart never ran


def test_a_checkpoint_dir_that_is_a_file_is_refused_before_training(small_data, tmp_path):
    X, study = small_data
    (tmp_path / "afile").write_text("")
    model = MSSVAE(n_shared=2, n_specific=1, hidden=(8, 8), max_epochs=3, batch_size=32)
    with pytest.raises(ValueError, match="`checkpoint_dir` .*afile exists and is not a folder"):
        model.fit(X, study, checkpoint_dir=tmp_path / "afile")
    assert not hasattr(model, "history_")   # nothing trained
