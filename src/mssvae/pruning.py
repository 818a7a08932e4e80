"""A last MAP check of every mask entry: keep w_jk only if Eq. 2.4 prefers it to w_jk = 0.

Why (docs/design.md, "Counts (NB)", item 17): gradient training leaves entries in the slab that the decoder
does not use.  The decoder sees w_jk·z_k through shared layers, so it can learn to ignore a column's
input for a gene; the likelihood then no longer pulls on w_jk, and the slab's penalty λ1 is too weak
to bring it back to 0 within the run.  On the §4.2 simulation with 7 groups such entries fill the
columns of the "sin" genes' factors with other modules' genes: when the two columns of one
nonlinear factor are merged (merging.py), the merged gene set carries them too.

The rule is the spike-and-slab lasso's own: for a fixed rest of the model, compare the objective of
Eq. 2.4 at the current w_jk and at 0.  The part of Eq. 2.4 that depends on one entry is gene j's
log-likelihood plus the entry's log prior; with γ_jk summed out (the E-step's job) that prior is
the marginal spike-and-slab density p(w | η_k) = η_k ψ1(w) + (1 − η_k) ψ0(w).  So w_jk is set to
0 when

    Σ_i log p(x_ij | w_jk) − Σ_i log p(x_ij | 0)  <  prior_weight · (log p(0 | η_k) − log p(w_jk | η_k)),

the coordinate-wise thresholding rule of Ročková & George's spike-and-slab lasso (there in closed
form for a linear model; here the likelihood difference is computed through the decoder).  The
expectation over q(z | x) is taken at the posterior means (a plug-in), and λ0 is its final value.
The columns are visited one at a time; when an entry of a gene is dropped, the gene's likelihood
becomes the one just computed at 0, so the check of the next column sees the current mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import likelihoods as lk
from .module import decoder_output
from .spike_slab import ssl_log_density


@torch.no_grad()
def map_prune(module, x: torch.Tensor, study: torch.Tensor, lambda0: float, lambda1: float,
              prior_weight: float, chunk_size: int | None = 64, batch_size: int = 1024,
              threshold: float = 0.5, progress: bool = False) -> torch.Tensor:
    """(G, K) bool of the mask entries with |w| > threshold that Eq. 2.4 prefers at 0 (module text).

    x (N, G) and study (N,) as the module takes them (counts as they are; the module's encoders
    apply their own transform).  W is not changed here: the caller zeroes the returned entries.
    Cost: one pass of the decoder over all samples and features, plus one per column over the
    features in that column's gene set and the samples whose z~ has that column (all for a shared
    column, its study's for a specific one), never a loop over features.  ``prior_weight`` is the one
    weight of the whole mask prior (with ``prior_per_feature`` the fit's block-wide weight is used).
    ``progress`` shows a bar: after a short or unconverged fit, whose columns still hold thousands of
    genes, this check can take longer than the training.  The bar counts decoder evaluations
    (feature × sample), not columns: the first columns also evaluate every gene at the current mask,
    so a bar over columns started slow and its first time estimate was about 4× too long.
    """
    was_training = module.training
    module.eval()   # batch norm from its running statistics, as in transform; and they stay untouched
    try:
        return _drop_entries(module, x, study, lambda0, lambda1, prior_weight, chunk_size, batch_size, threshold,
                             progress)
    finally:
        module.train(was_training)


def _drop_entries(module, x, study, lambda0, lambda1, prior_weight, chunk_size, batch_size,
                  threshold, progress) -> torch.Tensor:
    dec = module.decoder
    V1, V2, b2 = dec.weights()
    W = module.W.detach().clone()
    eta = module.eta.detach().clamp(1e-12, 1.0 - 1e-7)
    noise = (module.log_var if module.likelihood == "gaussian" else module.log_phi).detach()
    M = len(module.n_specific)
    # Samples by study: a study-specific column k is 0 in z~ outside its study (§2.2), so w_jk moves
    # only that study's likelihood, and the gain of dropping it is summed over those samples alone
    # (the other studies' terms are equal and cancel): a 7th of the work at 7 studies.
    # The same holds inside the decoder: a study's batch needs only its own K_S + K_m columns in the
    # first layer (module.grouped_latent's layout, one group), half of K at the platelet size.
    cols = module.study_columns
    V1_rows = V1.t()[cols]                    # (M, Kg, H1)
    batches = [[] for _ in range(M)]
    for m in range(M):
        idx = torch.nonzero(study == m).flatten()
        for s in range(0, len(idx), batch_size):
            xb, sb = x[idx[s:s + batch_size]], study[idx[s:s + batch_size]]
            z, _ = module.encode(xb, sb)
            log_l = module.encode_library(xb)[0] if module.likelihood == "nb" else None
            batches[m].append((xb, z, (z[:, cols[m]][None], V1_rows[m:m + 1]), log_l))

    # Activations of at most chunk_size features × batch_size samples at a time, as many features a
    # call as that allows for the batch at hand: a study's batch is often a few dozen samples, and
    # 8-feature calls (the CPU chunk sized for 1024 samples) spend their time on per-call overhead.
    pairs = (chunk_size or W.shape[0]) * batch_size

    def feature_log_lik(rows: torch.Tensor, W_rows: torch.Tensor, studies: list[int]) -> torch.Tensor:
        """Σ_i log p(x_ij) over each study's samples for the features ``rows`` with mask rows
        ``W_rows``: (len(rows), len(studies))."""
        total = torch.zeros(len(rows), len(studies), dtype=W.dtype, device=W.device)
        for t, m in enumerate(studies):
            for xb, z, (zg, V1g), log_l in batches[m]:
                step = max(1, pairs // len(xb))
                for c in range(0, len(rows), step):
                    r, Wr = rows[c:c + step], W_rows[c:c + step]
                    f = decoder_output(z, Wr, dec.v_hidden[r], dec.v_skip[r], dec.bias[r], V1g, V2, b2,
                                       dec.normalized, grouped=(zg, cols[m:m + 1]))
                    if log_l is None:
                        ll = lk.gaussian_log_lik(xb[:, r], f, noise[r])
                    else:
                        ll = lk.nb_log_lik(xb[:, r], torch.exp(log_l).unsqueeze(-1) * F.softplus(f),
                                           torch.exp(noise[r]))
                    total[c:c + step, t] += ll.sum(0)
        return total

    owner = [list(range(M))] * module.n_shared + [[m] for m, k in enumerate(module.n_specific) for _ in range(k)]
    drop = torch.zeros_like(W, dtype=torch.bool)
    on = W.abs() > threshold
    # each feature's log-likelihood per study at the current mask; NaN: not computed yet
    current = torch.full((W.shape[0], M), float("nan"), dtype=W.dtype, device=W.device)
    columns = torch.nonzero(on.any(0)).flatten().tolist()
    n_in = torch.bincount(study, minlength=M).tolist()
    samples = [sum(n_in[m] for m in owner[k]) for k in range(W.shape[1])]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # Each (feature, study) needed is evaluated once at the current mask, then once per column at 0.
        owned = torch.zeros(W.shape[1], M, device=W.device)
        for k, studies in enumerate(owner):
            owned[k, studies] = 1.0
        needed = (on.to(owned.dtype) @ owned) > 0                            # (G, M)
        total = int((needed.sum(0).cpu() * torch.tensor(n_in)).sum()) + sum(
            int(on[:, k].sum()) * samples[k] for k in columns)
        bar = tqdm(total=total, desc="MSSVAE mask check", unit="eval", unit_scale=True)
    for i, k in enumerate(columns):
        rows, studies = torch.nonzero(on[:, k]).flatten(), owner[k]
        now = current[rows][:, studies]
        stale = torch.isnan(now).any(1)
        if stale.any():
            redo = rows[stale]
            now[stale] = feature_log_lik(redo, W[redo], studies)
            current[redo[:, None], torch.tensor(studies, device=W.device)] = now[stale]
            if bar is not None:
                bar.update(len(redo) * samples[k])
        W0 = W[rows].clone()
        W0[:, k] = 0.0
        at0 = feature_log_lik(rows, W0, studies)
        if bar is not None:
            bar.update(len(rows) * samples[k])
            bar.set_postfix_str(f"column {i + 1}/{len(columns)}", refresh=False)
        gain = (now - at0).sum(1)
        w = W[rows, k]
        cost = prior_weight * (ssl_log_density(torch.zeros_like(w), eta[k], lambda0, lambda1)
                               - ssl_log_density(w, eta[k], lambda0, lambda1))
        out = gain < cost
        drop[rows[out], k] = True
        W[rows[out], k] = 0.0
        # A dropped feature's likelihood is now at0, already computed: in a dense fit nearly every entry
        # drops, and recomputing it for the next column doubled the check.  The other studies' terms
        # are unchanged (z~_k is 0 there).
        current[rows[out][:, None], torch.tensor(studies, device=W.device)] = at0[out]
    if bar is not None:
        bar.close()
    return drop
