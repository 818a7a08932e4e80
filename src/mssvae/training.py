"""The training loop (Appendix B.2.3): balanced minibatches, E-step, Adam M-step, η update.

Kept apart from the module (which computes the objective) and from the estimator (which talks to
users), the way scvi-tools splits module / training plan / model.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import distributed as dist

from .module import LossTerms, MSSVAEModule
from .spike_slab import Lambda0Schedule, m_step_eta, m_step_lambda1

# Smoothing of the running Fisher information that sets a calibrated prior weight (~100 steps).
INFO_DECAY = 0.99
# A mask column counts as active in the history when any |W_jk| exceeds this.
ACTIVE_THRESHOLD = 0.5
# The scalar terms of a step (module.LossTerms) that the history averages over each epoch.
TERM_NAMES = tuple(f.name for f in fields(LossTerms) if f.name != "fisher_info_features")
# Eager steps before a CUDA graph is captured (cuBLAS workspaces, autograd's buffers), per graph.
GRAPH_WARMUP_STEPS = 2


class TrainingDivergedError(FloatingPointError):
    """Raised when the loss becomes NaN/inf; the module keeps the last finite parameters."""


@dataclass
class TrainingConfig:
    max_epochs: int
    batch_size: int
    lr: float
    lr_W: float
    lambda1: float | tuple[float, float, float]   # a constant, or one value per λ0 annealing stage
    schedule: Lambda0Schedule
    a: float
    b: float
    prior_weight: float | None        # fixed weight of the spike-and-slab terms, or None: calibrated
    prior_scale: float                # calibrated weight = prior_scale · N · (running mean Fisher information)
    noise_prior: tuple[float, float] | None
    library_prior: tuple[float, float] | None
    chunk_size: int | None
    progress: bool = False
    # A test hook: a callable(epoch, step) → bool that poisons the loss with NaN when true.
    fault_injection: object = None
    autocast_dtype: torch.dtype | None = None   # bf16 autocast of the forward pass (CUDA)
    per_feature_prior: bool = False   # spread the calibrated weight over features ∝ their own Î_j
    feature_fraction: float = 1.0     # share of the features whose terms each step evaluates (unbiased)
    kl_weight: float = 1.0            # multiplier of the factors' KL terms, reached after kl_warmup
    kl_warmup: float = 0.0            # share of the epochs over which that multiplier rises from 1
    kl_free: float = 0.0              # nats per sample a factor's KL must pass before the extra weight acts
    feature_seed: int = 0             # seeds the feature subsets: the same on every DDP rank
    noise_warmup: float = 0.0         # share of the epochs with one noise parameter for all features
    lr_decay: float = 0.0             # share of the last epochs over which every learning rate falls to 0
    lambda1_empirical: bool = False   # λ1 from its M-step at every step (starting at ``lambda1``)

    def lambda1_at(self, epoch: int) -> float:
        """The fixed slab penalty of this epoch (the starting value when it is empirical)."""
        if isinstance(self.lambda1, tuple):
            return float(self.lambda1[self.schedule.stage(epoch, self.max_epochs)])
        return float(self.lambda1)


@dataclass
class TrainingResult:
    history: list[dict] = field(default_factory=list)
    converged: bool = True
    stop_reason: str = "max_epochs"
    # train(stop_after=E): the state after epoch E ("paused"), for train(resume=...) to continue from
    paused_state: tuple[dict, dict] | None = None


class BalancedBatches:
    """Minibatches with equal numbers of samples from every study (Appendix B.2.3).

    The paper uses WeightedRandomSampler with weights ∝ 1/n_m.  We draw the same expected
    composition with less variance: each batch holds ``per_study = max(2, batch_size // M)``
    samples of every study (≥ 2 so each study encoder's batch norm has a batch), taken without
    replacement from a reshuffled cycle of that study's samples, so a small study is reused
    within a batch only when per_study > n_m.  An epoch is ceil(N / batch_size) steps.
    With ``world_size`` processes each draws per_study = max(2, batch_size // (M · world_size)).
    Each sample of study m carries weight n_m / per_study: the weighted batch sum is an unbiased
    estimate of the N-sample sum of Eq. 2.4.
    """

    def __init__(self, study: np.ndarray, batch_size: int, generator: torch.Generator, world_size: int = 1):
        self.n_total = len(study)
        self.groups = [np.flatnonzero(study == s) for s in range(int(study.max()) + 1)]
        # Data-parallel: each of the world_size processes draws its share of the batch.
        self.per_study = max(2, batch_size // (len(self.groups) * world_size))
        self.steps_per_epoch = max(1, math.ceil(self.n_total / batch_size))
        self.gen = generator
        self._queues = [np.empty(0, dtype=np.int64) for _ in self.groups]
        weights = [len(g) / self.per_study for g in self.groups]
        self.weight = np.concatenate([np.full(self.per_study, w) for w in weights])

    def _take(self, s: int) -> np.ndarray:
        q = self._queues[s]
        if len(q) < self.per_study:
            # All the reshuffled cycles needed at once: one concatenation, linear in per_study even
            # when the batch is many times a small study (batch_size >> N).
            cycles = -(-(self.per_study - len(q)) // len(self.groups[s]))
            perms = [self.groups[s][torch.randperm(len(self.groups[s]), generator=self.gen).numpy()]
                     for _ in range(cycles)]
            q = np.concatenate([q, *perms])
        self._queues[s] = q[self.per_study:]
        return q[: self.per_study]

    def next(self) -> np.ndarray:
        """Indices of the next batch, grouped study by study (in study order)."""
        return np.concatenate([self._take(s) for s in range(len(self.groups))])

    def study_slices(self) -> list[slice]:
        """The rows of each study in every batch: ``per_study`` rows each, in study order."""
        return [slice(s * self.per_study, (s + 1) * self.per_study) for s in range(len(self.groups))]


def train(module: MSSVAEModule, X: torch.Tensor, study: torch.Tensor, cfg: TrainingConfig,
          generator: torch.Generator, resume: tuple[dict, dict] | None = None,
          on_epoch_end: Callable[[int, Callable[[], tuple[dict, dict]]], None] | None = None,
          stop_after: int | None = None) -> TrainingResult:
    """Fit ``module`` in place on X (N, G) with study codes (N,) (both already on the device).

    ``stop_after``: pause after that many epochs (of a schedule still ``cfg.max_epochs`` long), with
    ``stop_reason`` "paused" and the state in ``paused_state`` (a resume already past it pauses at once).

    ``resume``: (tensors, meta) of :func:`training_state` at the end of an earlier epoch; training
    continues from the next epoch exactly as if it had not stopped.  ``on_epoch_end(epoch, state)``
    is called after each completed epoch with a function that returns that state (built only when
    called, so a caller that checkpoints every k epochs pays for it every k epochs).

    A step never waits for the device (except with the per-feature prior): its scalars (the terms
    for the history, the running Fisher information, a non-finite-loss flag) stay on the device and
    are read once per epoch.  So on a
    GPU the host runs ahead of the kernels, and a step can be replayed as a CUDA graph
    (:class:`_GraphStep`).  A non-finite loss is found at the end of its epoch, and the module goes
    back to the end of the previous epoch, as it would had the step stopped at once.
    """
    device = X.device
    world = dist.get_world_size() if _distributed() else 1
    if world > 1:
        _check_same_data(X, study)
    sampler = BalancedBatches(study.cpu().numpy(), cfg.batch_size, generator, world)
    weight = torch.as_tensor(sampler.weight, dtype=X.dtype, device=device)
    groups = sampler.study_slices()
    # Data-parallel training (torchrun): DDP averages the gradients of the ranks' unbiased
    # estimates, and it broadcasts rank 0's buffers (batch-norm statistics) at each forward.
    # The spike-and-slab terms are in every rank's loss, so the average counts them once.
    net = module if world == 1 else torch.nn.parallel.DistributedDataParallel(module)
    graphs = use_cuda_graphs(device, world, cfg)
    adam_groups = param_groups(module, cfg.lr, cfg.lr_W, cfg.feature_fraction)
    base_lrs = [g["lr"] for g in adam_groups]
    optim = _adam(adam_groups, device, graphs)
    result = TrainingResult()
    prior_weight = cfg.prior_weight
    start = 0
    if resume is not None:
        start, info_ema, prior_weight = _restore(resume, module, optim, sampler, generator, result)
    elif prior_weight is None:
        info_ema = _probe_information(module, X, study, sampler, weight, cfg)
        if world > 1:
            probe = torch.tensor([info_ema], dtype=torch.float64, device=device)  # NCCL reduces on the GPU
            dist.all_reduce(probe)
            info_ema = float(probe) / world
    else:
        info_ema = None
    # The step's running scalars, kept on the device (read once per epoch).
    info_t = torch.tensor(info_ema or 0.0, dtype=torch.float64, device=device)
    weight_t = torch.tensor(prior_weight or 0.0, dtype=torch.float64, device=device)
    sums = torch.zeros(len(TERM_NAMES), dtype=torch.float64, device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    # The slab penalty of the step: a number per annealing stage, or (lambda1_empirical) this device
    # scalar, which its M-step updates in place; it also carries a fixed λ1 to the history.
    lambda1_t = torch.tensor(cfg.lambda1_at(start), dtype=X.dtype, device=device)
    if resume is not None and "lambda1" in resume[0]:
        lambda1_t.copy_(resume[0]["lambda1"])
    row_info = None  # running per-feature Fisher information (per_feature_prior)
    if resume is not None and "row_info" in resume[0]:
        row_info = resume[0]["row_info"].to(device)
    # Feature subsampling: every step draws ceil(fraction · G) features without replacement.  One
    # generator for all ranks, so DDP ranks see the same features and their information agrees.
    G = X.shape[1]
    n_features_step = math.ceil(cfg.feature_fraction * G) if cfg.feature_fraction < 1.0 else G
    feature_gen = torch.Generator().manual_seed(cfg.feature_seed)
    if resume is not None and "rng.features" in resume[0]:
        feature_gen.set_state(resume[0]["rng.features"])
    # Noise warm-up: the first epochs share one noise parameter (its mean) across features, so a
    # feature whose signal the decoder has not yet learnt cannot take a low φ and lose its weight
    # in the likelihood.  Starting every feature at the mean keeps them equal (identical gradients
    # and Adam states) until the warm-up ends; then each feature's parameter moves on its own.
    warm_epochs = int(round(cfg.noise_warmup * cfg.max_epochs))
    if warm_epochs and start == 0:
        with torch.no_grad():
            noise = module.log_var if module.likelihood == "gaussian" else module.log_phi
            noise.fill_(noise.mean())
    last_good = [t.detach().clone() for t in module.state_dict().values()]
    # The loss of the first step, at the initial parameters: the yardstick of the blow-up check.
    first_loss = None if resume is None else resume[0].get("first_loss")

    def state(epoch: int) -> tuple[dict, dict]:
        tensors, meta = training_state(module, optim, sampler, generator, epoch, info_ema, prior_weight,
                                       result.history)
        if row_info is not None:
            tensors["row_info"] = row_info
        tensors["rng.features"] = feature_gen.get_state()
        tensors["lambda1"] = lambda1_t.detach().cpu()
        if first_loss is not None:
            tensors["first_loss"] = first_loss.detach().cpu()
        return tensors, meta

    def step(idx, features, lambda0: float, lambda1: float | None, kl_now: float, tie_noise: bool,
             poison: bool = False) -> None:
        """One optimiser step on the batch X[idx] (and the features ``features``), without a host sync;
        ``lambda1`` None: the empirical λ1 on the device."""
        nonlocal row_info
        pw = cfg.prior_weight
        if pw is None:
            weight_t.copy_(cfg.prior_scale * sampler.n_total * info_t)
            pw = weight_t.to(X.dtype)
        with autocast(device, cfg.autocast_dtype, cache=not graphs):
            terms, p_star = net(
                X[idx], study[idx], weight, sampler.n_total, lambda0, lambda1_t if lambda1 is None else lambda1,
                cfg.a, cfg.b,
                pw, cfg.noise_prior, cfg.library_prior, cfg.chunk_size,
                None if row_info is None else (row_info / row_info.mean()).to(X.dtype), features,
                kl_now, tie_noise, kl_free=cfg.kl_free, groups=groups,
            )
        if world > 1:
            # One small all-reduce keeps the calibrated weight identical on every rank, and
            # makes a NaN on any rank stop all of them at the same epoch (no rank hangs).
            shared = torch.stack([terms.loss.detach(), terms.fisher_info.detach()])
            dist.all_reduce(shared)
            terms.fisher_info = shared[1] / world
            if cfg.per_feature_prior:
                dist.all_reduce(terms.fisher_info_features)
                terms.fisher_info_features /= world
            terms.loss = terms.loss + 0.0 * shared[0]
        if cfg.prior_weight is None:
            info = terms.fisher_info.detach().double()
            info_t.copy_(torch.where(torch.isfinite(info), INFO_DECAY * info_t + (1.0 - INFO_DECAY) * info, info_t))
        if cfg.per_feature_prior and bool(torch.isfinite(terms.fisher_info_features).all()):
            new = terms.fisher_info_features.detach().double()
            if row_info is None:   # features not yet seen start at the mean of those seen
                row_info = new.mean().expand(G).clone() if features is not None else new
            seen = slice(None) if features is None else features
            row_info[seen] = INFO_DECAY * row_info[seen] + (1.0 - INFO_DECAY) * new
        loss = terms.loss * float("nan") if poison else terms.loss
        bad.logical_or_(~torch.isfinite(loss.detach()))
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            # M-step for η with the p* of this step's E-step (Appendix B.2.1).
            module.eta.copy_(m_step_eta(p_star, cfg.a, cfg.b))
            if cfg.lambda1_empirical:
                lambda1_t.copy_(m_step_lambda1(module.W, p_star, lambda0))
            sums.add_(torch.stack([getattr(terms, k).detach().double() for k in TERM_NAMES]))

    runner = _GraphStep(step) if graphs else None
    pause = stop_after is not None and stop_after < cfg.max_epochs
    iterator = range(start, stop_after if pause else cfg.max_epochs)
    if cfg.progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="MSSVAE", unit="epoch", initial=start, total=cfg.max_epochs)
    module.train()
    try:
        for epoch in iterator:
            lambda0 = cfg.schedule(epoch, cfg.max_epochs)
            lambda1 = None if cfg.lambda1_empirical else cfg.lambda1_at(epoch)
            if lambda1 is not None:
                lambda1_t.fill_(lambda1)
            kl_now = kl_weight_at(epoch, cfg.max_epochs, cfg.kl_weight, cfg.kl_warmup)
            lr_factor = lr_factor_at(epoch, cfg.max_epochs, cfg.lr_decay)
            for group, base in zip(optim.param_groups, base_lrs):
                if torch.is_tensor(group["lr"]):   # read by the captured graphs: set in place
                    group["lr"].fill_(base * lr_factor)
                else:
                    group["lr"] = base * lr_factor
            # The epoch's batches (and feature subsets) go to the device in one copy.
            batches = _to_device(np.stack([sampler.next() for _ in range(sampler.steps_per_epoch)]), device)
            subsets = None
            if n_features_step < G:
                draws = [torch.randperm(G, generator=feature_gen)[:n_features_step].sort().values
                         for _ in range(sampler.steps_per_epoch)]
                subsets = _to_device(torch.stack(draws), device)
            key = (lambda0, lambda1, kl_now, epoch < warm_epochs)
            # During a KL ramp the weight changes every epoch, and a graph per epoch would cost more
            # than it saves: those epochs run eagerly.  (The learning rates are device tensors
            # under graphs, so their decay needs no new graph.)
            replay = runner is not None and kl_now == cfg.kl_weight
            for i in range(sampler.steps_per_epoch):
                features = None if subsets is None else subsets[i]
                if replay:
                    runner(key, batches[i], features)
                else:
                    poison = cfg.fault_injection is not None and cfg.fault_injection(epoch, i)
                    step(batches[i], features, *key, poison=poison)
                if first_loss is None:
                    first_loss = sums[TERM_NAMES.index("loss")].clone()
            if world > 1:  # the history is the mean over ranks, the same on every rank
                dist.all_reduce(sums)
                sums /= world
            # The epoch's one look at the device: its sums, the flag, the weight and the active columns.
            active = (module.W.detach().abs() > ACTIVE_THRESHOLD).any(0)
            readout = torch.cat([sums, info_t.view(1), weight_t.view(1), lambda1_t.double().view(1),
                                 bad.double().view(1),
                                 active[: module.n_shared].sum().double().view(1),
                                 active[module.n_shared:].sum().double().view(1)]).tolist()
            sums.zero_()
            *totals, info_now, weight_now, lambda1_now, is_bad, n_shared_on, n_specific_on = readout
            if is_bad:
                module.load_state_dict(dict(zip(module.state_dict(), last_good)))
                result.converged = False
                result.stop_reason = f"diverged in epoch {epoch + 1}"
                err = TrainingDivergedError(
                    f"Training diverged in epoch {epoch + 1} of {cfg.max_epochs}: the loss became NaN or "
                    f"infinite. The model keeps the parameters after {epoch} completed epoch(s) (the last "
                    "finite state). Try a smaller `lr`/`lr_W` or check the input scale."
                )
                err.history = result.history
                raise err
            if cfg.prior_weight is None:
                info_ema, prior_weight = info_now, weight_now
            record = {k: v / sampler.steps_per_epoch for k, v in zip(TERM_NAMES, totals)}
            record.update(epoch=epoch, lambda0=lambda0, lambda1=lambda1_now, prior_weight=prior_weight,
                          kl_weight=kl_now, lr_factor=lr_factor, active_shared=int(n_shared_on),
                          active_specific=int(n_specific_on))
            result.history.append(record)
            with torch.no_grad():
                for dst, src in zip(last_good, module.state_dict().values()):
                    dst.copy_(src)
            if cfg.progress:
                iterator.set_postfix(loss=f"{record['loss']:.3g}", K_S=record["active_shared"])
            if on_epoch_end is not None:
                on_epoch_end(epoch, lambda e=epoch: state(e + 1))
    except KeyboardInterrupt:
        module.load_state_dict(dict(zip(module.state_dict(), last_good)))
        result.converged = False
        result.stop_reason = f"interrupted after {len(result.history)} epochs"
        warnings.warn(
            f"Training interrupted: the model keeps the parameters after {len(result.history)} completed "
            f"epoch(s) of {cfg.max_epochs} and is marked not converged; the mask check (prune_masks) is skipped.",
            RuntimeWarning,
            stacklevel=2,
        )
    if pause and result.converged:
        result.stop_reason = "paused"
        result.paused_state = state(len(result.history))
    elif result.converged and result.history and first_loss is not None:
        if world > 1:   # every rank judges by the same yardstick (the last loss is already rank-averaged)
            first_loss = first_loss.to(device)
            dist.all_reduce(first_loss)
            first_loss /= world
        _check_no_blow_up(float(first_loss), result, cfg)
    if world > 1:
        # DDP broadcasts rank 0's buffers at the start of each forward, so the last step's batch-norm
        # update stayed on each rank; without this, scoring, the mask check and transform (which read
        # the running statistics) would differ between ranks.
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)
    module.eval()
    return result


# Parameters at W's learning rate (lr_W), and the other per-feature parameters (row j is used by
# feature j alone), at the network's rate (lr).
FAST = ("W", "log_phi")
FEATURE_ROWS = ("decoder.v_hidden", "decoder.v_skip", "decoder.bias", "log_var")


def param_groups(module: MSSVAEModule, lr: float, lr_W: float, feature_fraction: float = 1.0) -> list[dict]:
    """Adam's parameter groups: W and the NB log φ at ``lr_W``; the decoder's per-feature rows (and
    the Gaussian log σ²), then the rest of the network, at ``lr``.

    The NB inverse dispersions move with W's learning rate: φ starts by moments, which mix the
    signal into the dispersion (φ ≈ 0.3 where the noise has φ ≈ 50), and at the network rate
    log φ moves ~0.001 per step, so the likelihood stayed flat and the calibrated prior weight,
    which follows its information, stayed low for the whole fit (docs/design.md, "Counts (NB)", item 1).

    With feature subsampling (a share f of the features per step) every per-feature parameter (a
    row of W, φ_j or σ²_j, feature j's decoder weights) gets a gradient 1/f times larger in a share f
    of the steps.  That keeps the objective unbiased, but Adam divides by the root of the running
    second moment, which grows by 1/f, so such a parameter moves only √f as far per step as with
    every feature (a constant gradient, measured: 0.315 at f = 0.1, 0.221 at f = 0.05).  Their
    learning rates are multiplied by 1/√f, so a row moves per step as it would at full cost
    (docs/design.md, "Counts (NB)", item 20).
    """
    per_feature = 1.0 / math.sqrt(feature_fraction) if feature_fraction < 1.0 else 1.0
    named = dict(module.named_parameters())
    fast = [named[n] for n in FAST if n in named]
    rows = [named[n] for n in FEATURE_ROWS if n in named]
    others = [p for n, p in named.items() if n not in FAST + FEATURE_ROWS]
    return [{"params": fast, "lr": lr_W * per_feature}, {"params": rows, "lr": lr * per_feature},
            {"params": others, "lr": lr}]


def kl_weight_at(epoch: int, max_epochs: int, target: float, warmup: float) -> float:
    """Multiplier of the factors' KL at ``epoch``: rises linearly from 1 (Eq. 2.4) to ``target``
    over the first ``warmup`` share of the epochs, then stays there.

    Why a ramp (docs/design.md, "Counts (NB)", item 15): a KL weight above 1 breaks the rotations that the
    likelihood alone cannot tell apart, but applied from the first step it keeps the factors from
    forming before λ0 steps up to its second value, and the spike then switches them off.
    """
    ramp = warmup * max_epochs
    if ramp <= 0 or epoch >= ramp:
        return float(target)
    return 1.0 + (target - 1.0) * epoch / ramp


def lr_factor_at(epoch: int, max_epochs: int, decay: float) -> float:
    """Multiplier of every learning rate at ``epoch``: 1, then over the last D = round(decay ·
    max_epochs) epochs a linear fall, D/(D+1) at the first of them to 1/(D+1) at the last.

    Why (docs/design.md, "Counts (NB)", item 21): with feature subsampling each gene's parameters see a
    gradient scaled by 1/f in a share f of the steps, so Adam keeps the entries the spike holds
    at 0 jittering at about the step size (median |w| 0.036 at f = 0.1 against 0.0015 at full
    cost).  Shrinking the steps at the end lets the spike pull them back to 0.
    """
    D = int(round(decay * max_epochs))
    if D <= 0 or epoch < max_epochs - D:
        return 1.0
    return (max_epochs - epoch) / (D + 1)


def training_state(module, optim, sampler, generator, epochs_done, info_ema, prior_weight, history):
    """Everything the loop needs to continue after ``epochs_done`` epochs: (tensors, JSON-able meta).

    Tensors: the module's parameters and buffers (η is a buffer; p* and λ* are recomputed from W
    and η at every step, so the E-step needs nothing more), Adam's moments and step counts, the
    global torch RNG (reparameterisation draws), the sampler's generator and its per-study queues.
    The λ0 annealing position is the epoch itself.
    """
    tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
    for i, st in optim.state_dict()["state"].items():
        for k, v in st.items():
            tensors[f"optim.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.sampler"] = generator.get_state()
    if module.W.is_cuda:
        tensors["rng.cuda"] = torch.cuda.get_rng_state(module.W.device)
    for s, q in enumerate(sampler._queues):
        tensors[f"sampler.queue.{s}"] = torch.as_tensor(q, dtype=torch.int64)
    meta = dict(epochs_done=int(epochs_done), info_ema=info_ema, prior_weight=prior_weight,
                history=history)
    return tensors, meta


# A fit whose last epoch's loss is this many times above the first step's (in units of that loss, at
# least 1) has blown up without a NaN: a learning rate of 10 took a §4.1 loss from 345 to 1.2e16.
# Healthy fits end below their first step (§4.1 and §4.2 fits, 30-300 epochs: -0.66 to -0.02 in these
# units), and tiny fits can end above it: 2-epoch NB fits of 6 samples of up to 1e3 counts with batch 1
# up to 2.3 units up in 130 random draws (benchmarks/results/blow_up_ratio.txt), and one the hypothesis
# test found 102 up.  The margin is two orders of magnitude beyond that one (docs/bad_inputs.md).
BLOW_UP_FACTOR = 1e4


def _check_no_blow_up(first: float, result: TrainingResult, cfg: TrainingConfig) -> None:
    last = result.history[-1]["loss"]
    if last > first + BLOW_UP_FACTOR * max(abs(first), 1.0):
        result.stop_reason = "blew up"
        warnings.warn(
            f"Training blew up: the loss of the last epoch ({last:.3g}) is far above that of the first "
            f"step ({first:.3g}), so the fitted parameters are probably meaningless; the fit is marked not "
            f"converged. Try a smaller "
            f"`lr` ({cfg.lr:g}) / `lr_W` ({cfg.lr_W:g}) or check the input scale.",
            RuntimeWarning,
            stacklevel=3,
        )


def _restore(resume, module, optim, sampler, generator, result) -> tuple[int, float | None, float | None]:
    tensors, meta = resume
    device = module.W.device
    module.load_state_dict({k[len("module."):]: v for k, v in tensors.items() if k.startswith("module.")})
    opt_state = optim.state_dict()
    restored: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, name = key.split(".", 2)
            # Adam keeps `step` on the CPU unless capturable; everything else lives with its parameter.
            restored.setdefault(int(i), {})[name] = v if name == "step" else v.to(device)
    opt_state["state"] = restored
    optim.load_state_dict(opt_state)
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.sampler"])
    if "rng.cuda" in tensors and device.type == "cuda":
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)
    sampler._queues = [tensors[f"sampler.queue.{s}"].numpy() for s in range(len(sampler.groups))]
    result.history = list(meta["history"])
    return int(meta["epochs_done"]), meta["info_ema"], meta["prior_weight"]


def autocast(device: torch.device, dtype: torch.dtype | None, cache: bool = True):
    """Mixed precision for the forward pass (matmuls in ``dtype``; torch keeps reductions, exp/log and
    the loss in fp32); a no-op when dtype is None.  Backward follows the forward's dtypes.
    ``cache=False`` inside CUDA graphs: a cached cast would be a tensor from outside the graph."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype, cache_enabled=cache)


def use_cuda_graphs(device: torch.device, world: int, cfg: TrainingConfig) -> bool:
    """Whether training replays its steps as CUDA graphs: on one CUDA device, unless a step needs the
    host (the per-feature prior's running information, the NaN test hook) or graphs are switched off
    with MSSVAE_CUDA_GRAPHS=0 (to compare with the eager step)."""
    return (device.type == "cuda" and world == 1 and not cfg.per_feature_prior and cfg.fault_injection is None
            and os.environ.get("MSSVAE_CUDA_GRAPHS", "1") != "0")


class _GraphStep:
    """A training step replayed as a CUDA graph (issue 9, goal 4).

    A step launches about a thousand small kernels; at the platelet size most of them take a few
    microseconds on an H200, so launching them from Python sets the pace.  Replaying a captured
    graph launches them all at once.  A graph bakes in its Python constants, so one is captured
    per (λ0, fixed λ1, KL weight, tied noise) key: three or four per fit, since λ0 takes three values (the
    epochs of a KL ramp, whose weight changes every epoch, run eagerly).  The batch indices and
    feature subsets are copied into static buffers before each replay; the calibrated prior weight,
    the history sums and the NaN flag are device tensors the step updates in place.  Before each
    capture, GRAPH_WARMUP_STEPS real steps run eagerly on a side stream, as torch's recipe for
    whole-network capture asks.
    """

    def __init__(self, step: Callable[..., None]):
        self.step = step
        self.key = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warm = 0
        self.idx: torch.Tensor | None = None
        self.features: torch.Tensor | None = None

    def __call__(self, key: tuple, idx: torch.Tensor, features: torch.Tensor | None) -> None:
        if self.idx is None:
            self.idx = torch.empty_like(idx)
            self.features = None if features is None else torch.empty_like(features)
        self.idx.copy_(idx)
        if features is not None:
            self.features.copy_(features)
        if key != self.key:
            self.key, self.graph, self.warm = key, None, 0
        if self.graph is None:
            if self.warm < GRAPH_WARMUP_STEPS:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self.step(self.idx, self.features, *key)
                torch.cuda.current_stream().wait_stream(side)
                self.warm += 1
                return
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.step(self.idx, self.features, *key)
        self.graph.replay()


def _to_device(values, device: torch.device) -> torch.Tensor:
    """A host array on ``device``; to a GPU through pinned memory, so the copy does not wait for it."""
    t = torch.as_tensor(values)
    if device.type != "cuda":
        return t
    return t.pin_memory().to(device, non_blocking=True)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _check_same_data(X: torch.Tensor, study: torch.Tensor) -> None:
    """Every rank must be given the whole data (the sampler splits each batch between the ranks).

    A rank with other data, a shard say, would run another number of steps and wait forever in a
    collective; so the ranks first compare the shape and a checksum of X and study, and all of
    them raise together when any differs."""
    stamp = torch.stack([torch.tensor(float(n), dtype=torch.float64, device=X.device) for n in X.shape]
                        + [X.sum(dtype=torch.float64), study.sum(dtype=torch.float64)])
    low, high = stamp.clone(), stamp.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise ValueError(f"data-parallel fit: rank {dist.get_rank()} was given other data than another rank "
                         f"(X of shape {tuple(X.shape)}, its sum or the study labels differ); every rank must "
                         "call fit with the whole X and study: the ranks share each batch, not the samples")


def _adam(groups: list[dict], device: torch.device, graphs: bool) -> torch.optim.Adam:
    """Adam; on a CPU its fused kernel (torch >= 2.4).

    At the platelet size the module has ~100 parameter tensors and 4 million entries: the default
    per-tensor update took 10 ms a step on 2 CPU threads, the fused one 2 ms (docs/performance.md),
    the same arithmetic up to float rounding.  With CUDA graphs the step count must live on the GPU
    (``capturable``), and so do the learning rates: a graph would bake a float rate in, and
    ``lr_decay`` changes it every epoch.  The GPU keeps the update it was measured with.
    """
    if device.type == "cpu":
        try:
            return torch.optim.Adam(groups, fused=True)
        except (RuntimeError, TypeError):   # an older torch: no fused CPU kernel
            pass
    if graphs:
        groups = [dict(g, lr=torch.tensor(float(g["lr"]), device=device)) for g in groups]
    return torch.optim.Adam(groups, capturable=graphs)


def _probe_information(module, X, study, sampler, weight, cfg) -> float:
    """Mean Fisher information per data entry at the starting parameters (one batch, no update)."""
    idx = torch.as_tensor(np.concatenate([np.resize(g, sampler.per_study) for g in sampler.groups]), device=X.device)
    module.eval()
    with torch.no_grad():
        terms, _ = module.loss(X[idx], study[idx], weight, sampler.n_total, 1.0, cfg.lambda1_at(0), cfg.a, cfg.b,
                               0.0, cfg.noise_prior, cfg.library_prior, cfg.chunk_size)
    module.train()
    return float(terms.fisher_info)


BOUND_SAMPLE_TERMS = ("log_lik", "kl_shared", "kl_specific", "kl_library")


@torch.no_grad()
def evaluate_bound(module: MSSVAEModule, X: torch.Tensor, study: torch.Tensor, settings: dict, n_draws: int,
                   batch_size: int, seed: int, chunk_size: int | None) -> dict[str, float]:
    """Eq. 2.4 / N on (X, study): Σ_i (E_q log p(x_i | z_i) − KL_i) + log p(W | η) + log p(noise), per sample.

    Prior and KL at weight 1 (the paper's objective), the encoders in evaluation mode, the one-draw
    Monte Carlo estimate averaged over ``n_draws`` draws from a generator seeded by ``seed`` (the
    global random state is restored).  ``settings``: lambda0, lambda1, a, b, noise_prior, library_prior.
    Returns ``bound`` and its terms: the per-sample ones of BOUND_SAMPLE_TERMS (each already / N)
    and the global ``log_prior_masks`` and ``log_prior_noise`` (the prior terms once, / N).
    """
    was_training = module.training
    module.eval()
    N = X.shape[0]
    ones = torch.ones(min(batch_size, N), dtype=X.dtype, device=X.device)
    sums = dict.fromkeys(BOUND_SAMPLE_TERMS, 0.0)
    global_terms = None
    devices = [X.device] if X.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for _ in range(n_draws):
                for s in range(0, N, batch_size):
                    xb, sb = X[s:s + batch_size], study[s:s + batch_size]
                    terms, _ = module.loss(xb, sb, ones[: xb.shape[0]], N, settings["lambda0"], settings["lambda1"],
                                           settings["a"], settings["b"], 1.0, settings["noise_prior"],
                                           settings["library_prior"], chunk_size)
                    # Per-sample terms are sums over the batch / N; the prior terms are global (once).
                    # One read of the device per batch; the sums run in double precision.
                    values = torch.stack([getattr(terms, k).detach() for k in BOUND_SAMPLE_TERMS]).tolist()
                    for k, v in zip(BOUND_SAMPLE_TERMS, values):
                        sums[k] += v
                    if global_terms is None:
                        global_terms = dict(zip(("log_prior_masks", "log_prior_noise"),
                                                torch.stack([terms.log_prior_masks, terms.log_prior_noise]).tolist()))
    finally:
        module.train(was_training)
    out = {k: v / n_draws for k, v in sums.items()}
    out.update(global_terms)
    out["bound"] = (out["log_lik"] - out["kl_shared"] - out["kl_specific"] - out["kl_library"]
                    + out["log_prior_masks"] + out["log_prior_noise"])
    return out
