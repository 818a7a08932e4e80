"""The torch module of the MSSVAE: encoders, masked decoder and the lower bound of Eq. 2.4.

It knows nothing about numpy, studies' names or training loops; `training.py` drives it and
`model.py` wraps it for users.

Layout of the latent space.  With K = K_S + Σ_m K_m columns, a sample of study m has
z~ = [z | 0 … | ζ^(m) | … 0] (§2.2).  All masks live in one parameter ``W`` (G, K) whose column
blocks are [W^(S) | W^(1) | … | W^(M)].  Because z~ is exactly zero outside a sample's own
blocks, c_ij = w~_j^(m) ⊙ z~_i = W_j ⊙ z~_i: study m's samples never touch another study's mask,
and the gradient of the likelihood with respect to those blocks is exactly zero.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from . import fused_decoder
from . import likelihoods as lk
from .spike_slab import e_step, ssl_log_prior


def _rows_of(study: torch.Tensor, s: int, groups: list[slice] | None):
    """The batch rows of study ``s`` (a slice when ``groups`` is given), or None when it has none."""
    if groups is not None:
        return groups[s] if groups[s].stop > groups[s].start else None
    idx = (study == s).nonzero(as_tuple=True)[0]
    return idx if idx.numel() else None


class Encoder(nn.Module):
    """Two-layer ReLU MLP with batch norm and a diagonal-Gaussian head (Appendix B.1).

    The paper's σ_ψ head is linear; we read its output as log σ² so the variance is positive.
    """

    def __init__(self, n_in: int, hidden: tuple[int, int], n_out: int):
        super().__init__()
        h1, h2 = hidden
        self.body = nn.Sequential(
            nn.Linear(n_in, h1), nn.BatchNorm1d(h1), nn.ReLU(),
            nn.Linear(h1, h2), nn.BatchNorm1d(h2), nn.ReLU(),
        )
        self.mean = nn.Linear(h2, n_out)
        self.log_var = nn.Linear(h2, n_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        # Clamped so that exp() cannot overflow in early, wild steps.
        return self.mean(h), self.log_var(h).clamp(-15.0, 15.0)


class MaskedDecoder(nn.Module):
    """f_θ of Appendix B.1, evaluated for every (sample, feature) pair at once.

    h1_ij = ReLU(V1 c_ij) (no bias), h2_ij = ReLU(V2 h1_ij + b2),
    f_j = v_j · [h2_ij ; c_ij] + b_j.
    The paper writes the skip connection as ``h2 + c`` although h2 has H2 dims and c has K;
    we read it as the concatenation [h2; c], so v_j has H2 + K entries (its last K act on c,
    a per-feature linear term in the masked factors).

    Features are processed in chunks so memory is bounded by B·chunk·H, not B·G·H (while
    training, by :func:`chunked_sum`).

    The scale of W is not identified by this decoder: W[:, k] → s·W[:, k] with V1[:, k] and
    v_skip[:, k] → /s leaves f unchanged (and a global scale can move into V2, b2 and v), so a
    penalty on |W| can be paid by shrinking W rather than by sparsifying it.  ``normalized=True``
    removes these directions: V1's columns, V2's rows and each feature's [v_hidden; v_skip] are
    used at unit norm, so only W (and b2) carry scale.  Measured trade-offs: docs/design.md.
    """

    def __init__(self, n_features: int, n_latent: int, hidden: tuple[int, int], normalized: bool = False):
        super().__init__()
        h1, h2 = hidden
        self.normalized = normalized
        self.V1 = nn.Linear(n_latent, h1, bias=False)
        self.V2 = nn.Linear(h1, h2)
        # Per-feature final layer, initialised like nn.Linear(h2 + K, 1) for each feature.
        bound = 1.0 / (h2 + n_latent) ** 0.5
        self.v_hidden = nn.Parameter(torch.empty(n_features, h2).uniform_(-bound, bound))
        self.v_skip = nn.Parameter(torch.empty(n_features, n_latent).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features).uniform_(-bound, bound))

    def weights(self):
        """The shared layers (V1, V2, b2), as stored (:func:`decoder_output` normalises them)."""
        return self.V1.weight, self.V2.weight, self.V2.bias

    def forward(self, z: torch.Tensor, W: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """z: (B, K) latent in the z~ layout; W: (G, K). Returns the pre-activation (B, G).

        For inference and plotting; training goes through :func:`chunked_sum`, which fuses the
        decoder with the likelihood and never keeps a chunk's activations.
        """
        G = W.shape[0]
        step = G if chunk_size is None else chunk_size
        per = (W, self.v_hidden, self.v_skip, self.bias)
        return torch.cat([decoder_output(z, *(t[s:s + step] for t in per), *self.weights(), self.normalized)
                          for s in range(0, G, step)], dim=1)


def extra_kl(kl, mask, w, kl_weight: float, kl_free: float) -> torch.Tensor:
    """The KL beyond Eq. 2.4's: (kl_weight − 1) · Σ_k n_k · max(KL̄_k − kl_free, 0).

    kl (B, K) per-sample, per-factor KL (0 where the factor is masked out); KL̄_k is its weighted
    mean over the batch's samples that have factor k, n_k their weighted count.  With kl_free = 0
    this is (kl_weight − 1) times the weighted KL sum, the plain multiplier.  With kl_free > 0 a
    factor that carries less than kl_free nats per sample feels only Eq. 2.4's KL, so the extra
    weight cannot switch off a factor that has not yet formed (docs/design.md, "Counts (NB)", item 16).
    """
    if kl_weight == 1.0:
        return kl.new_zeros(())
    total = (w.unsqueeze(-1) * kl).sum(0)
    if kl_free <= 0:
        return (kl_weight - 1.0) * total.sum()
    n_k = (w.unsqueeze(-1) * mask).sum(0)
    excess = (total - kl_free * n_k).clamp_min(0.0)   # n_k · max(KL̄_k − kl_free, 0)
    return (kl_weight - 1.0) * excess.sum()


def decoder_output(z, W, v_hidden, v_skip, bias, V1, V2, b2, normalized: bool,
                   grouped: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """f_θ(W_j ⊙ z~_i) of Appendix B.1 for a block of g features: (B, K), (g, K), … → (B, g).

    The B·g masked inputs c_ij = W_j ⊙ z_i go through V1 and V2 as two (B·g)-row matrix products,
    the layout that keeps a CPU near its GEMM peak (a batch of B small (g, K) @ (K, H1) products
    ran at a fifth of it: benchmarks/decoder_speed.py).

    ``grouped = (zg, cols)`` (optional), for a batch sorted by study into M groups of r rows: a
    sample's z~ is zero outside its own columns (shared + its study's), so its first layer needs only
    those: cols (M, Kg) holds each study's Kg = K_S + max K_m columns, zg (M, r, Kg) those columns of
    z, and V1 is then given as V1ᵀ[cols] (M, Kg, H1).  One batched product over the studies replaces
    the (B·g, K) one: 60 of 110 inputs at the platelet size, the same values up to float rounding
    (:meth:`MSSVAEModule.grouped_latent` builds the inputs).
    """
    if normalized:   # V1's columns at unit norm: in the grouped layout a column is a row of V1ᵀ[cols]
        V1 = V1 / V1.norm(dim=0 if grouped is None else -1, keepdim=True).clamp_min(1e-8)
        V2 = V2 / V2.norm(dim=1, keepdim=True).clamp_min(1e-8)
        norm = torch.sqrt((v_hidden**2).sum(1, keepdim=True) + (v_skip**2).sum(1, keepdim=True)).clamp_min(1e-8)
        v_hidden, v_skip = v_hidden / norm, v_skip / norm
    B, (g, K) = z.shape[0], W.shape
    if fused_decoder.applies(z, V1.shape[-1 if grouped is None else -2], *V2.shape[::-1]):
        # the same hidden path in one kernel, nothing (B·g, H1) in memory
        try:
            if grouped is None:
                hidden = fused_decoder.hidden(z[None], W[None], V1.t()[None], V2, b2, v_hidden)
            else:
                zg, cols = grouped
                hidden = fused_decoder.hidden(zg, W[:, cols].permute(1, 0, 2), V1, V2, b2, v_hidden)
        except fused_decoder.DoesNotFit as err:   # a GPU with less shared memory than an H100: once, then unfused
            warnings.warn(f"{err}; the decoder takes the matrix products instead", RuntimeWarning, stacklevel=2)
        else:
            return hidden.reshape(B, g) + z @ (v_skip * W).t() + bias
    if grouped is None:
        h = (z.unsqueeze(1) * W.unsqueeze(0)).reshape(B * g, K) @ V1.t()
    else:
        zg, cols = grouped
        M, r, Kg = zg.shape
        c = zg.unsqueeze(2) * W[:, cols].permute(1, 0, 2).unsqueeze(1)      # (M, r, g, Kg)
        h = torch.bmm(c.reshape(M, r * g, Kg), V1).reshape(B * g, -1)
    h = F.relu(h)
    h = F.relu(torch.addmm(b2, h, V2.t())).view(B, g, -1)
    return (h * v_hidden).sum(-1) + z @ (v_skip * W).t() + bias


class _ChunkedSum(torch.autograd.Function):
    """Σ over feature chunks of a scalar ``fn``, each chunk's gradients taken as soon as it is computed.

    A chunk's (B, g, H) activations live only while its forward and backward run, so memory is
    bounded by the chunk, and nothing is recomputed (activation checkpointing would run every
    forward twice).  ``backward`` only scales the stored gradients by the incoming one.
    """

    @staticmethod
    def forward(ctx, fn, chunk, n_shared, dims, *tensors):
        need = [t.requires_grad for t in tensors]
        grads = [torch.zeros_like(t) if r else None for t, r in zip(tensors, need)]
        shared = [t.detach().requires_grad_(r) for t, r in zip(tensors[:n_shared], need)]
        per = tensors[n_shared:]
        G = per[0].shape[dims[0]]
        total = None
        with torch.enable_grad():
            for s in range(0, G, chunk):
                g = min(chunk, G - s)
                sliced = [t.detach().narrow(d, s, g).requires_grad_(r)
                          for t, d, r in zip(per, dims, need[n_shared:])]
                value = fn(*shared, *sliced)
                inputs = [(i, t) for i, t in enumerate(shared + sliced) if t.requires_grad]
                parts = torch.autograd.grad(value, [t for _, t in inputs], allow_unused=True)
                for (i, _), part in zip(inputs, parts):
                    if part is None:
                        continue
                    if i < n_shared:
                        grads[i] += part
                    else:
                        grads[i].narrow(dims[i - n_shared], s, g).copy_(part)
                total = value.detach() if total is None else total + value.detach()
        ctx.grads = grads
        return total

    @staticmethod
    def backward(ctx, grad_out):
        return (None, None, None, None, *(None if g is None else g * grad_out for g in ctx.grads))


def chunked_sum(fn, shared, per_feature, dims, chunk_size: int | None) -> torch.Tensor:
    """``fn(*shared, *per_feature)`` summed over chunks of features (all at once if chunk_size is None).

    ``per_feature[i]`` is cut along ``dims[i]``; ``fn`` must return a scalar that is a sum over
    features (the log-likelihood of Eq. 2.4 is), so the chunked value and its gradients equal the
    plain ones up to float rounding.
    """
    G = per_feature[0].shape[dims[0]]
    if chunk_size is None or chunk_size >= G:
        return fn(*shared, *per_feature)
    if not torch.is_grad_enabled():
        return sum(fn(*shared, *(t.narrow(d, s, min(chunk_size, G - s)) for t, d in zip(per_feature, dims)))
                   for s in range(0, G, chunk_size))
    return _ChunkedSum.apply(fn, int(chunk_size), len(shared), tuple(dims), *shared, *per_feature)


@dataclass
class LossTerms:
    """Terms of the objective, each an estimate of the per-sample average (Σ over N, / N)."""

    loss: torch.Tensor          # −(lower bound)/N, what is minimised
    log_lik: torch.Tensor
    kl_shared: torch.Tensor
    kl_specific: torch.Tensor
    kl_library: torch.Tensor
    log_prior_masks: torch.Tensor   # spike-and-slab terms (before `prior_weight`), / N
    log_prior_noise: torch.Tensor   # log p(Σ) / N (Gaussian only)
    fisher_info: torch.Tensor       # mean Fisher information of one entry w.r.t. the decoder output
    fisher_info_features: torch.Tensor  # (G,) the same per feature (mean over the batch)


class MSSVAEModule(nn.Module):
    """Parameters and objective of the multi-study sparse VAE.

    Parameters
    ----------
    n_features : G.
    n_shared : K_S (may be 0).
    n_specific : list of K_m, one per study (entries may be 0).
    hidden : (H1, H2) for encoders and decoder.
    likelihood : "gaussian" or "nb".
    """

    def __init__(self, n_features: int, n_shared: int, n_specific: list[int], hidden: tuple[int, int],
                 likelihood: str, normalize_decoder: bool = False):
        super().__init__()
        self.n_features = n_features
        self.n_shared = n_shared
        self.n_specific = list(n_specific)
        self.likelihood = likelihood
        self.n_latent = n_shared + sum(n_specific)
        offsets = [n_shared]
        for k in n_specific:
            offsets.append(offsets[-1] + k)
        self.block_starts = offsets[:-1]  # start column of each study's block in W / z~
        # Each study's latent columns for the decoder's grouped first layer: the shared ones, its own,
        # and as padding up to the largest study's count, columns of another study's block (z~ is
        # exactly zero there for this study's samples, so they add nothing and get no gradient).
        self._grouped = len(n_specific) > 1 and sum(n_specific) > 0
        widest = max(range(len(n_specific)), key=lambda t: n_specific[t]) if n_specific else 0
        cols = []
        for start, k in zip(self.block_starts, n_specific):
            pad = max(n_specific) - k
            cols.append(list(range(n_shared)) + list(range(start, start + k))
                        + list(range(self.block_starts[widest], self.block_starts[widest] + pad)))
        self.register_buffer("study_columns", torch.tensor(cols, dtype=torch.long).reshape(len(cols), -1),
                             persistent=False)

        self.W = nn.Parameter(torch.ones(n_features, self.n_latent))  # Appendix C.2.2: W = 1
        self.register_buffer("eta", torch.full((self.n_latent,), 0.5))
        self.encoder_shared = Encoder(n_features, hidden, n_shared) if n_shared > 0 else None
        self.encoders_specific = nn.ModuleList(
            [Encoder(n_features, hidden, k) if k > 0 else nn.Identity() for k in n_specific]
        )
        self.decoder = MaskedDecoder(n_features, self.n_latent, hidden, normalize_decoder)
        if likelihood == "gaussian":
            self.log_var = nn.Parameter(torch.zeros(n_features))
        else:
            self.log_phi = nn.Parameter(torch.zeros(n_features))
            self.encoder_library = Encoder(n_features, hidden, 1)

    # ------------------------------------------------------------------ encoders
    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        # Counts span orders of magnitude; encoders see log1p counts (as scVI does).  The
        # likelihood always uses the raw values.
        return torch.log1p(x) if self.likelihood == "nb" else x

    def encode(self, x: torch.Tensor, study: torch.Tensor, groups: list[slice] | None = None):
        """Posterior means and log-variances in the z~ layout.

        x : (B, G); study : (B,) long in [0, M).  Returns (mean, log_var), each (B, K), zero
        (mean) / zero (log_var) outside each sample's own blocks: those entries are masked out
        of the sample and of the KL terms.
        ``groups`` (optional): the rows of each study as one slice per study, for a batch sorted by
        study (training's balanced batches).  Slices need no look at ``study``'s values, which on a
        GPU would wait for the device (and cannot be captured in a CUDA graph).
        """
        h = self.encoder_input(x)
        B = x.shape[0]
        mean = x.new_zeros(B, self.n_latent)
        log_var = x.new_zeros(B, self.n_latent)
        if self.encoder_shared is not None:
            m, v = self.encoder_shared(h)
            mean[:, : self.n_shared] = m
            log_var[:, : self.n_shared] = v
        for s, (enc, k, start) in enumerate(zip(self.encoders_specific, self.n_specific, self.block_starts)):
            if k == 0:
                continue
            idx = _rows_of(study, s, groups)
            if idx is None:
                continue
            m, v = enc(h[idx])
            # .to(): under bf16 autocast the encoder returns bf16; the latent stays fp32.
            mean[idx, start:start + k] = m.to(mean.dtype)
            log_var[idx, start:start + k] = v.to(log_var.dtype)
        return mean, log_var

    def latent_mask(self, study: torch.Tensor, groups: list[slice] | None = None) -> torch.Tensor:
        """(B, K) 1/0 mask of the z~ entries that belong to each sample (shared + own study);
        ``groups`` as in :meth:`encode`."""
        mask = torch.zeros(study.shape[0], self.n_latent, device=study.device)
        mask[:, : self.n_shared] = 1.0
        for s, (k, start) in enumerate(zip(self.n_specific, self.block_starts)):
            mask[study == s if groups is None else groups[s], start:start + k] = 1.0
        return mask

    def grouped_latent(self, z: torch.Tensor, groups: list[slice] | None):
        """(zg, V1ᵀ[cols]) for :func:`decoder_output`'s grouped first layer, or None to use all K columns.

        ``groups`` must be consecutive slices covering z's rows in order (a Python check: nothing is
        read from the device).  The grouped layout needs every study to have the same number of
        rows, as training's balanced batches do; other batches use the plain layout.
        """
        if groups is None:
            return None
        spans = [(g.start, g.stop) for g in groups]
        B = z.shape[0]
        if any(a > b for a, b in spans) or [a for a, _ in spans] != [0] + [b for _, b in spans[:-1]] \
                or spans[-1][1] != B:
            raise ValueError(f"groups must be consecutive slices covering the {B} rows of the batch; got {groups}")
        r = spans[0][1] - spans[0][0]
        if not self._grouped or r == 0 or any(b - a != r for a, b in spans):
            return None
        M, Kg = self.study_columns.shape
        zg = z.view(M, r, -1).gather(2, self.study_columns.unsqueeze(1).expand(M, r, Kg))
        return zg, self.decoder.V1.weight.t()[self.study_columns]

    def encode_library(self, x: torch.Tensor):
        m, v = self.encoder_library(self.encoder_input(x))
        return m.squeeze(-1), v.squeeze(-1)

    # ------------------------------------------------------------------ decoder
    def decode(self, z: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
        """f_θ(W ⊙ z~) for every feature: (B, K) → (B, G); softplus applied for NB (Eq. 2.5)."""
        out = self.decoder(z, self.W, chunk_size)
        return F.softplus(out) if self.likelihood == "nb" else out

    # ------------------------------------------------------------------ objective
    def forward(self, *args, **kwargs):
        """The same as :meth:`loss` (DistributedDataParallel synchronises gradients through forward)."""
        return self.loss(*args, **kwargs)

    def loss(
        self,
        x: torch.Tensor,
        study: torch.Tensor,
        sample_weight: torch.Tensor,
        n_total: int,
        lambda0: float,
        lambda1: float,
        a: float,
        b: float,
        prior_weight: float,
        noise_prior: tuple[float, float] | None = None,
        library_prior: tuple[float, float] | None = None,
        chunk_size: int | None = None,
        prior_row_weight: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        kl_weight: float = 1.0,
        tie_noise: bool = False,
        kl_free: float = 0.0,
        groups: list[slice] | None = None,
    ):
        """Minibatch estimate of −(Eq. 2.4)/N, with its E-step.

        The per-sample terms of the batch are weighted by ``sample_weight`` (n_m / b_m for a
        sample of study m when the batch holds b_m of the n_m samples of that study), so their
        weighted sum is an unbiased estimate of the N-sample sum.  The global terms (mask priors,
        noise prior) are added once.  Everything is divided by N, so the loss is on the scale of
        one sample; ``prior_weight`` multiplies the spike-and-slab terms (1 = Eq. 2.4 exactly).

        ``features`` (sorted indices, optional): evaluate the per-feature terms on this random
        subset S only, each scaled by G/|S| (the likelihood, the mask-prior rows, the noise prior),
        so the objective and its gradient stay unbiased; W rows outside S get no gradient this
        step.  The E-step and the η terms always use all of W (cheap, and no estimate is needed).
        ``fisher_info_features`` then has |S| entries, for the features in S.

        ``kl_weight`` multiplies the factors' KL terms (1 = Eq. 2.4; the library-size KL is left alone).
        ``kl_free`` (nats): the extra weight ``kl_weight − 1`` acts on factor k only on the part of its
        batch-mean KL per sample above ``kl_free``; the KL itself keeps weight 1 (Eq. 2.4).  0 gives the
        plain multiplier.

        ``tie_noise``: every feature uses the mean of the noise parameters (log φ or log σ²), so
        all features weigh alike in the likelihood (the dispersion warm-up of training).

        ``groups``: each study's rows of the batch as a slice (a batch sorted by study), see :meth:`encode`.
        ``prior_weight`` may be a 0-dim tensor (a calibrated weight that stays on the device).

        Returns (LossTerms, p_star (G, K)); the caller performs the η M-step with p_star.
        """
        mask = self.latent_mask(study, groups)
        mean, log_var = self.encode(x, study, groups)
        # One Monte Carlo draw (L = 1, Appendix B.2.1) by reparameterisation.
        z = (mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)) * mask
        kl = 0.5 * (mean**2 + torch.exp(log_var) - 1.0 - log_var) * mask
        kl_shared = kl[:, : self.n_shared].sum(-1)
        kl_specific = kl[:, self.n_shared:].sum(-1)

        w = sample_weight
        dec = self.decoder
        grouped = self.grouped_latent(z, groups)
        cols = self.study_columns
        # zg is a chunked_sum input so its gradient reaches z; without grouping z stands in, unused.
        V1, V2, b2 = dec.weights()
        shared = (z, V1, V2, b2, w, z) if grouped is None else (z, grouped[1], V2, b2, w, grouped[0])

        def decode(z, V1, V2, b2, zg, W, vh, vs, bias):
            return decoder_output(z, W, vh, vs, bias, V1, V2, b2, dec.normalized,
                                  None if grouped is None else (zg, cols))
        noise = self.log_var if self.likelihood == "gaussian" else self.log_phi
        if tie_noise:
            noise = noise.mean().expand_as(noise)
        per_feature = [x, self.W, dec.v_hidden, dec.v_skip, dec.bias, noise]
        scale = 1.0
        if features is not None:
            scale = self.n_features / features.numel()
            per_feature = [x[:, features]] + [t[features] for t in per_feature[1:]]
            rows = torch.zeros(self.n_features, dtype=self.W.dtype, device=self.W.device)
            rows.index_fill_(0, features, scale)   # a Python scalar: nothing to copy from the host
            prior_row_weight = rows if prior_row_weight is None else rows * prior_row_weight
        kl_library = torch.zeros_like(kl_shared)
        if self.likelihood == "gaussian":
            def weighted_log_lik(z, V1, V2, b2, w, zg, x, W, vh, vs, bias, log_var):
                f = decode(z, V1, V2, b2, zg, W, vh, vs, bias)
                return (w * lk.gaussian_log_lik(x, f, log_var).sum(-1)).sum()

            log_lik = chunked_sum(weighted_log_lik, shared, per_feature, (1, 0, 0, 0, 0, 0), chunk_size)
            alpha, beta = noise_prior
            log_prior_noise = lk.inverse_gamma_log_prior(per_feature[-1], alpha, beta).sum() * scale
            info_g = lk.gaussian_fisher_info(per_feature[-1].detach())  # the same for every sample
        else:
            l_mean, l_log_var = self.encode_library(x)
            log_l = l_mean + torch.exp(0.5 * l_log_var) * torch.randn_like(l_mean)
            kl_library = lk.kl_lognormal(l_mean, l_log_var, *library_prior)
            log_prior_noise = x.new_zeros(())
            info_parts = []   # (g,) Fisher information of each chunk's features, a side output

            def weighted_log_lik(z, V1, V2, b2, w, zg, log_l, x, W, vh, vs, bias, log_phi):
                f = F.softplus(decode(z, V1, V2, b2, zg, W, vh, vs, bias))
                mu = torch.exp(log_l).unsqueeze(-1) * f
                phi = torch.exp(log_phi)
                with torch.no_grad():
                    info_parts.append((w.unsqueeze(-1) * lk.nb_fisher_info(mu, f, phi)).sum(0) / w.sum())
                # Weighted sums, not w @ …: under bf16 autocast a matmul would round the log-likelihood.
                return (w * lk.nb_log_lik(x, mu, phi).sum(-1)).sum()

            log_lik = chunked_sum(weighted_log_lik, shared + (log_l,), per_feature, (1, 0, 0, 0, 0, 0),
                                  chunk_size)
            info_g = torch.cat(info_parts)
        info = info_g.mean()
        log_lik = log_lik * scale

        p_star, lambda_star = e_step(self.W.detach(), self.eta, lambda0, lambda1)
        # One call covers W^(S) and every W^(m): the terms are per column, each column has its own η_k.
        log_prior_masks = ssl_log_prior(self.W, p_star, lambda_star, self.eta, a, b, lambda0, lambda1,
                                        prior_row_weight)

        data = log_lik - (w * (kl_shared + kl_specific + kl_library)).sum() - extra_kl(kl, mask, w, kl_weight, kl_free)
        bound = data + prior_weight * log_prior_masks + log_prior_noise
        terms = LossTerms(
            loss=-bound / n_total,
            log_lik=log_lik.detach() / n_total,
            kl_shared=(w * kl_shared).sum().detach() / n_total,
            kl_specific=(w * kl_specific).sum().detach() / n_total,
            kl_library=(w * kl_library).sum().detach() / n_total,
            log_prior_masks=log_prior_masks.detach() / n_total,
            log_prior_noise=log_prior_noise.detach() / n_total,
            fisher_info=info,
            fisher_info_features=info_g,
        )
        return terms, p_star
