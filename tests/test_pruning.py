"""The last MAP check of the mask entries (mssvae.pruning): w_jk is kept only if Eq. 2.4 prefers it to 0."""

import copy
import math

import numpy as np
import pytest
import torch

from mssvae.pruning import map_prune
from mssvae.spike_slab import ssl_log_density


def test_the_prior_is_the_spike_and_slab_mixture_with_gamma_summed_out():
    w = torch.tensor([0.0, 0.3, 2.0, -5.0], dtype=torch.float64)
    eta, l0, l1 = 0.1, 15.0, 0.1
    a = np.abs(w.numpy())
    direct = np.log(eta * l1 / 2 * np.exp(-l1 * a) + (1 - eta) * l0 / 2 * np.exp(-l0 * a))
    got = ssl_log_density(w, torch.tensor(eta, dtype=torch.float64), l0, l1).numpy()
    np.testing.assert_allclose(got, direct, rtol=1e-12)


@pytest.fixture
def planted_plus_junk(fitted_blocks, blocks):
    """The toy fit's module with |w| = 2 added to a shared column on 10 features of study s1's own factor."""
    X, study, _, _ = blocks
    module = copy.deepcopy(fitted_blocks.module_)
    col = int(fitted_blocks.active_shared_[0])
    planted = module.W.detach().abs() > 0.5
    with torch.no_grad():
        module.W[30:40, col] = 2.0
    x = torch.as_tensor(X)
    codes = torch.as_tensor(np.searchsorted(fitted_blocks.studies_, study))
    return module, x, codes, planted, col


def test_entries_the_likelihood_does_not_want_go_to_zero_and_the_planted_ones_stay(planted_plus_junk):
    module, x, codes, planted, col = planted_plus_junk
    drop = map_prune(module, x, codes, lambda0=15.0, lambda1=0.1, prior_weight=1.0)
    assert drop[30:40, col].all()                       # every added entry
    assert not (drop & planted).any()                   # none of the fitted gene sets' entries
    assert int(drop.sum()) == 10


def _rule_entry_by_entry(module, x, codes, lambda0, lambda1, prior_weight):
    """The module docstring's rule read literally: every sample, every feature, the plain decoder."""
    from mssvae import likelihoods as lk

    module.eval()
    with torch.no_grad():
        z, _ = module.encode(x, codes)
        W, eta = module.W.detach().clone(), module.eta.clamp(1e-12, 1.0 - 1e-7)

        def log_lik(W_):
            return lk.gaussian_log_lik(x, module.decoder(z, W_), module.log_var).sum(0)   # (G,)

        drop = torch.zeros_like(W, dtype=torch.bool)
        on = W.abs() > 0.5
        for k in range(W.shape[1]):
            rows = torch.nonzero(on[:, k]).flatten()
            W0 = W.clone()
            W0[rows, k] = 0.0
            gain = (log_lik(W) - log_lik(W0))[rows]
            w = W[rows, k]
            cost = prior_weight * (ssl_log_density(torch.zeros_like(w), eta[k], lambda0, lambda1)
                                   - ssl_log_density(w, eta[k], lambda0, lambda1))
            out = rows[gain < cost]
            drop[out, k], W[out, k] = True, 0.0
    return drop


@pytest.mark.parametrize("prior_weight, dense", [(1.0, False), (1000.0, False), (0.0, True)])
def test_the_check_decides_as_the_rule_computed_entry_by_entry(planted_plus_junk, prior_weight, dense):
    # By study, in each study's own columns, reusing each dropped feature's likelihood: the shortcuts
    # of pruning._drop_entries change the cost, not the decisions (float64, so rounding cannot tip one).
    # ``dense``: every other entry at 0.7 too, as after a short fit, so that a feature meets the check in
    # several columns and a later column reads what an earlier one left (this case caught a reuse of
    # a kept feature's likelihood at w_jk = 0).
    module, x, codes, _, _ = planted_plus_junk
    module, x = module.double(), x.double()
    if dense:
        with torch.no_grad():
            module.W.copy_(torch.where(module.W.abs() > 0.5, module.W, torch.full_like(module.W, 0.7)))
    want = _rule_entry_by_entry(module, x, codes, 15.0, 0.1, prior_weight)
    got = map_prune(module, x, codes, lambda0=15.0, lambda1=0.1, prior_weight=prior_weight, chunk_size=7,
                    batch_size=50)
    assert torch.equal(got, want)
    if prior_weight > 1:        # a case where the prior side tips some fitted entries, not all of them
        assert 10 < int(want.sum()) < int((module.W.abs() > 0.5).sum())


def test_the_check_can_show_its_progress_and_decides_the_same(planted_plus_junk, capsys):
    module, x, codes, _, _ = planted_plus_junk
    quiet = map_prune(module, x, codes, lambda0=15.0, lambda1=0.1, prior_weight=1.0)
    shown = map_prune(module, x, codes, lambda0=15.0, lambda1=0.1, prior_weight=1.0, progress=True)
    assert torch.equal(quiet, shown)
    err = capsys.readouterr().err
    # the bar counts decoder evaluations, and its total is exactly the work done: it ends at 100 %
    assert "MSSVAE mask check" in err and "100%" in err.split("\r")[-1]


def test_the_prior_side_of_the_rule_decides_when_the_likelihood_gain_is_small(planted_plus_junk):
    module, x, codes, planted, col = planted_plus_junk
    # Without the prior only the likelihood decides: the added entries (which lower it) still go.
    drop = map_prune(module, x, codes, lambda0=15.0, lambda1=0.1, prior_weight=0.0)
    assert drop[30:40, col].all() and not (drop & planted).any()
    # A prior weight far above any likelihood gain prefers every entry at 0.
    drop = map_prune(module, x, codes, lambda0=15.0, lambda1=0.1, prior_weight=math.inf)
    assert drop[module.W.detach().abs() > 0.5].all()


def test_the_fit_records_and_saves_the_count_and_off_leaves_the_mask_alone(blocks, tmp_path):
    from mssvae import MSSVAE

    X, study, _, _ = blocks
    kw = dict(n_shared=3, n_specific=1, max_epochs=20, batch_size=256, random_state=0, lr=0.01)
    on = MSSVAE(**kw).fit(X, study)
    off = MSSVAE(prune_masks=False, **kw).fit(X, study)
    assert off.pruned_entries_ == 0
    changed = (np.abs(off.module_.W.detach().numpy()) > 0.5) & (on.module_.W.detach().numpy() == 0)
    assert on.pruned_entries_ == int(changed.sum())
    on.save(tmp_path / "m")
    assert MSSVAE.load(tmp_path / "m").pruned_entries_ == on.pruned_entries_
