"""The torch module: the masked latent layout (§2.2), the decoder (App. B.1), the objective (Eq. 2.4)."""

import math

import pytest
import torch
from torch.nn import functional as F

from mssvae import likelihoods as lk
from mssvae.module import MSSVAEModule, extra_kl
from mssvae.spike_slab import e_step


def make_module(likelihood="gaussian", normalize=True, K_S=2, K_m=(2, 1, 0), G=7, hidden=(4, 3)):
    torch.manual_seed(0)
    m = MSSVAEModule(G, K_S, list(K_m), hidden, likelihood, normalize).double()
    with torch.no_grad():
        m.W.copy_(torch.randn_like(m.W))  # W = 1 would hide indexing mistakes
    return m


def decoder_by_hand(module, z, study):
    """f_j(c_ij) computed pair by pair from the definitions of Appendix B.1."""
    dec, W = module.decoder, module.W
    V1, V2 = dec.V1.weight, dec.V2.weight
    vh, vs = dec.v_hidden, dec.v_skip
    if dec.normalized:
        V1 = V1 / V1.norm(dim=0, keepdim=True)
        V2 = V2 / V2.norm(dim=1, keepdim=True)
        n = torch.sqrt((vh**2).sum(1, keepdim=True) + (vs**2).sum(1, keepdim=True))
        vh, vs = vh / n, vs / n
    B, G = z.shape[0], W.shape[0]
    out = torch.empty(B, G, dtype=z.dtype)
    for i in range(B):
        s = int(study[i])
        w_tilde_mask = torch.zeros(module.n_latent, dtype=z.dtype)
        w_tilde_mask[: module.n_shared] = 1
        start = module.block_starts[s]
        w_tilde_mask[start:start + module.n_specific[s]] = 1
        for j in range(G):
            c = (W[j] * w_tilde_mask) * z[i]  # w~_j^(m) ⊙ z~_i^(m)
            h1 = torch.relu(V1 @ c)
            h2 = torch.relu(V2 @ h1 + dec.V2.bias)
            out[i, j] = torch.cat([vh[j], vs[j]]) @ torch.cat([h2, c]) + dec.bias[j]
    return out


@pytest.mark.parametrize("normalize", [True, False])
def test_vectorised_decoder_equals_the_per_pair_definition(normalize):
    m = make_module(normalize=normalize)
    study = torch.tensor([0, 1, 2, 0, 1])
    z = torch.randn(5, m.n_latent, dtype=torch.float64) * m.latent_mask(study).double()
    assert torch.allclose(m.decode(z), decoder_by_hand(m, z, study), atol=1e-10)
    assert torch.allclose(m.decode(z, chunk_size=3), m.decode(z), atol=1e-12)


def loss_and_gradients(m, **kw):
    """Loss, every parameter's gradient and the per-feature Fisher information on one weighted batch
    of 6 count samples (3 studies), with the same Monte Carlo draws on every call."""
    torch.manual_seed(1)
    x = torch.poisson(torch.full((6, 7), 30.0, dtype=torch.float64))
    study = torch.tensor([0, 0, 1, 1, 2, 2])
    w = torch.tensor([1.0, 2.0, 1.5, 1.0, 3.0, 1.0], dtype=torch.float64)
    priors = dict(noise_prior=(1.5, 1.0)) if m.likelihood == "gaussian" else dict(library_prior=(5.0, 0.5))
    m.train()
    torch.manual_seed(0)
    m.zero_grad()
    terms, _ = m.loss(x, study, w, 20, 10.0, 0.1, 1.0, 7.0, 2.0, **priors, **kw)
    terms.loss.backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    return terms.loss.item(), grads, terms.fisher_info_features.clone()


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
@pytest.mark.parametrize("normalize", [True, False])
def test_feature_chunks_give_the_same_objective_gradients_and_information(likelihood, normalize):
    # Training evaluates the likelihood chunk by chunk, each chunk's gradients taken at once
    # (module.chunked_sum); against the one-pass computation, every parameter's gradient agrees.
    m = make_module(likelihood, normalize)
    loss0, grads0, info0 = loss_and_gradients(m, chunk_size=None)
    assert len(grads0) == len(dict(m.named_parameters()))
    for chunk in (3, 1):
        loss, grads, info = loss_and_gradients(m, chunk_size=chunk)
        assert loss == pytest.approx(loss0, rel=1e-12)
        assert grads.keys() == grads0.keys()
        for name in grads0:
            assert torch.allclose(grads[name], grads0[name], rtol=1e-9, atol=1e-12), name
        assert torch.allclose(info, info0, rtol=1e-12)


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_feature_subsets_are_unbiased_for_the_objective_and_its_gradient(likelihood):
    # Averaged over every subset of 3 of the 7 features (what uniform sampling draws), the scaled
    # subset objective and each parameter's gradient equal the full ones exactly.
    from itertools import combinations

    m = make_module(likelihood, normalize=True)
    full_loss, full_grads, _ = loss_and_gradients(m)
    subsets = [torch.tensor(c) for c in combinations(range(7), 3)]
    results = [loss_and_gradients(m, features=s) for s in subsets]
    assert sum(r[0] for r in results) / len(subsets) == pytest.approx(full_loss, rel=1e-10)
    for name, g in full_grads.items():
        mean = sum(r[1].get(name, torch.zeros_like(g)) for r in results) / len(subsets)
        assert torch.allclose(mean, g, rtol=1e-8, atol=1e-10), name
    # One subset alone is not the full objective (the test would pass for an unused argument).
    assert results[0][0] != pytest.approx(full_loss, rel=1e-6)
    assert torch.count_nonzero(results[0][1]["W"].abs().sum(1)) == 3


def test_a_sample_never_touches_another_studys_block():
    m = make_module()
    x = torch.randn(6, 7, dtype=torch.float64)
    study = torch.tensor([0, 0, 1, 1, 2, 2])
    mean, _ = m.encode(x, study)
    assert mean.shape == (6, m.n_latent)
    mask = m.latent_mask(study)
    assert (mean[mask == 0] == 0).all()
    # study 0 owns columns 2:4, study 1 column 4, study 2 none (K_m = 0)
    assert mask[0].tolist() == [1, 1, 1, 1, 0] and mask[2].tolist() == [1, 1, 0, 0, 1]
    assert mask[4].tolist() == [1, 1, 0, 0, 0]


def test_likelihood_gradient_of_other_studies_masks_is_exactly_zero():
    m = make_module()
    m.train()
    x = torch.randn(4, 7, dtype=torch.float64)
    study = torch.zeros(4, dtype=torch.long)  # study 0 only
    mean, log_var = m.encode(x, study)
    z = (mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)) * m.latent_mask(study)
    lk.gaussian_log_lik(x, m.decode(z), m.log_var).sum().backward()
    g = m.W.grad
    assert (g[:, 4] == 0).all()  # study 1's block
    assert (g[:, :4].abs().sum(0) > 0).all()  # shared and study 0's blocks do learn


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_objective_equals_a_direct_float64_computation(likelihood):
    m = make_module(likelihood)
    m.train()
    gen = torch.Generator().manual_seed(3)
    x = torch.poisson(torch.full((6, 7), 20.0, dtype=torch.float64), generator=gen)
    study = torch.tensor([0, 0, 1, 1, 2, 2])
    weight = torch.tensor([2.0, 2.0, 3.0, 3.0, 1.0, 1.0], dtype=torch.float64)  # n_m / b_m
    N, lam0, lam1, a, b, pw = 12, 10.0, 0.1, 1.0, 7.0, 3.0
    lib = (math.log(100.0), 0.5)
    torch.manual_seed(11)
    terms, _ = m.loss(x, study, weight, N, lam0, lam1, a, b, pw, (1.5, 0.7), lib)

    # Direct computation, term by term, with the same Monte Carlo draws.
    torch.manual_seed(11)
    mask = m.latent_mask(study).double()
    mean, log_var = m.encode(x, study)
    z = (mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)) * mask
    total = 0.0
    if likelihood == "nb":
        lm, lv = m.encode_library(x)
        log_l = lm + torch.exp(0.5 * lv) * torch.randn_like(lm)
    f = decoder_by_hand(m, z, study)
    for i in range(6):
        kl = sum(0.5 * (mean[i, k] ** 2 + torch.exp(log_var[i, k]) - 1 - log_var[i, k])
                 for k in range(m.n_latent) if mask[i, k])
        if likelihood == "gaussian":
            ll = sum(-0.5 * math.log(2 * math.pi) - 0.5 * m.log_var[j] - 0.5 * (x[i, j] - f[i, j]) ** 2
                     / torch.exp(m.log_var[j]) for j in range(7))
            kl_l = 0.0
        else:
            mu = torch.exp(log_l[i]) * F.softplus(f[i])
            ll = torch.distributions.NegativeBinomial(torch.exp(m.log_phi), probs=mu / (mu + torch.exp(m.log_phi))) \
                .log_prob(x[i]).sum()
            kl_l = torch.distributions.kl_divergence(
                torch.distributions.Normal(lm[i], torch.exp(0.5 * lv[i])),
                torch.distributions.Normal(lib[0], math.sqrt(lib[1])))
        total = total + weight[i] * (ll - kl - kl_l)
    p, lam = e_step(m.W.detach(), m.eta, lam0, lam1)
    W = m.W.detach()
    ssl = (-(lam * W.abs()) + p * math.log(lam1 / 2) + (1 - p) * math.log(lam0 / 2)).sum()
    n_in = p.sum(0)
    ssl = ssl + ((n_in + a - 1) * torch.log(m.eta) + (7 - n_in + b - 1) * torch.log(1 - m.eta)).sum()
    total = total + pw * ssl
    if likelihood == "gaussian":
        total = total + lk.inverse_gamma_log_prior(m.log_var, 1.5, 0.7).sum()
    assert torch.allclose(terms.loss, -total / N, rtol=1e-6)


def test_kl_above_the_free_nats_carries_the_extra_weight_and_below_it_only_eq_2_4():
    kl = torch.tensor([[0.1, 2.0, 0.0], [0.3, 4.0, 1.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    w = torch.tensor([2.0, 1.0], dtype=torch.float64)
    # kl_free = 0: the plain multiplier, (β - 1) times the weighted KL sum
    assert extra_kl(kl, mask, w, 3.0, 0.0) == pytest.approx(2.0 * (w @ kl).sum())
    assert extra_kl(kl, mask, w, 1.0, 0.5) == 0.0
    # kl_free = 0.5: factor 0 (mean KL 0.5/3 nats) and factor 2 (1 nat on a weight of 1) against
    # factor 1 (8/3 nats on a weight of 3): n_k max(KL̄_k - 0.5, 0) = 0, 8 - 1.5, 1 - 0.5
    assert extra_kl(kl, mask, w, 3.0, 0.5) == pytest.approx(2.0 * (6.5 + 0.5))
    # a factor under the threshold gets no gradient from the extra term
    kl.requires_grad_(True)
    extra_kl(kl, mask, w, 3.0, 0.5).backward()
    assert torch.all(kl.grad[:, 0] == 0) and torch.all(kl.grad[:, 1] > 0)


@pytest.mark.parametrize("likelihood,normalize,sizes", [
    ("gaussian", True, (3, 3, 3)), ("nb", True, (3, 3, 3)), ("nb", False, (3, 3, 3)),   # grouped first layer
    ("gaussian", True, (3, 2, 3)), ("nb", True, (3, 2, 3)),                              # unequal: plain layout
])
def test_study_slices_give_the_same_loss_and_gradients_as_looking_up_the_study_codes(likelihood, normalize, sizes):
    # Training passes each study's rows as slices (a batch sorted by study) so a GPU step needs no
    # host sync, and with equal groups (balanced batches) the decoder's first layer then reads only
    # each study's K_S + K_m columns; the objective must be the one computed from the codes.
    m = make_module(likelihood, normalize).train()
    study = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    ends = torch.tensor(sizes).cumsum(0).tolist()
    groups = [slice(e - n, e) for n, e in zip(sizes, ends)]
    n = len(study)
    x = torch.rand(n, 7, dtype=torch.float64) * 5
    if likelihood == "nb":
        x = x.round()
    prior = {"gaussian": ((2.0, 1.0), None), "nb": (None, (0.0, 1.0))}[likelihood]
    out = []
    for g in (None, groups):
        m.zero_grad()
        torch.manual_seed(1)
        terms, _ = m.loss(x, study, torch.ones(n, dtype=torch.float64), n, 10.0, 0.1, 1.0, 7.0,
                          torch.tensor(2.0, dtype=torch.float64), *prior, groups=g)
        terms.loss.backward()
        out.append((terms.loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-12, atol=0)
    assert out[0][1].keys() == out[1][1].keys()
    for name in out[0][1]:   # a gather's and a slice's backward may add in another order
        torch.testing.assert_close(out[0][1][name], out[1][1][name], rtol=1e-10, atol=1e-12, msg=name)


def test_grouped_first_layer_reads_each_study_s_columns_with_padding_from_another_block():
    m = make_module()                         # K_S = 2, K_m = (2, 1, 0): columns 0-1 | 2-3 | 4 | -
    assert m.study_columns.tolist() == [[0, 1, 2, 3], [0, 1, 4, 2], [0, 1, 2, 3]]
    z = torch.randn(6, 5, dtype=torch.float64)
    assert m.grouped_latent(z, None) is None
    assert m.grouped_latent(z, [slice(0, 3), slice(3, 3), slice(3, 6)]) is None   # unequal groups: plain layout
    zg, V1g = m.grouped_latent(z, [slice(0, 2), slice(2, 4), slice(4, 6)])
    assert zg.shape == (3, 2, 4) and V1g.shape == (3, 4, 4)
    torch.testing.assert_close(zg[1], z[2:4][:, [0, 1, 4, 2]])
    with pytest.raises(ValueError, match="consecutive slices covering the 6 rows"):
        m.grouped_latent(z, [slice(0, 2), slice(3, 4), slice(4, 6)])
    with pytest.raises(ValueError, match="consecutive slices"):
        m.grouped_latent(z, [slice(0, 2), slice(2, 4), slice(4, 5)])
