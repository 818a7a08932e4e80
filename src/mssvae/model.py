"""The user-facing estimator: ``MSSVAE(...).fit(X, study)``, scikit-learn style."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator

from . import _validation as val
from . import checkpoint as ckpt
from . import likelihoods as lk
from .initialisation import varimax_masks
from .merging import apply_merge_plan, block_plan, fold_composites, merge_plan
from .module import MSSVAEModule
from .pruning import map_prune
from .spike_slab import Lambda0Schedule, e_step
from .training import TrainingConfig, TrainingDivergedError, evaluate_bound, train

FORMAT_VERSION = 1
logger = logging.getLogger("mssvae")
# prior_weight="auto" means "fixed" for Gaussian data and "calibrated" for counts (docs/design.md,
# "Prior/likelihood balance"; numbers in benchmarks/README.md).
# "fixed" is N / 300: on the §4.1 simulation (N = 3000) a weight of 10 gave the best recovery of
# {1, 3, 10, 20, 30}; the per-step drift that the penalty gives W under minibatch noise scales with
# prior_weight / N, so the weight is kept proportional to N.
AUTO_PRIOR_SAMPLES_PER_UNIT = 300.0
# "calibrated" follows the likelihood's precision: weight = prior_scale · N · Î, where Î is the
# running mean Fisher information of one data entry about the decoder output (1/σ² for Gaussian,
# φμ/(φ+μ)·(d log μ/d o)² for NB).  An entry of W then has to beat a fixed effect size measured on
# the likelihood's own scale.  It starts low while φ is still at its moment estimate, which
# mixes signal into the dispersion, and rises as the fit explains the signal.
DEFAULT_PRIOR_SCALE = 2e-3
# NB inverse dispersion φ at the start of training: "auto" keeps the paper's moment estimate.  It
# counts the planted signal as over-dispersion (φ ≈ 0.3 on §4.2, where the noise has φ ≈ 50), and
# a gene whose curve the decoder has not learnt keeps a flat likelihood: the sin genes ended at
# φ ≈ 0.15 and mostly out of every gene set, linear genes at φ ≈ 12.  A low-noise start (φ = 50)
# brought the sin genes in, but every shared column stayed on, with a calibrated or a fixed prior
# weight alike (docs/design.md, "Counts (NB)", item 13).
DISPERSION_INIT = "moments"
# dispersion_warmup="auto" (NB): one inverse dispersion for all genes until λ0's annealing ends
# (5 % + 25 % of the epochs, Appendix C.2.1), then one per gene.  With a φ per gene from the start
# the genes whose curve the decoder has not yet learnt (the sin genes of §4.2) drift to a low φ,
# and a gene with a low φ weighs little in the likelihood, so its curve is never learnt.  Tied,
# every gene weighs alike while the gene sets form.  At N = 600 (5 seeds) it raised the median
# shared consensus from 0.57 to 0.71; at N = 285 with 7 groups it lowered it (0.57 → 0.48) with a
# KL weight of 1, not with 2 from the first step (0.72) (docs/design.md, "Counts (NB)", items 14-15).
# Gaussian: 0, since σ² already starts equal for all features (Appendix C.2.2) and has the
# inverse-gamma prior.
# kl_weight="auto" (NB): 2, with kl_free=0.5 and no warm-up.  With Eq. 2.4's KL (weight 1) true
# factors came out as rotated mixtures that the count likelihood cannot tell apart; a weight of 2
# breaks them (docs/design.md, "Counts (NB)", items 14-16).  Applied to the whole KL from the first step it
# kept the shared factors of §4.2 at N = 600 from forming before λ0 stepped up, and the spike
# switched most of them off (K̂_S 3-5 of 10); a ramp from 1 (item 15) saved them but left the group
# blocks mixed.  kl_free=0.5: the extra weight acts only on the KL a factor carries above 0.5 nats
# per sample, so a factor still forming feels Eq. 2.4's KL alone.  At N = 600 this met every target
# (shared / group consensus 0.74 / 0.83 over 5 seeds, against 0.73 / 0.65 with the ramp); at
# N = 285 with 7 groups it did a little better than the ramp (0.61 / 0.62 against 0.58 / 0.63).
# Gaussian: 1 (Eq. 2.4).  The same rule gave 1.00 / 1.00 on §4.1 in every seed we ran, but on the
# 40-feature toy of the tests (150 epochs) it left a shared factor split over two latents in 2 of
# 4 seeds (item 16).
KL_WEIGHT_NB = 2.0
KL_FREE = 0.5
# kl_free="auto" (NB): fit with 0.5 and with 0 from the same seed and keep the higher Eq. 2.4 bound
# (MSSVAE.score, prior and KL at weight 1).  Each value fails where the other works: 0 switched true
# factors off at N = 600 (K̂_S 3-5 of 10) and 0.5 left rotated mixtures of the modules at N = 285
# with 7 groups; in every pair we fitted, the bound was higher for the fit with the better recovery
# (docs/design.md, "Counts (NB)", item 18).  It doubles the NB training time; pass kl_free=0.5 for one fit.
KL_FREE_CANDIDATES = (KL_FREE, 0.0)
# mask_init="auto" (NB): also fit from the varimax start (mssvae.initialisation) and keep the higher
# Eq. 2.4 bound, as kl_free="auto" does.  At the GSE68086 shape (N = 285, 7 groups, 6 seeds) the
# paper's W = 1 left rotated pairs of shared columns in 5 seeds and the varimax fits had the higher
# bound there (median shared / group consensus 0.67 / 0.83 → 0.90 / 0.89 with the choice); at
# N = 600 the W = 1 fits were better where both were scored (2 seeds) and the choice kept W = 1 in 5 of 5
# (docs/design.md, "Counts (NB)", items 25-26).  Gaussian: W = 1 alone (the paper's level on §4.1,
# where the varimax start lowered shared consensus in 4 of 4 seeds, 0.81 → 0.61-0.67).  Only with
# kl_free="auto": kl_free=0.5 stays one training.
MASK_INIT_CANDIDATES = ("ones", "varimax")
# Under kl_free="auto" the varimax start is fitted with kl_free=0.5 alone: its kl_free=0 fit had the
# lower bound in all 8 seeds above (by 15-150 nats per sample), so the choice costs 3 trainings, not 4.
VARIMAX_KL_FREE = (KL_FREE,)
# select_after="auto": the candidates (kl_free values, starts) train until every schedule has reached
# its final setting (λ0's annealing, the dispersion and KL warm-ups: 30 % of the epochs by default)
# plus SELECT_MARGIN of the epochs.  There each gets training's own estimate of its Eq. 2.4 bound
# (the mean over the last SELECT_WINDOW of the epochs, with its standard error), and only those within
# SELECT_Z standard errors of the best train on to the end, where `score` decides.  In the training
# histories of 14 seeds at N = 285 and 600 (docs/design.md, item 27) the candidates this stopped were
# 3.6 or more standard errors behind and none was the final bound's choice; in the two seeds where the
# early lead was not that choice they were 0.2 and 0.8 apart, so both trained on.  A default NB fit
# costs about 1.8 trainings instead of 3 (1.14 candidates trained on per seed there).
SELECT_MARGIN = 0.05
SELECT_WINDOW = 0.025
SELECT_MIN_WINDOW = 10
SELECT_Z = 3.0
# The columns of ``MSSVAE.candidates_``.
CANDIDATE_COLUMNS = ("mask_init", "kl_free", "estimate", "estimate_se", "trained_to_end", "score", "kept")
# prune_masks=True: after training, each entry with |w| > 0.5 is compared with w = 0 under Eq. 2.4
# (mssvae.pruning).  On the GSE68086-shaped NB simulation the fits hold entries the decoder ignores
# (gain from keeping them ≈ −40 nats against hundreds for real entries); they filled the columns of
# the sin genes' factors with other modules' genes, and merging carried them into the gene sets
# (docs/design.md, "Counts (NB)", item 17).
# min_anchors=2: the paper's Assumption 1 (two anchor features per factor); see mssvae.merging.
MIN_ANCHORS = 2
# lr_decay="auto" with feature_subsample < 1: the last 20 % of the epochs at linearly falling rates.
# Subsampled steps leave the entries the spike holds at 0 jittering at about Adam's step size
# (median |w| of the entries ≤ 0.5: 0.036 at f = 0.1 against 0.0015 at full cost; 0.0005 with the
# decay, at the same recovery, in seeds 2 and 4 of the platelet-size simulation); docs/design.md,
# "Counts (NB)", item 21.
LR_DECAY_SUBSAMPLED = 0.2
# merge_dependent="auto": merge two factors of a block when either one's posterior means predict the
# other's with leave-one-out 3-NN R² ≥ 0.5.  Re-scored on saved fits, it raised group consensus
# in every fit where it changed anything and lowered none: Gaussian §4.1 (10 seeds), NB at N = 600
# and N = 285 (docs/design.md, "Counts (NB)", item 11).
MERGE_THRESHOLD = 0.5
# The slab penalty of Appendix C.2.1; `lambda1="empirical"` starts from it (docs/design.md, item 24).
LAMBDA1_PAPER = 0.1
SUPPORT_THRESHOLD = 0.5  # a feature belongs to factor k iff |W_jk| > 0.5 (§5); used everywhere

# Defaults per likelihood: Table 2 of the paper (Gaussian column; RNA column for NB), except the
# Gaussian network learning rate, 0.003 instead of 0.01: on §4.1 (10 seeds, benchmarks/README.md)
# it raised the median group consensus from 0.71 to 0.78 and shared consensus from 0.97 to 1.0.
DEFAULTS = {
    "gaussian": dict(n_shared=30, n_specific=5, hidden=(50, 50), max_epochs=500, lr=3e-3, lr_W=1e-2,
                     normalize_decoder=False),
    "nb": dict(n_shared=50, n_specific=10, hidden=(256, 128), max_epochs=800, lr=1e-3, lr_W=1e-2,
               normalize_decoder=True),
}


def restart_seeds(random_state: int, n_init: int) -> list[int]:
    """The seed of each of ``n_init`` restarts: ``random_state`` first (so one restart is the plain
    fit), then independent streams from ``SeedSequence([random_state, r])`` (non-negative seeds only)."""
    base = random_state % 2**64   # SeedSequence takes non-negative entropy; the first seed stays as given
    return [random_state] + [int(np.random.SeedSequence([base, r]).generate_state(1, np.uint64)[0] >> 1)
                             for r in range(1, n_init)]


def _kl_free_candidates(value, likelihood: str, kl_weight: float) -> tuple[float, ...]:
    """The kl_free value of each fit to try, in order (``kl_free``: "auto", a number or a sequence).

    With ``kl_weight == 1`` there is no extra weight for kl_free to act on, so every candidate would
    give the same fit: only the first is kept."""
    if isinstance(value, str):
        value = _auto(value, "kl_free", KL_FREE_CANDIDATES if likelihood == "nb" else (KL_FREE,),
                      "a non-negative number or a sequence of them")
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) == 0:
            raise ValueError("`kl_free` must be 'auto', a non-negative number or a non-empty sequence of them; got []")
        values = tuple(val.check_positive_float(v, "kl_free", allow_zero=True) for v in value)
        if len(set(values)) != len(values):
            raise ValueError(f"`kl_free` lists a value twice: {list(value)!r}")
    else:
        values = (val.check_positive_float(value, "kl_free", allow_zero=True),)
    return values[:1] if kl_weight == 1.0 else values


def _mask_init_candidates(value, likelihood: str, kl_free_auto: bool) -> tuple[str, ...]:
    """The starting masks to fit from, in order (``mask_init``: "auto", a name or a sequence of names).

    "auto" compares the starts only in the NB default fit (``kl_free="auto"`` too): a kl_free given
    by hand asks for one training, and the single-fit recipes (the CPU recipe's kl_free=0.5) keep it."""
    if isinstance(value, str) and value == "auto":
        return MASK_INIT_CANDIDATES if likelihood == "nb" and kl_free_auto else ("ones",)
    names = tuple(value) if isinstance(value, (list, tuple)) and len(value) > 0 else (value,)
    for v in names:
        if not (isinstance(v, str) and v in MASK_INIT_CANDIDATES):
            raise ValueError(f"`mask_init` must be 'auto', 'ones', 'varimax' or a sequence of the two; got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"`mask_init` lists a start twice: {list(names)!r}")
    return names


def _fit_plan(starts: tuple[str, ...], kl_free: tuple[float, ...], kl_free_auto: bool) -> list[tuple[str, float]]:
    """The (mask_init, kl_free) pair of each training of one restart, in order."""
    return [(start, k) for start in starts
            for k in (VARIMAX_KL_FREE if kl_free_auto and start == "varimax" and len(kl_free) > 1 else kl_free)]


def _select_epoch(value, max_epochs: int, settled: float) -> tuple[int, int] | None:
    """(epoch after which the candidates are compared, epochs averaged before it), or None: at the end.

    ``settled``: the share of the epochs after which no schedule changes the objective any more."""
    share = _auto(value, "select_after", min(1.0, settled + SELECT_MARGIN), "a share in (0, 1]")
    share = val.check_fraction(share, "select_after", of="the epochs")
    epoch = math.ceil(share * max_epochs - 1e-9)   # (a share × epochs can land a hair above a whole number)
    if epoch >= max_epochs:
        return None
    # At least SELECT_MIN_WINDOW epochs for the spread: in a short fit the window reaches back into the
    # annealing, whose steps widen the spread, so fewer candidates stop early (the safe side).
    return epoch, min(epoch, max(SELECT_MIN_WINDOW, round(SELECT_WINDOW * max_epochs)))


def training_bound(history: pd.DataFrame, epoch: int, window: int) -> tuple[float, float]:
    """Eq. 2.4 per sample as training estimated it, and the standard error of that estimate.

    The mean over epochs ``epoch − window + 1 .. epoch`` of each epoch's minibatch estimate (the
    KL and the mask prior at weight 1, that epoch's λ0), and the standard deviation of the epochs'
    values about their straight-line trend over √window (the bound still rises while training).
    What ``select_after`` compares the candidates by: it needs no pass over the data (item 27)."""
    h = history.iloc[epoch - window:epoch]
    x = (h["log_lik"] - h["kl_shared"] - h["kl_specific"] - h["kl_library"] + h["log_prior_masks"]
         + h["log_prior_noise"]).to_numpy(dtype=float)
    if len(x) < 3:
        return float(x.mean()), math.inf   # no spread to measure: every candidate trains on
    t = np.arange(len(x))
    residual = x - np.polyval(np.polyfit(t, x, 1), t)
    return float(x.mean()), float(np.sqrt((residual ** 2).sum() / (len(x) - 2) / len(x)))


def _auto(value, name: str, auto, expected: str):
    """``auto`` for the word "auto"; any other word is refused, naming the argument."""
    if isinstance(value, str):
        if value == "auto":
            return auto
        raise ValueError(f"`{name}` must be 'auto' or {expected}; got {value!r}")
    return value


def _last_lambda1(history: pd.DataFrame, s: dict) -> float:
    """The λ1 a fit ended with: its last epoch's empirical value, or the fixed one."""
    if s["lambda1_empirical"] and len(history):
        return float(history["lambda1"].iloc[-1])
    return float(s["lambda1"][-1]) if isinstance(s["lambda1"], tuple) else s["lambda1"]


class MSSVAE(BaseEstimator):
    """Multi-study sparse variational autoencoder (Moran & Krishnan).

    Finds sparse loadings shared by all studies, W^(S) (G × K_S), and sparse loadings of each
    study alone, W^(m) (G × K_m), with a nonlinear decoder (§2.2), Gaussian or negative-binomial
    likelihood (§2.4), and spike-and-slab lasso priors that switch unneeded factors off.

    Parameters
    ----------
    n_shared : int or None
        Initial number of shared factors K_S (an upper bound; unused columns go to zero).
        None → Table 2 (30 Gaussian, 50 NB).
    n_specific : int, dict {study: int} or None
        Initial K_m per study. None → Table 2 (5 Gaussian, 10 NB).
    likelihood : {"gaussian", "nb"}
        "nb" needs raw counts.
    hidden : (int, int) or None
        Hidden layer sizes of encoders and decoder. None → Table 2.
    max_epochs : int or None
        None → Table 2 (500 Gaussian, 800 NB).
    batch_size : int
        Target minibatch size; each batch holds max(2, batch_size // M) samples of every study.
    lr, lr_W : float or None
        Adam learning rates for the networks and for W. None → Table 2 (NB: 0.001 and 0.01),
        except Gaussian lr = 0.003 rather than Table 2's 0.01 (measured: docs/results.md).
    lambda1 : float, (float, float, float) or "empirical"
        Slab penalty λ1 (0.1, the paper's); three values: one per λ0 annealing stage.  For counts
        from small cohorts (N ≈ 300) 1.0 recovered more on the §4.2 simulation; at N = 600 it was
        mixed (docs/design.md, "Counts (NB)", item 23).  "empirical": λ1 follows its M-step, 1 / the
        p*-weighted mean |w| of the slab entries, at every step (from 0.1, at most λ0 / 10; needs
        ``normalize_decoder=True``, item 24).
    lambda0 : (float, float, float)
        Spike penalties of the annealing schedule (1, 10, 15).
    anneal_fractions : (float, float)
        Fractions of the epochs spent at lambda0[0] and lambda0[1] (0.05, 0.25).
    a, b : float or None
        Beta(a, b) prior on the column inclusion rates η_k; b=None → G (Appendix C.2.1).
    prior_weight : float, "auto", "fixed" or "calibrated"
        Multiplier of the spike-and-slab log-prior against the N-sample likelihood; a float is
        used as given (1 is Eq. 2.4 exactly).  "fixed" = N / 300 (10 on the §4.1 simulation).
        "calibrated" follows the likelihood during training: ``prior_scale · N · Î``, with Î the
        running mean Fisher information of one data entry about the decoder output.  "auto" is
        "fixed" for Gaussian and "calibrated" for NB.  ``prior_weight_`` and the
        ``prior_weight`` column of ``history_`` record the values used.  See docs/design.md
        ("Prior/likelihood balance") for the measurements behind it.
    prior_scale : float
        Constant of the "calibrated" weight (2e-3).  Larger switches more entries and factors off.
    prior_per_feature : bool
        With a calibrated weight, give each feature's penalty row the weight
        ``prior_scale · N · Î_j`` from its own running Fisher information Î_j (same mean as the
        global rule), so highly expressed genes, whose likelihood is sharper, are penalised
        more.  Off by default: on the §4.2 simulation it raised the median shared consensus
        from 0.56 to 0.67 at N = 600 (5 of 5 seeds better) but lowered it at N = 285, M = 7
        (docs/design.md, "Counts (NB)", item 8).
    kl_weight : float or "auto"
        Multiplier of the factors' KL terms against the likelihood (1 = Eq. 2.4).  "auto" (default)
        is 2 for NB and 1 for Gaussian data.  Against a count likelihood, with a weight of 1 true
        factors came out as rotated mixtures of one another (docs/design.md, "Counts (NB)", items 14-16).
    kl_warmup : float in [0, 1] or "auto"
        Share of the epochs over which the KL multiplier rises linearly from 1 to ``kl_weight``
        (default 0: no ramp; "auto" is λ0's annealing period, ``sum(anneal_fractions)``, the
        default of item 15 before ``kl_free``).  ``history_["kl_weight"]`` records the multiplier
        of each epoch.
    kl_free : "auto", float ≥ 0, or a sequence of them
        Nats per sample.  The part ``kl_weight − 1`` of the multiplier acts on factor k only on the
        part of its KL (averaged over the minibatch's samples that have the factor) above
        ``kl_free``, so a factor that is still forming feels only Eq. 2.4's KL and the extra weight
        cannot switch it off (docs/design.md, item 16); 0: the multiplier acts on the whole KL.  Several
        values: one fit per value, from the same seed, and the fit with the higher Eq. 2.4 bound
        (:meth:`score` on the training data) is kept; a fit clearly behind at ``select_after`` stops
        there; ``candidate_scores_`` records those trained to the end.  "auto"
        (default): (0.5, 0) for NB and 0.5 for Gaussian data.  Neither value suits every data set
        (0 switched true factors off at N = 600, 0.5 left rotated mixtures at N = 285 with 7
        groups), and in each case the bound preferred the better fit (docs/design.md, item 18).  With
        ``kl_weight=1`` there is nothing for kl_free to act on, and only the first value is fitted.
    n_init : int
        Trainings from different seeds; the one with the highest Eq. 2.4 bound (:meth:`score` on the
        training data) is kept, as with several ``kl_free`` values (each restart fits each of them)
        and as MOFA2's ``select_model`` picks the highest ELBO among seeds.  Restart 0 uses
        ``random_state`` itself, so ``n_init=1`` (default) is the single fit; restart r > 0 uses a
        seed drawn from ``SeedSequence([random_state, r])``.  The objective is nonconvex: a seed can
        leave true factors mixed over several columns (docs/design.md, "Counts (NB)", item 19).
        ``init_scores_`` records each restart's bound.  Costs n_init trainings.
    feature_subsample : float
        Share of the features (0 < f ≤ 1) whose terms each training step evaluates: a new random
        subset every step, each per-feature term (likelihood, mask-prior row, noise prior) scaled
        by 1/f so the objective stays unbiased.  The decoder, which is nearly all the cost at
        RNA scale, then costs f as much per step; the encoders still read every feature.  Each
        feature's own parameters (W row, noise, decoder row) train at their learning rate × 1/√f,
        since Adam would otherwise move them √f as far per step (docs/design.md, "Counts (NB)", item 20).
        1.0 (default) is the paper's full objective.  Measured effect on recovery: docs/performance.md.
    lr_decay : "auto" or float in [0, 1]
        Share of the last epochs over which every learning rate falls linearly towards 0
        (:func:`mssvae.training.lr_factor_at`; ``history_["lr_factor"]`` records it); 0: constant
        rates, as the paper trains.  Subsampled steps leave the entries the spike holds at 0
        jittering at about Adam's step size; the decay lets them settle (docs/design.md, "Counts
        (NB)", item 21).  "auto" (default): LR_DECAY_SUBSAMPLED with ``feature_subsample < 1``, else 0.
    merge_dependent : "auto", float in (0, 1] or None
        After fitting, merge the active columns of one block whose factors are functions of one
        another (leave-one-out 3-nearest-neighbour R² of one factor's posterior means from the
        other's ≥ this threshold, either direction): the kept column's gene set becomes their union
        and the others are zeroed in ``W_shared_`` / ``W_specific_``.  The NB fit often learns a
        nonlinear factor z as two latents, z and a function of it (docs/design.md, "Counts (NB)", items 9 and 11).
        Then, after the anchor rule (``min_anchors``), a column whose factor is a function of two
        other factors of its block jointly, with at most half the genes of either (the same R², from
        the 3 nearest samples in the plane of the two), is folded into both: its genes join both
        gene sets and it is zeroed (``composite_factors_``).  Where two modules share genes, a fit
        can give the shared genes a latent of their own that mixes the two modules' factors
        (docs/design.md, "Counts (NB)", item 22).  "auto" = 0.5 for either likelihood; None or
        False: off (both).  The decoder keeps its own masks (``module_.W``); ``transform`` still
        returns every factor.
    prune_masks : bool
        After training, before merging: set to 0 every mask entry with |w| > 0.5 for which Eq. 2.4
        is higher at w = 0, the rest of the model fixed (the spike-and-slab lasso's own
        thresholding rule, with the likelihood computed through the decoder at the posterior
        means; :mod:`mssvae.pruning`).  It removes entries the decoder has learnt to ignore.
        True (default) for either likelihood; ``pruned_entries_`` counts them (docs/design.md,
        "Counts (NB)", item 17).
    min_anchors : int
        After fitting (pruning and merging), a column of a block whose gene set has fewer than this many
        anchor genes (genes in no other gene set of the block) is set aside as redundant: zeroed in
        ``W_shared_`` / ``W_specific_``, smallest first, recounting after each (2, the paper's
        Assumption 1: two anchor features per factor; 0: off).  Such a column is a duplicate or a
        mixture of gene sets that have columns of their own.  ``redundant_factors_`` names them;
        the decoder keeps them (docs/design.md, "Counts (NB)", item 14).
    mask_init : {"auto", "ones", "varimax"} or a sequence of "ones" and "varimax"
        Starting masks.  "ones": every entry of W at 1 (Appendix C.2.2).  "varimax": each column
        starts at the |loadings| of one varimax-rotated principal component of the
        log-normalised, study-centred data (:func:`mssvae.initialisation.varimax_masks`): a
        component whose scores vary in one study alone starts a column of that study, the others
        shared columns.  It gives the columns distinct gene sets from the first step, against the
        rotated pairs of shared columns that W = 1 leaves in small count cohorts (docs/design.md,
        "Counts (NB)", items 23 and 25).  Several: one fit from each start (each with every
        ``kl_free`` value) from the same seed, and the fit with the higher Eq. 2.4 bound is kept
        (``mask_init_``, ``start_scores_``; ``select_after`` says when they are compared).  "auto"
        (default): with NB data and ``kl_free="auto"`` (the NB defaults), W = 1 with kl_free 0.5 and 0
        and the varimax start with 0.5, 3 candidates in all; otherwise "ones", so a kl_free given by
        hand (``kl_free=0.5``: one training) keeps one start.  Neither start suits every data set
        (docs/design.md, item 26); on real GSE68086 counts the bound kept a varimax fit whose factors
        mostly had no |W| > 0.5, where "ones" gave enriched gene sets (item 29; the fit's warning
        then says so).
    select_after : "auto" or float in (0, 1]
        When a fit has several candidates (``kl_free`` values, ``mask_init`` starts), the share of
        the epochs they all train for.  There each gets training's estimate of its Eq. 2.4 bound
        per sample, the mean over the last 2.5 % of the epochs with its standard error
        (:func:`training_bound`); a candidate more than 3 standard errors behind the best stops, the
        others train on from where they paused (so each ends exactly as its single fit) and the
        highest :meth:`score` among them is kept.  "auto" (default): 5 % of the epochs after the
        last schedule settles (λ0's annealing, ``dispersion_warmup``, ``kl_warmup``), 0.35 for the
        NB defaults, whose 3 candidates then cost about 1.8 trainings.  1: every candidate trains to
        the end.  Restarts (``n_init``) are compared by :meth:`score` at the end either way
        (``candidates_``, ``select_epoch_``; docs/design.md, item 27).
    normalize_decoder : bool or None
        None → False for Gaussian (the paper's decoder), True for NB.  True fixes the norms of
        V1's columns, V2's rows and each feature's output weights, so only W carries scale;
        measured trade-offs in docs/design.md ("Prior/likelihood balance", item 4).
    dispersion_init : "auto", "moments" or float
        Starting inverse dispersion φ of the genes (NB only): "moments" (= "auto") is the paper's
        method-of-moments start (Appendix C.2.2), per gene; a number starts every gene there (50
        is BCV ≈ 0.14, a low-noise start).  φ is learnt either way; measured trade-off: docs/design.md,
        "Counts (NB)", item 13.
    dispersion_warmup : "auto" or float in [0, 1]
        Share of the epochs during which all genes share one inverse dispersion (the mean of their
        log φ), after which each gene's φ is learnt on its own.  "auto": the λ0 annealing period
        (``sum(anneal_fractions)``, 0.3) for NB, 0 for Gaussian (where a number ties the σ²).
        Without it, genes whose curve the decoder has not yet learnt take a low φ, weigh little in
        the likelihood and stay out of every gene set (docs/design.md, "Counts (NB)", items 12 and 14).
    noise_alpha : float
        α of the Inverse-Gamma noise prior (Gaussian only; 1.5).
    feature_chunk_size : int or None
        Decode features in chunks of this size to bound memory (None: chosen so that one
        chunk's activation stays under 2 MiB on a CPU, 2 GiB on a GPU: :func:`default_chunk_size`).
    device : {"auto", "cpu", "cuda", ...}
        "auto" uses CUDA when available.
    precision : {"auto", "fp32", "bf16"}
        Arithmetic of the training forward pass.  "auto": bf16 autocast on CUDA (the matmuls in
        bf16, reductions and the loss in fp32), fp32 on CPU.  "bf16" on a CPU is refused: without
        AVX512-BF16 it is ~50× slower than fp32 there.
    random_state : int
        Seed for initialisation, minibatches and Monte Carlo draws (CPU runs repeat exactly).
    verbose : bool
        Show a progress bar.

    Attributes
    ----------
    W_shared_ : ndarray (n_features, K_S)
    W_specific_ : dict {study: ndarray (n_features, K_m)}
    inclusion_shared_ : ndarray (n_features, K_S), posterior inclusion probabilities p*
    inclusion_specific_ : dict {study: ndarray (n_features, K_m)}
    eta_shared_, eta_specific_ : column inclusion rates η
    active_shared_ : ndarray of int, indices of shared columns with any |W| > 0.5
    active_specific_ : dict {study: ndarray of int}
    n_shared_active_ : int, estimated K_S;  n_specific_active_ : dict {study: int}
    studies_ : list of study labels (sorted);  n_features_in_ : int;  feature_names_in_ : ndarray
    factor_names_ : list of str, columns of ``transform`` output
    noise_variance_ : ndarray (n_features,) (Gaussian);  inverse_dispersion_ : ndarray (NB)
    history_ : pandas.DataFrame, one row per epoch: the loss and each term, λ0, λ1, active columns
    merged_factors_ : list of lists of factor names, each a merged group, the kept factor first
    merged_groups_ : the same as column indices of ``transform``'s output
    redundant_factors_ : list of factor names set aside by ``min_anchors``;  redundant_columns_ : their indices
    composite_factors_ : list of [composite, parent, parent] factor names folded by ``merge_dependent``;
        composite_columns_ : the same as column indices
    pruned_entries_ : int, mask entries set to 0 by ``prune_masks``
    kl_free_ : float, the ``kl_free`` of the fit kept;  candidate_scores_ : dict {kl_free: Eq. 2.4 per
        sample on the training data} of the start kept when several of its fits trained to the end, else
        empty (for the restart kept)
    mask_init_ : str, the start of the fit kept ("ones" or "varimax");  start_scores_ : dict {start:
        its best Eq. 2.4 per sample} when fits from several starts trained to the end, else empty
    candidates_ : pandas.DataFrame, one row per candidate fit of the restart kept (empty with one):
        mask_init, kl_free, estimate and estimate_se (training's Eq. 2.4 per sample at
        ``select_epoch_`` and its standard error; NaN when compared at the end), trained_to_end,
        score (the final Eq. 2.4 per sample; NaN if it stopped early), kept
    select_epoch_ : int, the epoch after which the candidates were compared (``max_epochs``: all
        trained to the end); 0 when there was one candidate
    init_scores_ : ndarray (n_init,), Eq. 2.4 per sample of each restart's kept fit (NaN for a restart
        not run after an interruption; empty when ``n_init=1`` and one training: nothing was compared)
    init_seed_ : int, the seed of the fit kept (``MSSVAE(random_state=init_seed_)`` trains it alone)
    factor_kl_ : ndarray (K_S + Σ K_m,), mean KL of each factor's posterior from its prior, in
        nats, over the samples that own it; ≈ 0 for factors the model does not use
    prior_weight_ : float, the prior weight at the last step;  device_ : str;  converged_ : bool
    lambda1_ : float, the slab penalty used (the fitted one for ``lambda1="empirical"``)
    module_ : the fitted torch module
    """

    def __init__(self, n_shared=None, n_specific=None, likelihood="gaussian", hidden=None, max_epochs=None,
                 batch_size=512, lr=None, lr_W=None, lambda1=LAMBDA1_PAPER, lambda0=(1.0, 10.0, 15.0),
                 anneal_fractions=(0.05, 0.25), a=1.0, b=None, prior_weight="auto", prior_scale=DEFAULT_PRIOR_SCALE,
                 prior_per_feature=False, kl_weight="auto", kl_warmup=0.0, kl_free="auto",
                 n_init=1, feature_subsample=1.0, lr_decay="auto", normalize_decoder=None,
                 merge_dependent="auto", prune_masks=True, min_anchors=MIN_ANCHORS, dispersion_init="auto",
                 dispersion_warmup="auto", mask_init="auto", select_after="auto",
                 noise_alpha=1.5, feature_chunk_size=None,
                 device="auto", precision="auto", random_state=0, verbose=False):
        self.n_shared = n_shared
        self.n_specific = n_specific
        self.likelihood = likelihood
        self.hidden = hidden
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_W = lr_W
        self.lambda1 = lambda1
        self.lambda0 = lambda0
        self.anneal_fractions = anneal_fractions
        self.a = a
        self.b = b
        self.prior_weight = prior_weight
        self.prior_scale = prior_scale
        self.prior_per_feature = prior_per_feature
        self.feature_subsample = feature_subsample
        self.lr_decay = lr_decay
        self.kl_weight = kl_weight
        self.kl_warmup = kl_warmup
        self.kl_free = kl_free
        self.n_init = n_init
        self.normalize_decoder = normalize_decoder
        self.merge_dependent = merge_dependent
        self.prune_masks = prune_masks
        self.min_anchors = min_anchors
        self.dispersion_init = dispersion_init
        self.dispersion_warmup = dispersion_warmup
        self.mask_init = mask_init
        self.select_after = select_after
        self.noise_alpha = noise_alpha
        self.feature_chunk_size = feature_chunk_size
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ settings
    def _settings(self, labels: list, n_features: int, n_samples: int) -> dict:
        """Validated hyperparameters with Table 2 defaults filled in."""
        likelihood = val.check_likelihood(self.likelihood)
        d = DEFAULTS[likelihood]

        def pick(value, key):
            return d[key] if value is None else value

        s = dict(likelihood=likelihood)
        s["n_shared"] = val.check_positive_int(pick(self.n_shared, "n_shared"), "n_shared", allow_zero=True)
        s["n_specific"] = val.check_n_specific(pick(self.n_specific, "n_specific"), labels)
        if s["n_shared"] + sum(s["n_specific"]) == 0:
            raise ValueError("`n_shared` and `n_specific` are both 0: the model needs at least one factor")
        s["hidden"] = val.check_hidden(pick(self.hidden, "hidden"))
        s["max_epochs"] = val.check_positive_int(pick(self.max_epochs, "max_epochs"), "max_epochs")
        s["batch_size"] = val.check_positive_int(self.batch_size, "batch_size")
        s["lr"] = val.check_positive_float(pick(self.lr, "lr"), "lr")
        s["lr_W"] = val.check_positive_float(pick(self.lr_W, "lr_W"), "lr_W")
        s["schedule"] = Lambda0Schedule(val.check_lambda0(self.lambda0),
                                        val.check_anneal_fractions(self.anneal_fractions))
        s["a"] = val.check_positive_float(self.a, "a")
        s["b"] = float(n_features) if self.b is None else val.check_positive_float(self.b, "b")
        s["prior_scale"] = val.check_positive_float(self.prior_scale, "prior_scale")
        s["prior_per_feature"] = val.check_bool(self.prior_per_feature, "prior_per_feature")
        s["feature_subsample"] = val.check_fraction(self.feature_subsample, "feature_subsample")
        decay = _auto(self.lr_decay, "lr_decay", LR_DECAY_SUBSAMPLED if s["feature_subsample"] < 1.0 else 0.0,
                      "a share in [0, 1]")
        s["lr_decay"] = val.check_fraction(decay, "lr_decay", allow_zero=True, of="the epochs")
        annealing = sum(s["schedule"].fractions)   # λ0's annealing period: the warm-ups' "auto"
        kl = _auto(self.kl_weight, "kl_weight", KL_WEIGHT_NB if likelihood == "nb" else 1.0, "a positive number")
        s["kl_weight"] = val.check_positive_float(kl, "kl_weight")
        ramp = _auto(self.kl_warmup, "kl_warmup", annealing, "a share in [0, 1]")
        s["kl_warmup"] = val.check_fraction(ramp, "kl_warmup", allow_zero=True, of="the epochs")
        s["kl_free"] = _kl_free_candidates(self.kl_free, likelihood, s["kl_weight"])
        s["n_init"] = val.check_positive_int(self.n_init, "n_init")
        s["normalize_decoder"] = val.check_bool(pick(self.normalize_decoder, "normalize_decoder"), "normalize_decoder")
        s["lambda1_empirical"] = isinstance(self.lambda1, str) and self.lambda1 == "empirical"
        if s["lambda1_empirical"] and not s["normalize_decoder"]:
            raise ValueError("`lambda1='empirical'` needs normalize_decoder=True: with the paper's decoder the "
                             "likelihood does not fix the scale of W, so a slab fitted to |W| would shrink it "
                             "without end (docs/design.md, item 24)")
        if isinstance(self.lambda1, str) and not s["lambda1_empirical"]:
            raise ValueError(f"`lambda1` must be a positive number, 3 of them or 'empirical'; got {self.lambda1!r}")
        if s["lambda1_empirical"]:   # it starts at the paper's 0.1 (and the first annealing stage caps it there)
            s["lambda1"] = LAMBDA1_PAPER
        elif isinstance(self.lambda1, (tuple, list)):   # one per λ0 annealing stage
            if len(self.lambda1) != 3:
                raise ValueError(f"`lambda1` must have 3 values (the annealing stages) or one; "
                                 f"got {tuple(self.lambda1)}")
            s["lambda1"] = tuple(val.check_positive_float(v, f"lambda1[{i}]") for i, v in enumerate(self.lambda1))
        else:
            s["lambda1"] = val.check_positive_float(self.lambda1, "lambda1")
        val.check_spike_above_slab(s["schedule"].values, s["lambda1"])
        merge = self.merge_dependent
        if isinstance(merge, str) and merge == "auto":
            merge = MERGE_THRESHOLD
        if merge is not None and merge is not False:
            if isinstance(merge, bool) or not isinstance(merge, (int, float)) or not 0.0 < merge <= 1.0:
                raise ValueError(f"`merge_dependent` must be 'auto', None/False or a threshold in (0, 1]; "
                                 f"got {self.merge_dependent!r}")
            merge = float(merge)
        s["merge_dependent"] = merge or None
        init = self.dispersion_init
        if isinstance(init, str) and init in ("auto", "moments"):
            init = DISPERSION_INIT if init == "auto" else init
        elif isinstance(init, bool) or not isinstance(init, (int, float)) or not 0 < init < math.inf:
            raise ValueError(f"`dispersion_init` must be 'auto', 'moments' or a positive number; got {init!r}")
        else:
            init = float(init)
        s["dispersion_init"] = init
        s["min_anchors"] = val.check_positive_int(self.min_anchors, "min_anchors", allow_zero=True)
        s["prune_masks"] = val.check_bool(self.prune_masks, "prune_masks")
        warmup = _auto(self.dispersion_warmup, "dispersion_warmup", annealing if likelihood == "nb" else 0.0,
                       "a share in [0, 1]")
        s["dispersion_warmup"] = val.check_fraction(warmup, "dispersion_warmup", allow_zero=True, of="the epochs")
        s["mask_init"] = _mask_init_candidates(self.mask_init, likelihood, isinstance(self.kl_free, str))
        s["plan"] = _fit_plan(s["mask_init"], s["kl_free"], isinstance(self.kl_free, str))
        settled = max(annealing, s["dispersion_warmup"], s["kl_warmup"])
        s["select"] = _select_epoch(self.select_after, s["max_epochs"], settled)
        mode = self.prior_weight
        if isinstance(mode, str) and mode == "auto":
            mode = "calibrated" if likelihood == "nb" else "fixed"
        if isinstance(mode, str) and mode == "calibrated":
            s["prior_weight"] = None  # set during training: prior_scale · N · Î (see DEFAULT_PRIOR_SCALE)
        elif isinstance(mode, str) and mode == "fixed":
            s["prior_weight"] = n_samples / AUTO_PRIOR_SAMPLES_PER_UNIT
        else:
            s["prior_weight"] = val.check_positive_float(self.prior_weight, "prior_weight")
        s["noise_alpha"] = val.check_positive_float(self.noise_alpha, "noise_alpha")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"`precision` must be 'auto', 'fp32' or 'bf16'; got {self.precision!r}")
        if self.feature_chunk_size is not None:
            val.check_positive_int(self.feature_chunk_size, "feature_chunk_size")
        val.check_random_state(self.random_state)
        val.check_bool(self.verbose, "verbose")
        return s

    def _autocast_dtype(self, device: torch.device) -> torch.dtype | None:
        if self.precision == "bf16" and device.type != "cuda":
            raise ValueError("`precision='bf16'` needs a CUDA device: on a CPU without AVX512-BF16 it is ~50× "
                             "slower than fp32 (use 'auto' or 'fp32')")
        if self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda"):
            return torch.bfloat16
        return None

    def _resolve_device(self) -> torch.device:
        device = val.check_device(self.device)
        if device.type == "cuda" and device.index is None and _rank() is not None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))  # one GPU per torchrun process
        return device

    # ------------------------------------------------------------------ fit
    def fit(self, X, study, feature_names=None, checkpoint_dir=None, checkpoint_every: int = 10):
        """Fit the model.

        Parameters
        ----------
        X : array-like or scipy.sparse, (n_samples, n_features)
            Values (Gaussian) or raw counts (NB).
        study : array-like, (n_samples,)
            Study (group) label of each sample; at least 2 studies with ≥ 2 samples each.
        feature_names : sequence of str, optional
            Defaults to the columns of a DataFrame X, else "feature_0", ….
        checkpoint_dir : path, optional
            Write a checkpoint (``checkpoint.safetensors``) there every ``checkpoint_every`` epochs
            and at the end.  When the folder already holds a checkpoint of this data and these
            settings, training resumes from it (and logs so on the "mssvae" logger); on CPU the
            result is bit-for-bit that of an uninterrupted fit.  A checkpoint of other data or
            settings is refused with a ValueError.
        checkpoint_every : int
            Epochs between checkpoints (the last epoch is always written).

        Returns
        -------
        self
        """
        if feature_names is None and isinstance(X, pd.DataFrame):
            feature_names = X.columns.astype(str).to_numpy()
        # X is checked first (its errors are the commonest); a bad `likelihood` is named by _settings below.
        known = isinstance(self.likelihood, str) and self.likelihood in val.LIKELIHOODS
        study = val.align_study(study, X)
        X = val.check_X(X, self.likelihood if known else "gaussian")
        study = val.check_study(study, X.shape[0])
        labels, codes = val.check_studies_for_fit(study)
        s = self._settings(labels, X.shape[1], X.shape[0])
        self.prior_weight_ = s["prior_weight"]
        self._normalize_decoder = s["normalize_decoder"]
        G = X.shape[1]
        feature_names = val.check_feature_names(feature_names, G)
        val.warn_constant_features(X, feature_names)
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) \
                or checkpoint_every < 1:
            raise ValueError(f"`checkpoint_every` must be a positive integer; got {checkpoint_every!r}")
        if checkpoint_dir is not None and Path(checkpoint_dir).exists() and not Path(checkpoint_dir).is_dir():
            # found before training, not at the first checkpoint minutes in
            raise ValueError(f"`checkpoint_dir` {checkpoint_dir} exists and is not a folder")
        if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and _rank() is None:
            warnings.warn(f"WORLD_SIZE is {os.environ['WORLD_SIZE']} (torchrun?) but torch.distributed is not "
                          "initialised: this process fits the whole model on its own. For data-parallel training "
                          "call torch.distributed.init_process_group(...) before fit.", RuntimeWarning, stacklevel=2)

        self.studies_ = labels
        self.merged_groups_, self.redundant_columns_, self.composite_columns_ = [], [], []
        self.n_features_in_ = G
        self.feature_names_in_ = feature_names
        self._n_specific = s["n_specific"]
        self._hidden = s["hidden"]
        self._data_priors = self._empirical_priors(X, s)
        # one varimax start for every restart and kl_free candidate: it depends on the data alone
        starts = {"ones": None}
        if "varimax" in s["mask_init"]:
            starts["varimax"] = varimax_masks(X, codes, s["n_shared"], s["n_specific"], s["likelihood"],
                                              int(self.random_state))
        device = self._resolve_device()
        self.device_ = str(device)

        Xt = torch.as_tensor(X, device=device)
        st = torch.as_tensor(codes, device=device)
        if checkpoint_dir is not None and _rank() is not None:
            raise ValueError("`checkpoint_dir` is not supported in data-parallel (torch.distributed) fits")
        plan, n_init = s["plan"], s["n_init"]
        several_kl = len({k for _, k in plan}) > 1   # kl_free in the checkpoint folders' names
        compared = n_init > 1 or len(plan) > 1   # fits are scored only when there is a choice
        # With several candidates and select_after < 1, each trains to the select epoch only, and those
        # not clearly behind there train on to the end (docs/design.md, item 27).
        select = s["select"] if len(plan) > 1 else None
        self.select_epoch_ = 0 if len(plan) == 1 else select[0] if select else s["max_epochs"]
        self.candidate_scores_, self.start_scores_ = {}, {}
        self.candidates_ = pd.DataFrame(columns=CANDIDATE_COLUMNS)
        self.init_scores_ = np.full(n_init if compared else 0, np.nan)
        best, interrupted = None, False
        for r, seed in enumerate(restart_seeds(int(self.random_state), n_init)):
            fits = []
            for start, kl_free in plan:
                # A restart's candidates start from its seed: the same initial parameters (masks aside)
                # and batches, so they differ only in the start and kl_free (docs/design.md, items 18, 26).
                parts = ([f"init={r}"] * (n_init > 1) + [f"mask_init={start}"] * (len(s["mask_init"]) > 1)
                         + [f"kl_free={kl_free:g}"] * several_kl)
                folder = None if checkpoint_dir is None else Path(checkpoint_dir).joinpath(*parts)
                fitted = self._train_once(s, seed, start, starts[start], kl_free, X, codes, Xt, st, device, folder,
                                          checkpoint_every, stop_after=select and select[0])
                if fitted["interrupted"]:   # Ctrl-C: stop here, keep this fit as it is
                    best, interrupted = fitted, True
                    break
                fitted["folder"] = folder
                if select:
                    fitted["estimate"], fitted["estimate_se"] = training_bound(fitted["history_"], *select)
                    logger.info("restart %d (seed %d), mask_init=%s, kl_free=%g: training's Eq. 2.4 per sample "
                                "over epochs %d-%d %.2f ± %.2f", r, seed, start, kl_free,
                                select[0] - select[1] + 1, select[0], fitted["estimate"], fitted["estimate_se"])
                fits.append(fitted)
            if not interrupted and select:
                # the candidates not more than SELECT_Z standard errors behind the best train on from where
                # they paused (usually one: a near tie is settled by the final bound)
                lead = max(fits, key=lambda f: f["estimate"])
                for i, f in enumerate(fits):
                    f["trained_to_end"] = lead["estimate"] - f["estimate"] <= SELECT_Z * math.hypot(
                        lead["estimate_se"], f["estimate_se"])
                    if not f["trained_to_end"]:
                        continue
                    m, k = f["mask_init_"], f["kl_free_"]
                    fits[i] = dict(self._train_once(s, seed, m, starts[m], k, X, codes, Xt, st, device, f["folder"],
                                                    checkpoint_every, resume=f["state"]),
                                   estimate=f["estimate"], estimate_se=f["estimate_se"], trained_to_end=True)
                    if fits[i]["interrupted"]:
                        best, interrupted = fits[i], True
                        break
            if interrupted:
                break
            finished = [f for f in fits if f.get("trained_to_end", True)]
            for f in finished:
                if compared:   # score reads the module and λ1 of the fit
                    self.module_, self.lambda1_ = f["module_"], f["lambda1_"]
                    f["score"] = self.score(X, study)
                    logger.info("restart %d (seed %d), mask_init=%s, kl_free=%g: Eq. 2.4 per sample %.4f", r, seed,
                                f["mask_init_"], f["kl_free_"], f["score"])
            kept = max(finished, key=lambda f: f["score"])
            if compared:
                self.init_scores_[r] = kept["score"]
            if best is None or kept["score"] > best["score"]:
                best = kept
                self.candidates_ = pd.DataFrame(
                    [(f["mask_init_"], f["kl_free_"], f.get("estimate", np.nan), f.get("estimate_se", np.nan),
                      f.get("trained_to_end", True), f["score"] if f.get("trained_to_end", True) else np.nan,
                      f is kept) for f in fits], columns=CANDIDATE_COLUMNS) if len(fits) > 1 else self.candidates_
                # the final bounds of the candidates trained to the end: kl_free's for the start kept, and
                # each start's best, where there was a choice
                own, by_start = {}, {}
                for f in finished:
                    m, v = f["mask_init_"], f["score"]
                    by_start[m] = max(v, by_start.get(m, -math.inf))
                    if m == kept["mask_init_"]:
                        own[f["kl_free_"]] = v
                self.candidate_scores_ = own if len(own) > 1 else {}
                self.start_scores_ = by_start if len(by_start) > 1 else {}
        for key in ("module_", "history_", "prior_weight_", "converged_", "pruned_entries_", "kl_free_", "init_seed_",
                    "lambda1_", "mask_init_"):
            setattr(self, key, best[key])
        W = self.module_.W.detach().cpu().numpy()
        # transform needs only the module, not the fitted attributes
        Z = None if s["merge_dependent"] is None else self.transform(X, study)
        groups, redundant, composites = block_plan(W, Z, codes, self.module_.n_shared, self._n_specific,
                                                   s["merge_dependent"], s["min_anchors"])
        self.merged_groups_, self.redundant_columns_ = groups, redundant
        self.composite_columns_ = [list(c) for c in composites]
        self._set_fitted_attributes(s)
        self.factor_kl_ = self._factor_kl(Xt, st)
        self._warn_hidden_factors()
        self._warn_small_studies(np.bincount(codes, minlength=len(labels)))
        return self

    def _train_once(self, s: dict, seed: int, start: str, masks, kl_free: float, X, codes, Xt, st, device,
                    checkpoint_dir, checkpoint_every, stop_after: int | None = None, resume=None) -> dict:
        """Build, train and prune one module from ``seed``, the starting ``masks`` (None: W = 1) and this
        ``kl_free``; the fitted state as a dict.

        ``stop_after``: pause after that epoch, unpruned, with the training state in the dict's "state";
        ``resume``: such a state to continue from (instead of a checkpoint in ``checkpoint_dir``).
        Sets ``module_`` (``score`` reads it); a diverged fit raises with its last good state set."""
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            module = self._build_module(s["n_shared"])
            self._initialise(module, X, masks)
            module.to(device)
            self.module_ = module
            cfg = TrainingConfig(
                max_epochs=s["max_epochs"], batch_size=s["batch_size"], lr=s["lr"], lr_W=s["lr_W"],
                lambda1=s["lambda1"], schedule=s["schedule"], a=s["a"], b=s["b"],
                prior_weight=s["prior_weight"], prior_scale=s["prior_scale"],
                noise_prior=self._data_priors.get("noise"),
                library_prior=self._data_priors.get("library"),
                chunk_size=self._feature_chunk(s["batch_size"]), progress=bool(self.verbose),
                fault_injection=getattr(self, "_fault_injection", None),
                autocast_dtype=self._autocast_dtype(device),
                per_feature_prior=s["prior_per_feature"] and s["prior_weight"] is None,
                feature_fraction=s["feature_subsample"], kl_weight=s["kl_weight"], feature_seed=seed,
                noise_warmup=s["dispersion_warmup"], kl_warmup=s["kl_warmup"], kl_free=kl_free,
                lr_decay=s["lr_decay"], lambda1_empirical=s["lambda1_empirical"],
            )
            rank = _rank() or 0
            if rank:
                # Data-parallel: each rank draws its own batches and noise (DDP starts every rank
                # from rank 0's parameters); rank 0 draws exactly what a single process would.
                torch.manual_seed(seed + 7919 * rank)
            gen = torch.Generator().manual_seed(seed + 7919 * rank)
            on_epoch_end = None
            if checkpoint_dir is not None:
                found, on_epoch_end = self._checkpointing(checkpoint_dir, int(checkpoint_every), X, codes,
                                                          s["max_epochs"], look=resume is None, pause=stop_after)
                resume = resume or found
            try:
                result = train(module, Xt, st, cfg, gen, resume=resume, on_epoch_end=on_epoch_end,
                               stop_after=stop_after)
            except TrainingDivergedError as err:
                self.converged_, self.kl_free_, self.init_seed_, self.mask_init_ = False, kl_free, seed, start
                self.history_ = pd.DataFrame(err.history)
                self.lambda1_ = _last_lambda1(self.history_, s)
                self._set_fitted_attributes(s)
                raise
        history = pd.DataFrame(result.history)
        prior_weight = float(history["prior_weight"].iloc[-1]) if len(history) else s["prior_weight"]
        self.lambda1_ = _last_lambda1(history, s)   # set here: `score` compares candidates with it
        pruned, converged = 0, result.converged
        interrupted = not converged
        fitted = {"module_": module, "history_": history, "prior_weight_": prior_weight, "kl_free_": kl_free,
                  "mask_init_": start, "init_seed_": seed, "lambda1_": self.lambda1_, "score": -math.inf}
        if result.stop_reason == "paused":   # unpruned: it may train on
            return dict(fitted, converged_=True, interrupted=False, pruned_entries_=0, state=result.paused_state)
        # After a Ctrl-C the user wants out: the check (minutes at tens of thousands of genes) is skipped,
        # and a resume from the checkpoint runs it with the rest of the fit.
        if s["prune_masks"] and converged:
            try:
                drop = map_prune(module, Xt, st, s["schedule"].values[-1], self.lambda1_, prior_weight,
                                 chunk_size=self._feature_chunk(1024), threshold=SUPPORT_THRESHOLD,
                                 progress=bool(self.verbose))
            except KeyboardInterrupt:
                converged, interrupted = False, True
                warnings.warn("Mask check interrupted: the masks are kept as trained (no entry dropped) and the "
                              "fit is marked not converged.", RuntimeWarning, stacklevel=3)
            else:
                with torch.no_grad():
                    module.W[drop] = 0.0
                pruned = int(drop.sum())
        # A blown-up fit trained to the end but is no fit: not converged, though not interrupted.
        return dict(fitted, converged_=converged and result.stop_reason != "blew up", interrupted=interrupted,
                    pruned_entries_=pruned)

    def _checkpointing(self, checkpoint_dir, every: int, X, codes, max_epochs: int, look: bool = True,
                       pause: int | None = None):
        """(resume state or None, epoch-end callback) for ``fit(checkpoint_dir=...)``; ``look=False``:
        do not read the folder's checkpoint (the caller resumes from a state it holds).  A checkpoint is
        also written after epoch ``pause``, so a rerun finds every paused candidate where it stopped."""
        data_sha = ckpt.data_fingerprint(X, codes, self.studies_, self.feature_names_in_)
        # Everything that changes the arithmetic: the hyperparameters and the device kind (RNG streams differ).
        # (select_after changes when a candidate stops, not what its epochs compute)
        params = {k: v for k, v in self.get_params().items() if k not in ("verbose", "device", "select_after")}
        settings = json.loads(json.dumps(_jsonable(dict(params, device=self.device_.split(":")[0]))))
        found = ckpt.load(checkpoint_dir) if look else None
        if found is not None:
            ckpt.check_matches(Path(checkpoint_dir) / ckpt.CHECKPOINT_FILE, found[1], data_sha, settings)
            logger.warning("resuming from checkpoint %s after epoch %d of %d",
                           Path(checkpoint_dir) / ckpt.CHECKPOINT_FILE, found[1]["epochs_done"], max_epochs)

        def on_epoch_end(epoch: int, state) -> None:
            if (epoch + 1) % every == 0 or epoch + 1 in (max_epochs, pause):
                tensors, meta = state()
                ckpt.save(checkpoint_dir, tensors, dict(meta, data_sha256=data_sha, settings=settings))

        return found, on_epoch_end

    @torch.no_grad()
    def _factor_kl(self, Xt: torch.Tensor, st: torch.Tensor, batch_size: int = 4096) -> np.ndarray:
        """Mean KL(q(z_k | x) || N(0, 1)) per factor over the samples that own it (nats).

        A VAE leaves the factors it does not use at the prior (KL ≈ 0); a factor with KL well
        above 0 carries information the decoder uses, whatever the size of its W column.
        """
        self.module_.eval()
        total = torch.zeros(self.module_.n_latent, dtype=torch.float64)
        count = torch.zeros(self.module_.n_latent, dtype=torch.float64)
        for s in range(0, Xt.shape[0], batch_size):
            xb, sb = Xt[s:s + batch_size], st[s:s + batch_size]
            mean, log_var = self.module_.encode(xb, sb)
            mask = self.module_.latent_mask(sb)
            kl = 0.5 * (mean**2 + torch.exp(log_var) - 1.0 - log_var) * mask
            total += kl.sum(0).double().cpu()
            count += mask.sum(0).double().cpu()
        return (total / count.clamp_min(1)).numpy()

    def _warn_hidden_factors(self, min_kl: float = 0.1) -> None:
        """Warn when the decoder uses a factor whose W column has no entry above the support
        threshold: its features are then missing from every gene set (docs/design.md, "Prior/likelihood
        balance")."""
        used = self.factor_kl_ > min_kl
        active = np.zeros_like(used)
        active[self.active_shared_] = True
        for start, lab in zip(self.module_.block_starts, self.studies_):
            active[start + self.active_specific_[lab]] = True
        for group in self.merged_groups_:   # merged away: their genes are in the kept factor's set
            active[group] = True
        active[self.redundant_columns_] = True   # their genes are in the block's other gene sets
        for c, *_ in self.composite_columns_:     # their genes are in their parents' sets
            active[c] = True
        hidden = [self.factor_names_[k] for k in np.flatnonzero(used & ~active)]
        if hidden:
            # On real GSE68086 counts the bound kept the varimax start, whose factors held their genes
            # on many entries below the threshold (44 of 55 informative factors in no gene set);
            # the W = 1 start gave gene sets with GO terms there (docs/results.md, "Real data").  Only
            # when most informative factors are hidden: good simulation fits from that start leave
            # one to three spare ones (design.md item 29).
            advice = (" or refit with mask_init='ones' (the paper's start; this fit kept the varimax one)"
                      if self.mask_init_ == "varimax" and len(hidden) > used.sum() / 2 else "")
            warnings.warn(
                f"{len(hidden)} factor(s) carry information (KL > {min_kl} nats) but have no |W| > "
                f"{SUPPORT_THRESHOLD}: {hidden[:10]}. Their features are not in any support; see "
                "`factor_kl_` and consider a smaller `prior_weight`"
                + ("" if self.module_.decoder.normalized else " or normalize_decoder=True") + advice + ".",
                RuntimeWarning, stacklevel=3,
            )

    def _warn_small_studies(self, n_samples: np.ndarray) -> None:
        """Warn when a study has no more samples than active study-specific factors: its factors
        (and their gene sets) then rest on a handful of samples, and the check of 2 samples per
        study cannot catch that."""
        small = [(lab, int(n), self.n_specific_active_[lab]) for lab, n in zip(self.studies_, n_samples)
                 if 0 < n <= self.n_specific_active_[lab]]
        if small:
            detail = ", ".join(f"{lab!r}: {n} samples, {k} factors" for lab, n, k in small[:5])
            warnings.warn(f"{len(small)} study(ies) have no more samples than active study-specific factors "
                          f"({detail}); such factors are not estimable from so few samples. Consider "
                          "`n_specific={study: 0}` for them, or merging them with a related study.",
                          RuntimeWarning, stacklevel=3)

    def _empirical_priors(self, X: np.ndarray, s: dict) -> dict:
        """Data-dependent prior settings (Appendix C.2.1, §2.4), as plain floats for saving."""
        if s["likelihood"] == "gaussian":
            variances = X.var(0, ddof=1)
            # Constant features would put the 5 % quantile at 0 and every σ² at the floor.
            variances = variances[variances > 0] if (variances > 0).any() else variances
            return {
                "noise": (s["noise_alpha"], lk.inverse_gamma_beta(variances, s["noise_alpha"])),
                "noise_init": max(float(np.quantile(variances, 0.05)), 1e-6),
            }
        # §2.4's "empirical mean and variance of the observed library sizes" read on the log scale,
        # the scale of the LogNormal prior they parameterise (scVI's convention too).
        log_lib = np.log(np.maximum(X.sum(1), 1.0))
        # A floor on the variance keeps the KL finite when all library sizes are equal.
        return {"library": (float(log_lib.mean()), max(float(log_lib.var()), 1e-3)),
                "dispersion_init": s["dispersion_init"]}

    def _build_module(self, n_shared: int) -> MSSVAEModule:
        return MSSVAEModule(self.n_features_in_, n_shared, self._n_specific, self._hidden,
                            self.likelihood, self._normalize_decoder)

    def _initialise(self, module: MSSVAEModule, X: np.ndarray, masks: np.ndarray | None = None) -> None:
        """Starting values of the likelihood parameters (Appendix C.2.2), the output bias and the
        masks (``masks``, (G, K_S + Σ K_m); None keeps the paper's W = 1).

        σ² starts at the 5 % quantile of the feature variances; φ by moments.  The paper keeps
        PyTorch's default for the decoder; we start each feature's output bias at the value that
        reproduces its mean (the feature mean for Gaussian; for NB the inverse softplus of its mean
        share of the library), so the first steps fit structure rather than offsets of size ~10⁶;
        likewise the library-size posterior starts at its prior.
        """
        with torch.no_grad():
            if self.likelihood == "gaussian":
                module.log_var.fill_(math.log(self._data_priors["noise_init"]))
                module.decoder.bias.copy_(torch.as_tensor(X.mean(0)))
            else:
                start = self._data_priors.get("dispersion_init", "moments")
                phi = lk.nb_inverse_dispersion_init(X) if start == "moments" else np.full(X.shape[1], float(start))
                module.log_phi.copy_(torch.as_tensor(np.log(phi)))
                share = (X / np.maximum(X.sum(1, keepdims=True), 1.0)).mean(0).astype(np.float64)
                share = np.maximum(share, 1e-10)
                module.decoder.bias.copy_(torch.as_tensor(share + np.log(-np.expm1(-share))))
                # q(ℓ | x) starts at the prior rather than at LogNormal(0, 1), which is ~e^12 too small.
                lib_mean, lib_var = self._data_priors["library"]
                module.encoder_library.mean.bias.fill_(lib_mean)
                module.encoder_library.log_var.bias.fill_(math.log(lib_var))
            if masks is not None:
                module.W.copy_(torch.as_tensor(masks, dtype=module.W.dtype))

    def _fitted_lambda1(self) -> float:
        """The slab penalty of this fit: ``lambda1_``, or the hyperparameter when no fit has set it."""
        return float(getattr(self, "lambda1_", None) or self.lambda1)

    def _feature_chunk(self, batch: int) -> int | None:
        """Features per decoder chunk for batches of ``batch`` samples (training and inference alike;
        unchunked, 1024 samples × 5000 genes × hidden 64 is 1.3 GB per activation)."""
        if self.feature_chunk_size is not None:
            return int(self.feature_chunk_size)
        return default_chunk_size(batch, self._hidden, self.n_features_in_, self.device_)

    def _set_fitted_attributes(self, s: dict | None = None) -> None:
        module = self.module_
        schedule = s["schedule"] if s else Lambda0Schedule(tuple(self.lambda0), tuple(self.anneal_fractions))
        with torch.no_grad():
            W = module.W.detach().cpu()
            eta = module.eta.detach().cpu()
            p_star, _ = e_step(W, eta, schedule.values[-1], self._fitted_lambda1())
        W, p_star, eta = W.numpy().astype(np.float64), p_star.numpy(), eta.numpy()
        # Factors that are functions of one another become one gene set, the union; then columns
        # without two anchor genes are set aside, and composites of two factors are folded into
        # both (merging.py).
        plan = merge_plan(W, getattr(self, "merged_groups_", []))
        W, p_star = apply_merge_plan(W, plan), apply_merge_plan(p_star, plan)
        redundant = getattr(self, "redundant_columns_", [])
        W[:, redundant], p_star[:, redundant] = 0.0, 0.0
        composites = getattr(self, "composite_columns_", [])
        W, p_star = fold_composites(W, composites, p_star)
        K_S = module.n_shared
        self.W_shared_ = W[:, :K_S]
        self.inclusion_shared_ = p_star[:, :K_S]
        self.eta_shared_ = eta[:K_S]
        self.W_specific_, self.inclusion_specific_, self.eta_specific_ = {}, {}, {}
        for lab, start, k in zip(self.studies_, module.block_starts, module.n_specific):
            self.W_specific_[lab] = W[:, start:start + k]
            self.inclusion_specific_[lab] = p_star[:, start:start + k]
            self.eta_specific_[lab] = eta[start:start + k]

        def active(M):
            return np.flatnonzero((np.abs(M) > SUPPORT_THRESHOLD).any(0))

        self.active_shared_ = active(self.W_shared_)
        self.active_specific_ = {lab: active(Wm) for lab, Wm in self.W_specific_.items()}
        self.n_shared_active_ = len(self.active_shared_)
        self.n_specific_active_ = {lab: len(a) for lab, a in self.active_specific_.items()}
        self.factor_names_ = [f"shared_{k}" for k in range(K_S)] + [
            f"{lab}_{k}" for lab, k_m in zip(self.studies_, module.n_specific) for k in range(k_m)
        ]
        self.merged_factors_ = [[self.factor_names_[keep]] + [self.factor_names_[c] for c in group if c != keep]
                                for keep, group, _ in plan]
        self.redundant_factors_ = [self.factor_names_[c] for c in redundant]
        self.composite_factors_ = [[self.factor_names_[c] for c in triple] for triple in composites]
        if self.likelihood == "gaussian":
            self.noise_variance_ = torch.exp(module.log_var.detach()).cpu().numpy()
        else:
            self.inverse_dispersion_ = torch.exp(module.log_phi.detach()).cpu().numpy()

    # ------------------------------------------------------------------ inference
    def _check_fitted(self):
        if not hasattr(self, "module_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This MSSVAE is not fitted yet: call `fit(X, study)` first")

    def _prepare(self, X, study):
        self._check_fitted()
        val.check_columns(X, self.feature_names_in_)
        study = val.align_study(study, X)
        X = val.check_X(X, self.likelihood)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"`X` has {X.shape[1]} features but the model was fitted on {self.n_features_in_}")
        study = val.check_study(study, X.shape[0])
        index = {str(lab): i for i, lab in enumerate(self.studies_)}
        unknown = sorted({str(v) for v in study} - set(index))
        if unknown:
            raise ValueError(f"`study` has labels the model was not fitted on: {unknown[:5]}; "
                             f"known studies: {self.studies_}")
        codes = np.array([index[str(v)] for v in study], dtype=np.int64)
        device = next(self.module_.parameters()).device
        return torch.as_tensor(X, device=device), torch.as_tensor(codes, device=device)

    @torch.no_grad()
    def transform(self, X, study, batch_size: int = 4096) -> np.ndarray:
        """Posterior means of the factors in the z~ layout of §2.2.

        Returns
        -------
        ndarray (n_samples, K_S + Σ_m K_m): columns ``factor_names_`` = [shared | study 1 | …];
        a sample's entries in other studies' blocks are 0.
        """
        Xt, st = self._prepare(X, study)
        self.module_.eval()
        out = []
        for s in range(0, Xt.shape[0], batch_size):
            mean, _ = self.module_.encode(Xt[s:s + batch_size], st[s:s + batch_size])
            out.append(mean.cpu())
        return torch.cat(out).numpy().astype(np.float64)

    @torch.no_grad()
    def score(self, X, study, n_draws: int = 8, batch_size: int = 1024) -> float:
        """Eq. 2.4 per sample on (X, study): the evidence lower bound plus the log prior of the masks.

        The model's own objective with the prior at weight 1 and the KL at weight 1 (the paper's,
        whatever ``prior_weight`` and ``kl_weight`` trained it), λ0 at its final value, the encoders
        in evaluation mode, and the Monte Carlo draw of Eq. 2.4 averaged over ``n_draws`` draws
        seeded by ``random_state`` (so a call changes no random state and repeats exactly).  Higher
        is better, as for scikit-learn's ``score``.  Two fits of the same data can be compared by it:
        ``kl_free="auto"`` keeps the fit with the higher score (docs/design.md, "Counts (NB)", item 18).

        Compare scores only on the same samples and under the same prior settings.  The mask and
        noise priors are counted once and divided by the number of samples scored, so the value
        moves with the size of the set (a set scored twice over scores higher), and λ1 or K change
        the prior term itself.  This makes it unsuitable for ranking hyperparameters by
        ``cross_val_score`` / ``GridSearchCV`` on folds of other sizes, or across prior settings.
        Its Monte Carlo error is of the order of 0.06 nats per sample with 8 draws (a user-acceptance
        check on a small NB simulation); pass a larger ``n_draws`` to compare close fits.

        Returns
        -------
        float: (Σ_i [E_q log p(x_i | z_i) − KL_i] + log p(W | η) + log p(noise)) / n_samples
        """
        Xt, st = self._prepare(X, study)
        if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
            raise ValueError(f"`n_draws` must be a positive integer; got {n_draws!r}")
        return evaluate_bound(self.module_, Xt, st, self._score_settings(), int(n_draws), int(batch_size),
                              int(self.random_state), self._feature_chunk(min(batch_size, Xt.shape[0])))["bound"]

    def _score_settings(self) -> dict:
        """The prior settings that Eq. 2.4 needs, from the hyperparameters and the data priors."""
        s = self._settings(list(self.studies_), self.n_features_in_, 1)
        return dict(lambda0=s["schedule"].values[-1], lambda1=self._fitted_lambda1(), a=s["a"], b=s["b"],
                    noise_prior=self._data_priors.get("noise"), library_prior=self._data_priors.get("library"))

    @torch.no_grad()
    def reconstruct(self, X, study, batch_size: int = 1024) -> np.ndarray:
        """Decoder mean at the posterior means, (n_samples, n_features).

        Gaussian: f(W ⊙ E[z~]); NB: library size (observed total count) × f(W ⊙ E[z~]).
        """
        Xt, st = self._prepare(X, study)
        self.module_.eval()
        out = []
        for s in range(0, Xt.shape[0], batch_size):
            xb = Xt[s:s + batch_size]
            mean, _ = self.module_.encode(xb, st[s:s + batch_size])
            f = self.module_.decode(mean, self._feature_chunk(xb.shape[0]))
            if self.likelihood == "nb":
                f = f * xb.sum(1, keepdim=True)
            out.append(f.cpu())
        return torch.cat(out).numpy().astype(np.float64)

    def _reported_columns(self) -> list[tuple[str, list[int]]]:
        """(name, decoder columns) of each reported factor, in ``factor_names_`` order: an active
        column of ``W_shared_`` / ``W_specific_`` with the columns merged into it."""
        index = {n: k for k, n in enumerate(self.factor_names_)}
        merged = {index[g[0]]: [index[n] for n in g] for g in self.merged_factors_}
        cols = list(self.active_shared_) + [start + int(k) for start, lab in
                                            zip(self.module_.block_starts, self.studies_)
                                            for k in self.active_specific_[lab]]
        return [(self.factor_names_[c], merged.get(c, [c])) for c in sorted(int(c) for c in cols)]

    @torch.no_grad()
    def variance_explained(self, X, study, batch_size: int = 1024, factors: str = "reported") -> pd.DataFrame:
        """Share of each study's variance that each factor explains, for this nonlinear decoder.

        R²_m = 1 − Σ (y − ŷ)² / Σ (y − ȳ_m)² over study m's samples and all features, where ŷ is
        the decoder at the posterior means.  A factor's share is R²_m minus the R²_m obtained with
        that factor set to its prior mean (0) for every sample; factors interact through the
        decoder, so the shares need not add up to R²_m.  (MOFA+ reports the same kind of R² for
        its linear model.)  Gaussian: y = x.  NB: y = log1p(10⁴ · x / library size) and ŷ the
        same transform of the decoder's mean, so deep and shallow samples weigh alike.

        factors : {"reported", "all"}
            "reported" (default): one row per factor with a gene set (the active columns of
            ``W_shared_`` / ``W_specific_``), a merged factor's columns set to 0 together, then one
            row ``"other columns"`` for every decoder column not in a reported factor (inactive,
            set aside by ``min_anchors``, folded composites) set to 0 together.  A large share there
            means the decoder uses columns that no gene set stands for (see ``factor_kl_``).
            "all": one row per decoder column, ``factor_names_``, as the module sees them.

        Returns
        -------
        DataFrame (rows + 1, M): the rows above then ``"total"`` (R²_m); columns studies.  A factor
        that does not belong to a study explains 0 there.  Costs one pass of the decoder over X per
        row.
        """
        self._check_fitted()
        if factors == "reported":
            rows = self._reported_columns()
            rest = sorted(set(range(len(self.factor_names_))) - {c for _, cols in rows for c in cols})
            rows += [("other columns", rest)] if rest else []
        elif factors == "all":
            rows = [(name, [k]) for k, name in enumerate(self.factor_names_)]
        else:
            raise ValueError(f'`factors` must be "reported" or "all"; got {factors!r}')
        Xt, st = self._prepare(X, study)
        self.module_.eval()
        K = len(rows)

        def as_y(values, x):
            if self.likelihood == "nb":
                return torch.log1p(1e4 * values / x.sum(1, keepdim=True).clamp_min(1.0))
            return values

        M, dev = len(self.studies_), Xt.device
        sse = torch.zeros(K + 1, M, dtype=torch.float64, device=dev)
        y_sum = torch.zeros(M, Xt.shape[1], dtype=torch.float64, device=dev)
        y_sq = torch.zeros(M, dtype=torch.float64, device=dev)
        counts = torch.zeros(M, dtype=torch.float64, device=dev)
        for s in range(0, Xt.shape[0], batch_size):
            xb, sb = Xt[s:s + batch_size], st[s:s + batch_size]
            mean, _ = self.module_.encode(xb, sb)
            chunk = self._feature_chunk(xb.shape[0])
            y = as_y(xb, xb).double()
            onehot = torch.nn.functional.one_hot(sb, M).double()   # (B, M)
            y_sum += onehot.t() @ y
            y_sq += onehot.t() @ (y**2).sum(1)
            counts += onehot.sum(0)
            for k in range(-1, K):   # -1: the full model
                z = mean.clone()
                if k >= 0:
                    z[:, rows[k][1]] = 0.0
                f = self.module_.decode(z, chunk)
                pred = f * xb.sum(1, keepdim=True) if self.likelihood == "nb" else f
                err = ((y - as_y(pred, xb).double()) ** 2).sum(1)
                sse[k + 1] += onehot.t() @ err
        sst = y_sq - (y_sum**2).sum(1) / counts.clamp_min(1.0)
        r2 = (1.0 - sse / sst.clamp_min(1e-12)).cpu()
        table = np.vstack([(r2[0] - r2[1:]).numpy(), r2[0].numpy()[None, :]])
        return pd.DataFrame(table, index=[name for name, _ in rows] + ["total"],
                            columns=[str(m) for m in self.studies_])

    def fit_transform(self, X, study, **kw) -> np.ndarray:
        return self.fit(X, study, **kw).transform(X, study)

    # ------------------------------------------------------------------ persistence
    def save(self, path, overwrite: bool = False) -> None:
        """Write the fitted model to the folder ``path``: tensors in ``model.safetensors`` and
        plain metadata (settings, study labels, feature names, versions, a SHA-256 of the tensors)
        in ``model.json``.  Nothing is pickled, so loading cannot run code."""
        from safetensors.torch import save_file

        from . import __version__

        self._check_fitted()
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise ValueError(f"`path` {path} exists and is not empty; pass overwrite=True")
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.module_.state_dict().items()}
        tmp = path / "model.safetensors.tmp"
        save_file(tensors, str(tmp))
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        params = self.get_params()
        meta = {
            "format": "mssvae", "format_version": FORMAT_VERSION, "mssvae_version": __version__,
            "params": _jsonable(params), "studies": self.studies_, "n_specific": self._n_specific,
            "n_shared": self.module_.n_shared, "hidden": list(self._hidden),
            "normalize_decoder": bool(self._normalize_decoder),
            "feature_names": self.feature_names_in_.tolist(), "data_priors": _jsonable(self._data_priors),
            "converged": bool(getattr(self, "converged_", False)),
            "factor_kl": np.asarray(getattr(self, "factor_kl_", [])).tolist(),
            "merged_groups": [[int(c) for c in g] for g in getattr(self, "merged_groups_", [])],
            "redundant_columns": [int(c) for c in getattr(self, "redundant_columns_", [])],
            "composite_columns": [[int(c) for c in t] for t in getattr(self, "composite_columns_", [])],
            "pruned_entries": int(getattr(self, "pruned_entries_", 0)),
            "lambda1": self._fitted_lambda1(),
            "kl_free": getattr(self, "kl_free_", None),
            "mask_init": getattr(self, "mask_init_", None),
            "start_scores": [[k, float(v)] for k, v in getattr(self, "start_scores_", {}).items()],
            "candidate_scores": [[float(k), float(v)] for k, v in getattr(self, "candidate_scores_", {}).items()],
            "init_scores": np.asarray(getattr(self, "init_scores_", [])).tolist(),
            "select_epoch": int(getattr(self, "select_epoch_", 0)),
            "candidates": _jsonable(getattr(self, "candidates_", pd.DataFrame()).to_dict("list")),
            "init_seed": getattr(self, "init_seed_", None),
            "history": getattr(self, "history_", pd.DataFrame()).to_dict("list"),
            "tensors_sha256": digest,
        }
        # Tensors first, then the metadata that vouches for them: a kill in between leaves a folder
        # that `load` refuses by checksum, never a silently mismatched pair.
        os.replace(tmp, path / "model.safetensors")
        tmp_meta = path / "model.json.tmp"
        tmp_meta.write_text(json.dumps(meta))
        os.replace(tmp_meta, path / "model.json")

    @classmethod
    def load(cls, path, device: str = "cpu") -> MSSVAE:
        """Load a model written by :meth:`save` (never unpickles anything)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        meta_file, tensor_file = path / "model.json", path / "model.safetensors"
        if not meta_file.is_file() or not tensor_file.is_file():
            raise ValueError(f"`path` {path} is not a saved MSSVAE (expected model.json and model.safetensors)")
        try:
            meta = json.loads(meta_file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{meta_file} is not valid MSSVAE metadata: {err}") from None
        ckpt.check_format(meta, "mssvae", FORMAT_VERSION, meta_file)
        if hashlib.sha256(tensor_file.read_bytes()).hexdigest() != meta.get("tensors_sha256"):
            raise ValueError(f"{tensor_file} does not match the checksum in {meta_file}: truncated or modified")
        try:
            tensors = load_file(str(tensor_file))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{tensor_file} could not be read: {err}") from None
        cls(device=device)._resolve_device()   # an unavailable device is the caller's error, not the file's
        try:
            return cls._from_metadata(meta, tensors, device)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            # The checksum vouches for the tensors, not for model.json: an edited or partial file
            # fails here, deep in the constructor or in load_state_dict.
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise ValueError(f"{meta_file} does not describe the model in {tensor_file} "
                             f"(edited, incomplete or from another program): {type(err).__name__}: {first}") from None

    @classmethod
    def _from_metadata(cls, meta: dict, tensors: dict, device: str) -> MSSVAE:
        params = meta["params"]
        for key in ("hidden", "lambda0", "anneal_fractions", "lambda1"):
            if isinstance(params.get(key), list):
                params[key] = tuple(params[key])
        params["device"] = device
        # Saved before lr_decay existed: those fits trained at constant rates.
        params.setdefault("lr_decay", 0.0)
        params.setdefault("mask_init", "ones")   # saved before it existed: the paper's W = 1
        params.setdefault("select_after", 1.0)   # saved before it existed: candidates trained to the end
        model = cls(**params)
        model.studies_ = meta["studies"]
        model.feature_names_in_ = np.asarray(meta["feature_names"])
        model.n_features_in_ = len(model.feature_names_in_)
        model._n_specific = meta["n_specific"]
        model._hidden = tuple(meta["hidden"])
        model._normalize_decoder = bool(meta.get("normalize_decoder", params.get("normalize_decoder") or False))
        model._data_priors = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["data_priors"].items()}
        module = model._build_module(meta["n_shared"])
        module.load_state_dict(tensors)
        model.module_ = module.to(model._resolve_device()).eval()
        model.device_ = str(next(module.parameters()).device)
        model.converged_ = meta["converged"]
        model.factor_kl_ = np.asarray(meta.get("factor_kl", []), dtype=float)
        model.history_ = pd.DataFrame(meta["history"])
        model.merged_groups_ = [[int(c) for c in g] for g in meta.get("merged_groups", [])]
        model.redundant_columns_ = [int(c) for c in meta.get("redundant_columns", [])]
        # Models saved before composites were folded have none: they load as they were reported.
        model.composite_columns_ = [[int(c) for c in t] for t in meta.get("composite_columns", [])]
        model.pruned_entries_ = int(meta.get("pruned_entries", 0))
        # Saved before λ1 could be empirical: the hyperparameter is the value used.
        model.lambda1_ = float(meta.get("lambda1", params["lambda1"]))
        model.kl_free_ = meta.get("kl_free")
        # Saved before mask_init="auto": the start is the hyperparameter.
        model.mask_init_ = meta.get("mask_init") or params["mask_init"]
        model.start_scores_ = {k: v for k, v in meta.get("start_scores", [])}
        model.candidate_scores_ = {k: v for k, v in meta.get("candidate_scores", [])}
        model.init_scores_ = np.asarray(meta.get("init_scores", []), dtype=float)
        compared_at_end = len(meta.get("history", {}).get("loss", [])) if (
            model.start_scores_ or model.candidate_scores_) else 0
        model.select_epoch_ = int(meta.get("select_epoch", compared_at_end))
        model.candidates_ = pd.DataFrame(meta.get("candidates") or {c: [] for c in CANDIDATE_COLUMNS},
                                         columns=CANDIDATE_COLUMNS)
        model.init_seed_ = meta.get("init_seed", model.random_state)
        model._set_fitted_attributes()
        return model


# Bytes of one (B·chunk, H) activation of a decoder chunk.  On a CPU, small enough to stay in cache:
# measured with benchmarks/decoder_speed.py (1 thread, G = 5000, fused chunks), batch 512 / hidden
# 256/128 ran at 80 % of the GEMM peak with chunk 4 (2 MiB), 70 % at 16-32 and 63 % at 64; batch
# 128 / hidden 64/64 at 44-54 % for chunks 8-128, best at 64 (2 MiB).  On a GPU a chunk is a set of
# kernel launches, so chunks are as large as memory comfortably allows.
CHUNK_BYTES = {"cpu": 2 * 2**20, "cuda": 2 * 2**30}


def default_chunk_size(batch_size: int, hidden, n_features: int, device: str = "cpu") -> int | None:
    """Features per decoder chunk (None: all at once) so one activation of a chunk fits CHUNK_BYTES."""
    budget = CHUNK_BYTES["cuda" if str(device).startswith("cuda") else "cpu"]
    chunk = int(budget // (batch_size * max(hidden) * 4))
    return None if chunk >= n_features else max(chunk, 1)


def _rank() -> int | None:
    """This process's rank in an initialised torch.distributed group, else None."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj

