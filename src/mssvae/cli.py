"""Command line: ``mssvae fit | preprocess | enrich | report | simulate | evaluate | demo``.

Every error caused by the input (missing file, bad column, NaN, unknown option value, ...) ends
the command with a one-line ``Error: ...`` message and a non-zero exit status, never a traceback.
Options that are not given are not passed to the model, so its defaults (Table 2 of the paper,
per likelihood) apply.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path

import click
import numpy as np
import pandas as pd

from . import __version__

_READ_ERRORS = (ValueError, TypeError, OSError, KeyError)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def _one_line(err) -> str:
    return re.sub(r"\s+", " ", str(err)).strip() or type(err).__name__


def _fail(err, prefix: str = "", suffix: str = "") -> click.ClickException:
    return click.ClickException(f"{prefix}{_one_line(err)}{suffix}")


class _IntPair(click.ParamType):
    """"50,50" → (50, 50)."""

    name = "INT,INT"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            parts = tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not two comma-separated integers such as 50,50", param, ctx)
        if len(parts) != 2 or min(parts) < 1:
            self.fail(f"{value!r} must be two positive integers such as 50,50", param, ctx)
        return parts


class _WordOrNumber(click.ParamType):
    """One of ``words`` (case-insensitive, mapped to its value) or a number with ``valid(number)``:
    the options whose value is a keyword or a number (--prior-weight, --dispersion-init, ...)."""

    def __init__(self, words: dict, valid, numbers: str):
        self.words, self.valid, self.numbers = words, valid, numbers
        self.name = "|".join(words) + "|FLOAT"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value is False:   # a default, or a value already converted
            return value
        if str(value).lower() in self.words:
            return self.words[str(value).lower()]
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not self.valid(number):
            self.fail(f"{value!r} is not {', '.join(self.words)} or {self.numbers}", param, ctx)
        return number


def _positive(x: float) -> bool:
    return 0 < x < float("inf")


_PRIOR_WEIGHT = _WordOrNumber({w: w for w in ("auto", "fixed", "calibrated")}, _positive, "a positive number")
_DISPERSION_INIT = _WordOrNumber({w: w for w in ("auto", "moments")}, _positive, "a positive number")
# "off" is passed on as False, which MSSVAE reads as no merging.
_MERGE_THRESHOLD = _WordOrNumber({"auto": "auto", "off": False}, lambda x: 0 < x <= 1, "a number in (0, 1]")
_WARMUP = _WordOrNumber({"auto": "auto"}, lambda x: 0 <= x <= 1, "a number in [0, 1]")
_KL_WEIGHT = _WordOrNumber({"auto": "auto"}, _positive, "a positive number")
_SHARE = _WordOrNumber({"auto": "auto"}, lambda x: 0 < x <= 1, "a number in (0, 1]")


class _WordOrNumbers(click.ParamType):
    """A word, or comma-separated numbers: "0.5" → 0.5, "0.5,0" → (0.5, 0.0).

    ``counts``: how many numbers are allowed (None: any); ``valid`` checks each number."""

    def __init__(self, word: str, valid, counts: tuple[int, ...] | None, expected: str):
        self.word, self.valid, self.counts, self.expected = word, valid, counts, expected
        self.name = f"{word}|FLOAT[,FLOAT...]"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):   # a default, or a value already converted
            return value
        if value.strip().lower() == self.word:
            return self.word
        try:
            numbers = tuple(float(v) for v in value.split(","))
        except ValueError:
            numbers = (float("nan"),)
        if (self.counts is not None and len(numbers) not in self.counts) or not all(map(self.valid, numbers)):
            self.fail(f"{value!r} is not {self.word} or {self.expected}", param, ctx)
        return numbers[0] if len(numbers) == 1 else numbers


# kl_free: the value of each fit to try; lambda1: one number, or one per λ0 annealing stage.
_KL_FREE = _WordOrNumbers("auto", lambda x: 0 <= x < float("inf"), None, "non-negative numbers such as 0.5 or 0.5,0")
_LAMBDA1 = _WordOrNumbers("empirical", _positive, (1, 3), "a positive number or three (one per λ0 stage)")


class _NSpecific(click.ParamType):
    """"5" → 5 (every study), "a=3,b=2" → {"a": 3, "b": 2}."""

    name = "K|STUDY=K,..."

    def convert(self, value, param, ctx):
        if isinstance(value, (int, dict)):
            return value
        text = str(value).strip()
        try:
            if "=" not in text:
                k = int(text)
                if k < 0:
                    raise ValueError
                return k
            out = {}
            for item in text.split(","):
                lab, k = item.rsplit("=", 1)
                out[lab.strip()] = int(k)
                if out[lab.strip()] < 0:
                    raise ValueError
            return out
        except ValueError:
            self.fail(f"{value!r} is neither a non-negative integer nor a list such as study1=3,study2=2",
                      param, ctx)


class _Floats(click.ParamType):
    name = "FLOAT,..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(float(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)


def _safe_names(labels) -> dict:
    """File-name-safe, distinct names for the study labels (never "shared").  Letters of any script
    are kept ("Lüneburg", "東京"): only path separators, spaces and punctuation become "_"."""
    out, taken = {}, {"shared"}
    for lab in labels:
        base = re.sub(r"[^\w.-]+", "_", str(lab)).strip("._") or "study"
        name, i = base, 2
        while name.lower() in taken:
            name, i = f"{base}_{i}", i + 1
        taken.add(name.lower())
        out[lab] = name
    return out


def _check_device(device):
    if device is None or device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise click.BadParameter(f"{device!r} is not a device; use auto, cpu, cuda or cuda:N",
                                 param_hint="'--device'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine; use --device cpu or auto",
                                 param_hint="'--device'")


def _set_threads(threads):
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _prepare_output_dir(out_dir: Path, names, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise click.ClickException(f"--output-dir {out_dir} exists and is not a folder")
    clash = [n for n in names if (out_dir / n).exists()]
    if clash and not overwrite:
        raise click.ClickException(f"{out_dir} already holds results ({', '.join(clash)}); "
                                   "pass --overwrite or choose another --output-dir")


def _write_model_tables(model, out_dir: Path) -> list[str]:
    """W_shared.csv, W_<study>.csv, history.csv and model/ (features × factors, feature names as index)."""
    names = model.feature_names_in_
    k_s = model.W_shared_.shape[1]
    written = []
    pd.DataFrame(model.W_shared_, index=names, columns=model.factor_names_[:k_s]).to_csv(out_dir / "W_shared.csv")
    written.append("W_shared.csv")
    start = k_s
    for lab, safe in _safe_names(model.studies_).items():
        W = model.W_specific_[lab]
        cols = model.factor_names_[start:start + W.shape[1]]
        start += W.shape[1]
        pd.DataFrame(W, index=names, columns=cols).to_csv(out_dir / f"W_{safe}.csv")
        written.append(f"W_{safe}.csv")
    model.history_.to_csv(out_dir / "history.csv", index=False)
    model.save(out_dir / "model", overwrite=True)
    return written + ["history.csv", "model/"]


def _save_figure(fig, path: Path) -> None:
    fig.savefig(path, dpi=120)


def _fit_summary(model, seconds: float) -> list[str]:
    lines = [f"K_S (active shared factors): {model.n_shared_active_} of {model.W_shared_.shape[1]}"]
    for lab in model.studies_:
        lines.append(f"K_m {lab}: {model.n_specific_active_[lab]} of {model.W_specific_[lab].shape[1]}")
    for group in model.merged_factors_:
        lines.append(f"merged (factors that are functions of one another): {' + '.join(group)}")
    if model.redundant_factors_:
        lines.append(f"set aside (fewer than {model.min_anchors} anchor genes): {', '.join(model.redundant_factors_)}")
    for c, a, b in getattr(model, "composite_factors_", []):
        lines.append(f"folded (a function of two factors jointly): {c} into {a} and {b}")
    if model.lambda1 == "empirical":
        lines.append(f"slab penalty λ1 (empirical): {model.lambda1_:.3g}")
    # each candidate fit (kl_free values, starts): training's estimate of Eq. 2.4 where they were compared
    # early (select_after, item 27), and the final bound of those trained to the end
    for c in getattr(model, "candidates_", pd.DataFrame()).itertuples():
        early = (f"Eq. 2.4 per sample {c.estimate:.2f} ± {c.estimate_se:.2f} after epoch {model.select_epoch_}, "
                 if np.isfinite(c.estimate) else "")
        final = f"final {c.score:.2f}" if c.trained_to_end else "not trained on"
        lines.append(f"candidate mask_init={c.mask_init}, kl_free={c.kl_free:g}: {early}{final}{' (kept)' * c.kept}")
    inits = np.asarray(getattr(model, "init_scores_", []))
    if inits.size > 1 and np.isfinite(inits).all():
        each = ", ".join(f"{v:.2f}" for v in inits)
        lines.append(f"kept restart {int(inits.argmax())} of {inits.size} (seed {model.init_seed_}), the highest "
                     f"Eq. 2.4 bound per sample ({each})")
    lines.append(f"fit: {len(model.history_)} epochs in {seconds:.1f} s on {model.device_}")
    if not model.converged_:
        lines.append("warning: the model is marked not converged (training or the mask check was interrupted, "
                     "or the loss blew up: see the warning above)")
    return lines


_METRIC_ROWS = [
    ("shared_consensus", "shared consensus"),
    ("shared_relevance", "shared relevance"),
    ("shared_recovery", "shared recovery"),
    ("group_consensus", "group consensus"),
    ("group_relevance", "group relevance"),
    ("group_recovery", "group recovery"),
    ("dci", "disentanglement (DCI)"),
]


def _flat_metrics(metrics: dict) -> dict:
    """One flat row: scores, n_shared_est, n_specific_est_<study> (wide, so replicates concatenate)."""
    row = {k: metrics[k] for k, _ in _METRIC_ROWS if k in metrics}
    row["n_shared_est"] = metrics["n_shared_est"]
    for lab, k in metrics["n_specific_est"].items():
        row[f"n_specific_est_{lab}"] = k
    return row


def _metrics_table(metrics: dict, true_shared: int | None = None, true_specific: dict | None = None) -> str:
    rows = []
    for key, label in _METRIC_ROWS:
        if key in metrics:
            v = metrics[key]
            rows.append((label, "n/a" if v is None or np.isnan(v) else f"{v:.3f}"))
    ts = f" (true {true_shared})" if true_shared is not None else ""
    rows.append(("K_S estimated", f"{metrics['n_shared_est']}{ts}"))
    for lab, k in metrics["n_specific_est"].items():
        t = f" (true {true_specific[lab]})" if true_specific and lab in true_specific else ""
        rows.append((f"K_m estimated, {lab}", f"{k}{t}"))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


# ----------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mssvae")
def main():
    """Multi-study sparse VAE (Moran & Krishnan): shared and study-specific sparse factors."""
    # A warning reads "Warning: ..." on the command line: Python's default format adds the file and
    # source line inside this package, which say nothing to the user.  Restored when the command ends.
    default = warnings.formatwarning
    warnings.formatwarning = _format_warning
    click.get_current_context().call_on_close(lambda: setattr(warnings, "formatwarning", default))


def _format_warning(message, category, filename, lineno, line=None) -> str:
    kind = "" if category is UserWarning else f" ({category.__name__})"
    return f"Warning{kind}: {message}\n"


FIT_OUTPUTS = ("result.h5ad", "W_shared.csv", "factors.csv", "history.csv", "model", "masks.png", "training.png")


@main.command(short_help="Fit an MSSVAE to an .h5ad or CSV file.")
@click.argument("input", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--study-key", default="study", show_default=True,
              help="Column (CSV) or obs column (h5ad) holding each sample's study.")
@click.option("--likelihood", type=click.Choice(["gaussian", "nb"], case_sensitive=False), default=None,
              help="gaussian (default) for continuous values, nb for raw counts.")
@click.option("--layer", default=None, help="h5ad layer to use instead of X (e.g. counts).")
@click.option("--n-shared", type=click.IntRange(min=0), default=None,
              help="Initial K_S (upper bound). Default: Table 2 (30 gaussian, 50 nb).")
@click.option("--n-specific", type=_NSpecific(), default=None,
              help="Initial K_m: one number for every study, or study=K,... Default: Table 2 (5 / 10).")
@click.option("--hidden", type=_IntPair(), default=None, help="Hidden layer sizes, e.g. 50,50. Default: Table 2.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs. Default: Table 2 (500 gaussian, 800 nb).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Minibatch size (default 512).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None, help="Learning rate of the networks.")
@click.option("--lr-w", "lr_W", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Learning rate of the masks W.")
@click.option("--prior-weight", type=_PRIOR_WEIGHT, default=None,
              help="Weight of the spike-and-slab log-prior: a number, fixed (N/300), calibrated (to the "
                   "likelihood's Fisher information) or auto (default: fixed for gaussian, calibrated for nb).")
@click.option("--prior-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Constant of the calibrated prior weight, prior_scale * N * Fisher information (default 2e-3).")
@click.option("--prior-per-feature", is_flag=True, flag_value=True, default=None,
              help="Calibrated weight per feature, from each feature's own Fisher information "
                   "(docs/design.md, item 8).")
@click.option("--kl-weight", type=_KL_WEIGHT, default=None,
              help="Multiplier of the factors' KL terms: auto (default: 2 for nb, 1 for gaussian; 1 is "
                   "Eq. 2.4) or a positive number (docs/design.md).")
@click.option("--kl-warmup", type=_WARMUP, default=None,
              help="Share of the epochs over which the KL multiplier rises from 1 to --kl-weight: a number "
                   "in [0, 1] (default 0) or auto (the λ0 annealing period, 0.3).")
@click.option("--kl-free", type=_KL_FREE, default=None,
              help="Nats per sample a factor's KL must pass before the weight above 1 acts on it; several "
                   "values (0.5,0) fit once per value and keep the fit with the higher Eq. 2.4 bound. Default "
                   "auto: 0.5,0 for nb, 0.5 for gaussian (docs/design.md, items 16 and 18).")
@click.option("--n-init", type=click.IntRange(min=1), default=None,
              help="Trainings from different seeds; the one with the highest Eq. 2.4 bound is kept (default 1).")
@click.option("--lambda1", type=_LAMBDA1, default=None,
              help="Slab penalty λ1: a positive number (default 0.1, the paper's), three (one per λ0 annealing "
                   "stage, e.g. 0.1,1,0.1) or empirical (its M-step; needs the normalized decoder). "
                   "docs/design.md items 23-24.")
@click.option("--feature-subsample", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Share of the features each training step evaluates, scaled to stay unbiased (default 1).")
@click.option("--lr-decay", type=_WARMUP, default=None,
              help="Share of the last epochs over which the learning rates fall linearly to 0: auto (default: "
                   "0.2 with --feature-subsample below 1, else 0) or a number in [0, 1].")
@click.option("--dispersion-init", type=_DISPERSION_INIT, default=None,
              help="Starting NB inverse dispersion: auto (= moments, the paper's start per gene) or a number "
                   "for every gene (docs/design.md, item 13).")
@click.option("--dispersion-warmup", type=_WARMUP, default=None,
              help="Share of the epochs with one inverse dispersion for all genes: auto (default: the λ0 "
                   "annealing period, 0.3, for nb; 0 for gaussian) or a number in [0, 1].")
@click.option("--mask-init", type=click.Choice(["auto", "ones", "varimax"]), default=None,
              help="Starting masks: ones (the paper's W = 1), varimax (each column from one varimax-rotated "
                   "principal component; docs/design.md, item 25) or auto (default: for nb, fit from both "
                   "and keep the higher Eq. 2.4 bound, item 26; ones for gaussian).")
@click.option("--select-after", type=_SHARE, default=None,
              help="With several candidate fits (--kl-free, --mask-init), the share of the epochs after which "
                   "they are compared; those more than 3 standard errors behind the best stop there: auto "
                   "(default: 0.05 after the last warm-up, 0.35 for nb) or a number in (0, 1] (1: train all to "
                   "the end; docs/design.md, item 27).")
@click.option("--merge-dependent", type=_MERGE_THRESHOLD, default=None,
              help="Merge factors of one block that are functions of one another (dependence R2 >= this "
                   "threshold) into one gene set, and fold a factor that is a function of two others "
                   "into both: auto (default, 0.5), off, or a number.")
@click.option("--prune-masks/--no-prune-masks", default=None,
              help="After training, zero each mask entry that Eq. 2.4 prefers at 0 (default on; "
                   "docs/design.md, item 17).")
@click.option("--min-anchors", type=click.IntRange(min=0), default=None,
              help="Set aside (report as inactive) a column with fewer anchor genes (genes in no other gene set "
                   "of its block) than this: default 2, the paper's Assumption 1; 0: off.")
@click.option("--seed", type=int, default=None, help="Random seed (default 0).")
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("mssvae_out"),
              show_default=True, help="Folder for the results.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --output-dir.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no progress messages.")
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write checkpoints here; rerunning the same command resumes from the last one.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=10, show_default=True,
              help="Epochs between checkpoints.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy machine).")
def fit(input, study_key, likelihood, layer, n_shared, n_specific, hidden, epochs, batch_size, lr, lr_W,
        prior_weight, prior_scale, prior_per_feature, kl_weight, kl_warmup, kl_free, n_init, lambda1, feature_subsample,
        lr_decay, dispersion_init, dispersion_warmup, mask_init, select_after, merge_dependent, prune_masks,
        min_anchors, seed, device, output_dir, overwrite, quiet, threads, checkpoint_dir, checkpoint_every):
    """Fit an MSSVAE to INPUT (.h5ad, or CSV/TSV with one row per sample and a study column).

    Writes to --output-dir: result.h5ad (the input with obsm['X_mssvae'], varm['mssvae_W_*'],
    uns['mssvae']), W_shared.csv and W_<study>.csv (features × factors), factors.csv
    (samples × factors), history.csv, model/ (reload with MSSVAE.load), masks.png, training.png.
    """
    from .io import fit_anndata, read_input
    from .model import MSSVAE
    from .training import TrainingDivergedError

    _check_device(device)
    _set_threads(threads)
    _prepare_output_dir(output_dir, FIT_OUTPUTS, overwrite)
    say = (lambda msg: None) if quiet else (lambda msg: click.echo(msg, err=True))

    if not input.is_file():
        raise click.ClickException(f"input file {input} does not exist")
    try:
        adata = read_input(input, study_key)
    except _READ_ERRORS as err:
        raise _fail(err, f"cannot read {input}: ") from None
    given = dict(likelihood=likelihood and likelihood.lower(), n_shared=n_shared, n_specific=n_specific,
                 hidden=hidden, max_epochs=epochs, batch_size=batch_size, lr=lr, lr_W=lr_W,
                 prior_weight=prior_weight, prior_scale=prior_scale, prior_per_feature=prior_per_feature,
                 kl_weight=kl_weight, kl_warmup=kl_warmup, kl_free=kl_free, n_init=n_init, lambda1=lambda1,
                 feature_subsample=feature_subsample, lr_decay=lr_decay, dispersion_init=dispersion_init,
                 dispersion_warmup=dispersion_warmup, mask_init=mask_init, select_after=select_after,
                 merge_dependent=merge_dependent,
                 prune_masks=prune_masks, min_anchors=min_anchors, random_state=seed, device=device)
    kwargs = {k: v for k, v in given.items() if v is not None}
    say(f"fitting {adata.n_obs} samples x {adata.n_vars} features from {input}")
    t0 = time.perf_counter()
    try:
        model = MSSVAE(verbose=not quiet, **kwargs)
        fit_anndata(adata, study_key=study_key, layer=layer, model=model, checkpoint_dir=checkpoint_dir,
                    checkpoint_every=checkpoint_every)
    except TrainingDivergedError as err:
        # fit_anndata wrote the last finite state into adata: keep it on disk, as the message promises.
        # (None when no epoch finished: there is only the untrained initialisation, which is not kept.)
        if len(getattr(model, "history_", ())) > 0:
            _write_fit_outputs(model, adata, output_dir, input)
            raise _fail(err, "training failed: ", f" It is written to {output_dir}/, marked not converged.") from None
        raise _fail(err, "training failed: ") from None
    except (ValueError, TypeError) as err:
        raise _fail(err, f"{input}: ") from None
    seconds = time.perf_counter() - t0

    written = _write_fit_outputs(model, adata, output_dir, input)
    for line in _fit_summary(model, seconds):
        click.echo(line)
    click.echo(f"wrote {output_dir}/: {', '.join(written)}")


def _write_fit_outputs(model, adata, output_dir: Path, input: Path) -> list[str]:
    """What `mssvae fit` writes (FIT_OUTPUTS), from the model and the AnnData fit_anndata filled."""
    from .plotting import plot_history, plot_masks

    output_dir.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(output_dir / "result.h5ad")
    written = ["result.h5ad"] + _write_model_tables(model, output_dir)
    pd.DataFrame(adata.obsm["X_mssvae"], index=adata.obs_names, columns=model.factor_names_).to_csv(
        output_dir / "factors.csv")
    _save_figure(plot_masks(model.W_shared_, model.W_specific_, feature_names=model.feature_names_in_,
                            title=f"Estimated |W| ({input.name})"), output_dir / "masks.png")
    _save_figure(plot_history(model.history_, title=f"Training ({input.name})"), output_dir / "training.png")
    return written + ["factors.csv", "masks.png", "training.png"]


@main.command(short_help="Filter raw counts as in the paper's App. C.4 and keep the top genes.")
@click.argument("input", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--samples", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Sample sheet (CSV/TSV) when INPUT is a genes x samples counts table (GEO layout).")
@click.option("--sample-column", default="sample", show_default=True,
              help="Column of --samples naming the counts columns. When the default column is absent, "
                   "rows are matched to the counts columns by order (with a warning); a column given "
                   "here must exist.")
@click.option("--study-key", default="study", show_default=True, help="Study (group) column.")
@click.option("--layer", default=None, help="h5ad layer holding the raw counts instead of X.")
@click.option("--min-total-log", type=float, default=12.5, show_default=True,
              help="Drop samples with total counts below exp(this).")
@click.option("--min-gene-counts", type=click.FloatRange(min=0), default=25, show_default=True,
              help="Keep genes with at least this many counts in total.")
@click.option("--min-cpm", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="... and CPM above this in at least --min-cpm-fraction of the samples.")
@click.option("--min-cpm-fraction", type=click.FloatRange(0, 1), default=0.2, show_default=True)
@click.option("--n-top-genes", type=click.IntRange(min=1), default=5000, show_default=True,
              help="Genes kept by Pearson residuals of an NB offset model (scanpy).")
@click.option("--id-map", default="auto", show_default=True,
              help="Ensembl id -> symbol: 'auto' (the shipped human map when the genes are ENSG ids), "
                   "'hs' (the shipped human map), 'none', or a two-column table file. Var names become "
                   "symbols; the ids are kept in var.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Output .h5ad (raw counts of the kept samples x genes); the report is written beside it.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output.")
def preprocess(input, samples, sample_column, study_key, layer, min_total_log, min_gene_counts, min_cpm,
               min_cpm_fraction, n_top_genes, id_map, output, overwrite):
    """Preprocess raw counts for the NB model (App. C.4): depth, count and CPM filters, then the
    top genes by Pearson residuals.  INPUT is an .h5ad, or a counts table with --samples.

    Writes OUTPUT (.h5ad, raw counts) and OUTPUT's name with _report.csv (samples and genes
    removed by each step), and prints the report.
    """
    import os

    import anndata as ad

    from .io import read_counts_table
    from .preprocess import add_sample_sheet_step, id_map_table, map_gene_ids, preprocess_counts

    # The file is always HDF5: a name ending in .csv would be a file that no CSV reader opens.
    if output.suffix.lower() != ".h5ad":
        raise click.BadParameter(f"the file name must end in .h5ad (it is written as HDF5); got {output.name}",
                                 param_hint="'--output'")
    if input.suffix == ".h5ad" and samples is not None:
        raise click.BadParameter("an .h5ad carries its own samples' annotations (obs); --samples is for a "
                                 "genes x samples counts table", param_hint="'--samples'")
    report_path = output.with_name(output.stem + "_report.csv")
    for p in (output, report_path):
        if p.exists() and not overwrite:
            raise click.ClickException(f"{p} exists; pass --overwrite to replace it")
    if not input.is_file():
        raise click.ClickException(f"input file {input} does not exist")
    sheet_info = None
    # An explicit --sample-column must exist; the default may be absent (rows then matched by order).
    given = click.get_current_context().get_parameter_source("sample_column") != click.core.ParameterSource.DEFAULT
    try:
        if input.suffix == ".h5ad":
            adata = ad.read_h5ad(input)
        elif samples is None:
            raise ValueError("a counts table needs --samples (the sample sheet with the study column)")
        else:
            adata, sheet_info = read_counts_table(input, samples, sample_column if given else None, return_info=True)
    except _READ_ERRORS as err:
        raise _fail(err, f"cannot read {input}: ") from None
    try:
        out, report = preprocess_counts(adata, study_key, layer=layer, min_total_log=min_total_log,
                                        min_gene_counts=min_gene_counts, min_cpm=min_cpm,
                                        min_cpm_fraction=min_cpm_fraction, n_top_genes=n_top_genes)
        if sheet_info is not None:
            report = add_sample_sheet_step(out, report, sheet_info)
        table = id_map_table(id_map, out.var_names)
        if table is not None:
            out = map_gene_ids(out, table)
            _say_mapped(id_map, out.var["gene_id"], list(out.var_names))
    except (ValueError, TypeError, ImportError) as err:
        raise _fail(err) from None
    output.parent.mkdir(parents=True, exist_ok=True)
    # Written under temporary names in the same folder and renamed at the end, so that a failure while
    # writing leaves no partial output (which the next run would refuse to replace without --overwrite).
    tmp = {p: p.with_name(f".{p.stem}.partial-{os.getpid()}{p.suffix}") for p in (output, report_path)}
    try:
        out.write_h5ad(tmp[output])
        report.to_csv(tmp[report_path], index=False)
        for final, partial in tmp.items():
            os.replace(partial, final)
    except (ValueError, TypeError, OSError) as err:
        raise _fail(err, f"cannot write {output}: ") from None
    finally:
        for partial in tmp.values():
            partial.unlink(missing_ok=True)
    click.echo(report.to_string(index=False))
    click.echo(f"wrote {output} ({out.n_obs} samples x {out.n_vars} genes) and {report_path}")


def _say_mapped(id_map: str, ids, names) -> None:
    from .preprocess import strip_ensembl_version

    if id_map == "none":
        return
    # Said even when nothing was renamed: a map of the wrong species, or genes that are symbols already,
    # is the usual mistake, and the enrichment alone would not show it.
    renamed = sum(strip_ensembl_version(i) != n for i, n in zip(map(str, ids), names))
    click.echo(f"--id-map {id_map}: {renamed} of {len(names)} genes renamed to symbols; the others keep their ids",
               err=True)


ENRICH_OUTPUTS = ("gene_sets.csv", "gene_sets.gmt", "enrichment.csv", "enrichment_summary.csv", "top_terms.csv")


@main.command(short_help="Gene sets of a fitted model's factors and their over-representation in a GMT collection.")
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--gmt", "gmt_path", default="go_bp", show_default=True,
              help="Gene-set collection: a GMT file (plain or .gz; MSigDB, Enrichr or GO layouts) with the fit's "
                   "gene ids, or go_bp, the GO Biological Process 2023 collection shipped with mssvae (human symbols).")
@click.option("--threshold", type=click.FloatRange(min=0, min_open=True), default=0.5, show_default=True,
              help="Gene g is in factor k's set iff |W_gk| > threshold (§5).")
@click.option("--min-term-size", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--max-term-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--fdr", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="Level of the Benjamini-Yekutieli adjusted p-values.")
@click.option("--id-map", default="none", show_default=True,
              help="Ensembl id -> symbol: 'auto' (the shipped human map when the genes are ENSG ids), "
                   "'hs' (the shipped human map), 'none', or a two-column table file. The model's genes "
                   "(gene sets and background) become symbols, as `mssvae preprocess --id-map` names them; "
                   "genes without a symbol keep their (version-less) id, so they stay in the background but "
                   "match no term.")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("mssvae_enrich"),
              show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace results already in --output-dir.")
def enrich(model_dir, gmt_path, threshold, min_term_size, max_term_size, fdr, id_map, output_dir, overwrite):
    """Test each factor's gene set of the model saved in MODEL_DIR (e.g. `mssvae fit`'s out/model)
    against the terms of --gmt, with the analysed genes as background: one-sided hypergeometric
    test, Benjamini-Yekutieli across the terms tested for each gene set.

    Writes gene_sets.csv (block, factor, gene, weight, p*), gene_sets.gmt, enrichment.csv (every
    tested pair), enrichment_summary.csv (share of gene sets with a significant term, per block)
    and top_terms.csv.  Nothing is downloaded: the collection is the file you give or the one
    shipped in the package, and so is --id-map's table.  A model fitted on Ensembl ids (e.g. after
    `mssvae preprocess --id-map none`) needs --id-map hs against a symbol collection such as go_bp.
    """
    from . import enrichment as en
    from .model import MSSVAE

    _prepare_output_dir(output_dir, ENRICH_OUTPUTS, overwrite)
    try:
        model = MSSVAE.load(model_dir)
    except _READ_ERRORS as err:
        raise _fail(err, f"cannot load the model in {model_dir}: ") from None
    try:
        collection = en.load_builtin(gmt_path) if gmt_path in en.BUILTIN_COLLECTIONS else en.read_gmt(gmt_path)
        genes = en.map_feature_names(model.feature_names_in_, id_map)
        _say_mapped(id_map, model.feature_names_in_, genes)
        table = en.gene_sets_from_model(model, threshold=threshold, return_table=True, feature_names=genes)
        sets = en.gene_sets_from_table(table)
        res = en.enrich(sets, collection, background=genes, min_term_size=min_term_size,
                        max_term_size=max_term_size, fdr=fdr)
    except (ValueError, TypeError) as err:
        raise _fail(err) from None
    output_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(output_dir / "gene_sets.csv", index=False)
    en.write_gmt(sets, output_dir / "gene_sets.gmt")
    res.to_csv(output_dir / "enrichment.csv", index=False)
    summary = en.enrichment_summary(res, sets)
    summary.to_csv(output_dir / "enrichment_summary.csv", index=False)
    en.top_terms(res, n=5, n_gene_sets=len(sets)).to_csv(output_dir / "top_terms.csv", index=False)
    click.echo(summary.to_string(index=False))
    click.echo(f"wrote {output_dir}/: {', '.join(ENRICH_OUTPUTS)}")


@main.command(short_help="One self-contained HTML page about a fit: masks, factors, genes, enrichment, covariates.")
@click.argument("fit_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--enrich-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder of `mssvae enrich` for this fit (gene sets, enrichment summary, top terms).")
@click.option("--covariate", "covariates", multiple=True,
              help="obs column to test against every active factor (repeatable), e.g. --covariate batch.")
@click.option("--study-key", default=None,
              help="obs column holding each sample's study (default: the one the fit recorded, else study).")
@click.option("--layer", default=None, help="h5ad layer the fit used instead of X (e.g. counts).")
@click.option("--title", default=None, help="Page title (default: MSSVAE report: FIT_DIR).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="HTML file to write (default: FIT_DIR/report.html).")
@click.option("--overwrite", is_flag=True, help="Replace an existing report.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy machine).")
def report(fit_dir, enrich_dir, covariates, study_key, layer, title, output, overwrite, threads):
    """Write one self-contained HTML page (figures embedded, no external files: it opens offline)
    about the fit in FIT_DIR, the --output-dir of `mssvae fit` (result.h5ad and model/).

    Sections: summary and settings, masks, training history, variance explained per factor and
    study, factor scores by study, top genes per factor (weights and p*), gene-set sizes,
    enrichment (with --enrich-dir) and the association of each active factor with each
    --covariate column of the samples' annotations.
    """
    from .model import MSSVAE
    from .report import read_enrichment_dir, write_report_anndata

    _set_threads(threads)
    if not fit_dir.is_dir():
        raise click.ClickException(f"fit folder {fit_dir} does not exist (expected the --output-dir of `mssvae fit`)")
    result, model_dir = fit_dir / "result.h5ad", fit_dir / "model"
    for path in (result, model_dir):
        if not path.exists():
            raise click.ClickException(f"{fit_dir} has no {path.name}: is it the --output-dir of `mssvae fit`?")
    output = fit_dir / "report.html" if output is None else output
    if output.is_dir():
        raise click.BadParameter(f"{output} is a folder; give the .html file to write", param_hint="'--output'")
    if output.exists() and not overwrite:
        raise click.ClickException(f"{output} exists; pass --overwrite to replace it")
    enrichment = None
    if enrich_dir is not None:
        try:
            enrichment = read_enrichment_dir(enrich_dir)
        except ValueError as err:
            raise _fail(err) from None

    adata = _read_h5ad(result, "result")
    try:
        model = MSSVAE.load(model_dir)
    except _READ_ERRORS as err:
        raise _fail(err, f"cannot load the model in {model_dir}: ") from None
    info = adata.uns.get("mssvae")
    info = info if isinstance(info, dict) else {}
    if study_key is None:
        study_key = str(info.get("study_key", "study"))
    if study_key not in adata.obs:
        raise click.BadParameter(f"{study_key!r} is not a column of {result}'s obs (columns: "
                                 f"{', '.join(map(str, adata.obs.columns[:20]))})", param_hint="'--study-key'")
    if layer is None and info.get("layer") is not None:
        layer = str(info["layer"])
    if layer is not None and layer not in adata.layers:
        raise click.BadParameter(f"{layer!r} is not a layer of {result} (layers: {', '.join(adata.layers) or 'none'})",
                                 param_hint="'--layer'")
    unknown = [c for c in covariates if c not in adata.obs]
    if unknown:
        verb = "is not a column" if len(unknown) == 1 else "are not columns"
        raise click.BadParameter(f"{', '.join(map(repr, unknown))} {verb} of {result}'s obs (columns: "
                                 f"{', '.join(map(str, adata.obs.columns[:20]))})", param_hint="'--covariate'")
    source = {"fit folder": fit_dir, "enrichment folder": enrich_dir if enrich_dir is not None else "none",
              "study column": study_key, "data": f"layer {layer!r}" if layer is not None else "adata.X"}
    try:
        write_report_anndata(output, model, adata, study_key=study_key, layer=layer, enrichment=enrichment,
                             covariates=list(covariates), title=title or f"MSSVAE report: {fit_dir}",
                             source=source)
    except (ValueError, TypeError) as err:
        raise _fail(err, "cannot write the report: ") from None
    click.echo(f"wrote {output}")


@main.command(short_help="Write simulated data (§4.1 or §4.2) with its truth to .h5ad.")
@click.option("--kind", type=click.Choice(["gaussian", "rnaseq"], case_sensitive=False), default="gaussian",
              show_default=True, help="gaussian: §4.1 nonlinear factor data; rnaseq: §4.2 synthetic bulk counts.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="File to write (.h5ad).")
@click.option("--n-per-study", type=click.IntRange(min=1), default=None, help="gaussian: samples per study (1000).")
@click.option("--n-studies", type=click.IntRange(min=1), default=None, help="gaussian: number of studies (3).")
@click.option("--n-samples", type=click.IntRange(min=1), default=None, help="rnaseq: total samples (3200).")
@click.option("--proportions", type=_Floats(), default=None, help="rnaseq: study proportions (0.3,0.3,0.4).")
@click.option("--n-features", type=click.IntRange(min=1), default=None, help="Features (100 gaussian, 5000 rnaseq).")
@click.option("--n-shared", type=click.IntRange(min=1), default=None, help="True K_S (8 gaussian, 10 rnaseq).")
@click.option("--n-specific", type=click.IntRange(min=1), default=None, help="True K_m (2 gaussian, 3 rnaseq).")
def simulate(kind, seed, output, n_per_study, n_studies, n_samples, proportions, n_features, n_shared, n_specific):
    """Write simulated data with its ground truth to an .h5ad file.

    X holds the data (float values, or int counts for rnaseq), obs['study'] the study labels;
    the truth is in varm['true_W_shared'], varm['true_W_<study>'], obsm['true_Z_shared'] and
    obsm['true_Z_<study>'] (zero outside the study's rows), the settings in uns['simulation'].
    """
    import anndata as ad

    from .simulate import simulate_gaussian, simulate_rnaseq

    kind = kind.lower()
    if output.suffix != ".h5ad":
        raise click.BadParameter("the file name must end in .h5ad", param_hint="'--output'")
    wrong = {"gaussian": {"--n-samples": n_samples, "--proportions": proportions},
             "rnaseq": {"--n-per-study": n_per_study, "--n-studies": n_studies}}[kind]
    bad = [k for k, v in wrong.items() if v is not None]
    if bad:
        other = "rnaseq" if kind == "gaussian" else "gaussian"
        raise click.UsageError(f"{', '.join(bad)}: only for --kind {other}")
    common = dict(n_features=n_features, n_shared=n_shared, n_specific=n_specific)
    try:
        if kind == "gaussian":
            kw = dict(common, n_per_study=n_per_study, n_studies=n_studies)
            sim = simulate_gaussian(random_state=seed, **{k: v for k, v in kw.items() if v is not None})
        else:
            kw = dict(common, n_samples=n_samples, proportions=proportions)
            sim = simulate_rnaseq(random_state=seed, **{k: v for k, v in kw.items() if v is not None})
    except (ValueError, TypeError) as err:
        raise _fail(err) from None

    N, G = sim.X.shape
    obs = pd.DataFrame({"study": pd.Categorical(sim.study)}, index=[f"sample_{i}" for i in range(N)])
    if sim.library_size is not None:
        obs["library_size"] = sim.library_size
    var = pd.DataFrame(index=[f"feature_{j}" for j in range(G)])
    adata = ad.AnnData(X=sim.X, obs=obs, var=var)
    adata.varm["true_W_shared"] = sim.W_shared
    adata.obsm["true_Z_shared"] = sim.Z_shared
    for lab in sim.labels:
        adata.varm[f"true_W_{lab}"] = sim.W_specific[lab]
        Z = np.zeros((N, sim.Z_specific[lab].shape[1]))
        Z[sim.study == lab] = sim.Z_specific[lab]
        adata.obsm[f"true_Z_{lab}"] = Z
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sim.params.items() if v is not None}
    adata.uns["simulation"] = {"kind": kind, "studies": list(sim.labels), "params": params}
    output.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(output)
    k_m = ", ".join(f"{lab} {sim.W_specific[lab].shape[1]}" for lab in sim.labels)
    click.echo(f"wrote {output}: {N} samples x {G} features, {len(sim.labels)} studies; "
               f"true K_S {sim.W_shared.shape[1]}, K_m {k_m}")


def _read_h5ad(path: Path, what: str):
    import anndata as ad

    if path.is_dir() and (path / "result.h5ad").is_file():
        path = path / "result.h5ad"
    if not path.is_file():
        raise click.ClickException(f"{what} file {path} does not exist")
    try:
        return ad.read_h5ad(path)
    except _READ_ERRORS as err:
        raise _fail(err, f"cannot read {what} file {path}: ") from None


@main.command(short_help="Score a fit against the truth of simulated data.")
@click.argument("result", type=click.Path(path_type=Path))
@click.option("--truth", type=click.Path(path_type=Path), default=None,
              help="The .h5ad written by `mssvae simulate` (default: RESULT itself, which holds the truth "
                   "when the simulated file was the input of `mssvae fit`).")
@click.option("--max-density", type=click.FloatRange(min=0, max=1, min_open=True), default=None,
              help="Drop estimated columns with more non-zeros than this fraction (default: 0.25 for "
                   "rnaseq truth, as in §4.2; none for gaussian).")
@click.option("--dci/--no-dci", default=True, show_default=True,
              help="Also compute the disentanglement score (needs obsm['X_mssvae']).")
@click.option("--key", default="mssvae", show_default=True, help="key_added of the fit.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the scores as a one-row CSV.")
def evaluate(result, truth, max_density, dci, key, output):
    """Score the masks of a fit (RESULT: result.h5ad, or the fit's output folder) against the truth
    of a simulated data set: consensus, relevance, recovery (shared and group), DCI, K_S and K_m."""
    from .io import varm_key
    from .metrics import evaluate as evaluate_masks

    res = _read_h5ad(result, "result")
    tru = res if truth is None else _read_h5ad(truth, "truth")
    truth = result if truth is None else truth
    info = res.uns.get(key)
    if not isinstance(info, dict) or f"{key}_W_shared" not in res.varm:
        raise click.ClickException(f"{result} holds no fit under key {key!r} (expected uns[{key!r}] and "
                                   f"varm['{key}_W_shared']); run `mssvae fit` first")
    if "true_W_shared" not in tru.varm:
        raise click.ClickException(f"{truth} holds no ground truth (varm['true_W_shared']); "
                                   "use a file written by `mssvae simulate`")
    if tru is not res:
        _check_same_simulation(res, tru, result, truth)
    studies = [str(s) for s in np.asarray(info.get("studies", [])).ravel()]
    sim_info = tru.uns.get("simulation", {})
    true_studies = [str(s) for s in np.asarray(sim_info.get("studies", [])).ravel()] or sorted(
        k[len("true_W_"):] for k in tru.varm if k.startswith("true_W_") and k != "true_W_shared")
    missing = [s for s in true_studies if s not in studies]
    if missing:
        raise click.ClickException(f"the fit has no masks for the true studies {missing} (fit studies: {studies})")
    if res.n_vars != tru.n_vars:
        raise click.ClickException(f"{result} has {res.n_vars} features but {truth} has {tru.n_vars}")
    if max_density is None and str(sim_info.get("kind", "")) == "rnaseq":
        max_density = 0.25
        click.echo("using --max-density 0.25 (rnaseq truth, §4.2)", err=True)

    W_true = {s: np.asarray(tru.varm[f"true_W_{s}"]) for s in true_studies}
    try:
        W_est = {s: np.asarray(res.varm[varm_key(key, "W", s)]) for s in studies}
    except KeyError as err:
        raise _fail(err, f"{result} lacks a mask: ") from None
    z_kw = {}
    if dci:
        z_kw = _dci_inputs(res, tru, key, info, true_studies)
    try:
        metrics = evaluate_masks(np.asarray(tru.varm["true_W_shared"]), W_true,
                                 np.asarray(res.varm[f"{key}_W_shared"]), W_est, max_density=max_density, **z_kw)
    except (ValueError, TypeError) as err:
        raise _fail(err, "cannot evaluate: ") from None
    click.echo(_metrics_table(metrics, tru.varm["true_W_shared"].shape[1],
                              {s: W.shape[1] for s, W in W_true.items()}))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame([_flat_metrics(metrics)]).to_csv(output, index=False)
        click.echo(f"wrote {output}")


def _plain(value):
    """uns values as plain Python, so that settings read back from two .h5ad files compare equal."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr.tolist()


def _simulation_settings(adata) -> dict | None:
    sim = adata.uns.get("simulation")
    if not isinstance(sim, dict):
        return None
    sim = _plain(sim)
    flat = {k: v for k, v in sim.items() if k != "params"}
    flat.update(sim.get("params") or {})
    return flat


def _check_same_simulation(res, tru, result: Path, truth: Path) -> None:
    """Refuse a --truth that is not the simulation RESULT was fitted on.

    The fit copies its input's uns['simulation'] and varm['true_W_*'] into result.h5ad, so a result
    fitted on simulated data records which truth it belongs to; scoring it against another file
    (another seed, size or kind) would give plausible-looking but meaningless numbers.  A result
    that records nothing (fitted on a copy without them) is scored as before.
    """
    mine, theirs = _simulation_settings(res), _simulation_settings(tru)
    if mine is not None and theirs is not None:
        keys = sorted(set(mine) | set(theirs))
        if mine.get("kind") != theirs.get("kind"):
            keys = ["kind"]  # the other settings of another kind differ by construction: noise
        differ = [f"{k} {theirs.get(k, 'unset')} vs {mine.get(k, 'unset')}"
                  for k in keys if mine.get(k) != theirs.get(k)]
        if differ:
            raise click.ClickException(
                f"--truth {truth} is another simulation than the one recorded in {result}: "
                f"{', '.join(differ)} (--truth vs result); give the file the fit was run on, or leave out "
                "--truth to use the truth recorded in the result")
    recorded = sorted(k for k in res.varm if k.startswith("true_W_"))
    differ = [k for k in recorded if k in tru.varm and (
        np.shape(tru.varm[k]) != np.shape(res.varm[k])
        or not np.allclose(np.asarray(tru.varm[k], dtype=float), np.asarray(res.varm[k], dtype=float), equal_nan=True))]
    if differ:
        raise click.ClickException(
            f"--truth {truth} holds another ground truth than the one recorded in {result} "
            f"(varm {', '.join(differ)} differ); give the file the fit was run on, or leave out --truth")


def _dci_inputs(res, tru, key, info, true_studies) -> dict:
    """Factors for the DCI score, with the truth's rows matched to the result's by sample name."""
    obsm_key = f"X_{key}"
    need = [f"true_Z_{s}" for s in true_studies] + ["true_Z_shared"]
    if obsm_key not in res.obsm or any(k not in tru.obsm for k in need):
        click.echo("note: DCI skipped (factors not stored in the files)", err=True)
        return {}
    if set(res.obs_names) != set(tru.obs_names) or res.n_obs != tru.n_obs:
        click.echo("note: DCI skipped (the result's samples are not the truth's samples)", err=True)
        return {}
    rows = tru.obs_names.get_indexer(res.obs_names)
    study_key = str(info.get("study_key", "study"))
    if study_key not in res.obs:
        click.echo(f"note: DCI skipped (no obs[{study_key!r}] in the result)", err=True)
        return {}
    study = res.obs[study_key].astype(str).to_numpy()
    return dict(
        Z_est=np.asarray(res.obsm[obsm_key]),
        Z_shared_true=np.asarray(tru.obsm["true_Z_shared"])[rows],
        Z_specific_true={s: np.asarray(tru.obsm[f"true_Z_{s}"])[rows][study == s] for s in true_studies},
        study=study,
    )


DEMO_OUTPUTS = ("masks_true_vs_estimated.png", "training.png", "metrics.csv", "W_shared.csv", "history.csv", "model")


@main.command(short_help="Simulate the §4.1 data, fit, score and plot (Fig. 2).")
@click.option("--output-dir", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("mssvae_demo"),
              show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=500, show_default=True,
              help="Training epochs (Table 2: 500).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the data and of the fit.")
@click.option("--prior-weight", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Weight of the spike-and-slab log-prior (default: the model's).")
@click.option("--device", default=None, help="auto (default), cpu, cuda or cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace results already in --output-dir.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy machine).")
@click.option("--n-per-study", type=click.IntRange(min=1), default=1000, hidden=True)
@click.option("--n-features", type=click.IntRange(min=1), default=100, hidden=True)
def demo(output_dir, epochs, seed, prior_weight, device, overwrite, quiet, threads, n_per_study, n_features):
    """Reproduce one replicate of the paper's §4.1 Gaussian experiment (Fig. 2(b)/(c)).

    Simulates 3 studies × 1000 samples × 100 features (K_S = 8, K_m = 2), fits the MSSVAE with
    the model's defaults (Table 2, except the network lr 0.003: see docs/results.md), prints the
    scores and writes masks_true_vs_estimated.png, training.png,
    metrics.csv, W_*.csv, history.csv and model/ to --output-dir.
    """
    from . import MSSVAE
    from .metrics import evaluate_simulation
    from .plotting import plot_history, plot_masks_comparison
    from .simulate import simulate_gaussian
    from .training import TrainingDivergedError

    _check_device(device)
    _set_threads(threads)
    _prepare_output_dir(output_dir, DEMO_OUTPUTS, overwrite)
    try:
        sim = simulate_gaussian(n_per_study=n_per_study, n_features=n_features, random_state=seed)
    except ValueError as err:
        raise _fail(err) from None
    kwargs = {k: v for k, v in dict(prior_weight=prior_weight, device=device).items() if v is not None}
    model = MSSVAE(likelihood="gaussian", max_epochs=epochs, random_state=seed, verbose=not quiet, **kwargs)
    features = np.array([f"feature_{j}" for j in range(sim.X.shape[1])])
    click.echo(f"§4.1 data: {len(sim.labels)} studies x {n_per_study} samples x {sim.X.shape[1]} features, "
               f"true K_S {sim.W_shared.shape[1]}, K_m {sim.W_specific[sim.labels[0]].shape[1]}; "
               f"fitting {epochs} epochs", err=True)
    t0 = time.perf_counter()
    try:
        model.fit(sim.X, sim.study, feature_names=features)
    except TrainingDivergedError as err:
        raise _fail(err, "training failed: ") from None
    except (ValueError, TypeError) as err:
        raise _fail(err) from None
    seconds = time.perf_counter() - t0
    output_dir.mkdir(parents=True, exist_ok=True)
    Z = model.transform(sim.X, sim.study)
    metrics = evaluate_simulation(sim, model.W_shared_, model.W_specific_, Z_est=Z)

    written = _write_model_tables(model, output_dir)
    pd.DataFrame([_flat_metrics(metrics)]).to_csv(output_dir / "metrics.csv", index=False)
    _save_figure(plot_masks_comparison(sim.W_shared, sim.W_specific, model.W_shared_, model.W_specific_),
                 output_dir / "masks_true_vs_estimated.png")
    _save_figure(plot_history(model.history_, title="Training (§4.1 demo)"), output_dir / "training.png")
    written += ["metrics.csv", "masks_true_vs_estimated.png", "training.png"]

    click.echo(f"fit: {len(model.history_)} epochs in {seconds:.1f} s on {model.device_}")
    click.echo(_metrics_table(metrics, sim.W_shared.shape[1], {s: W.shape[1] for s, W in sim.W_specific.items()}))
    click.echo(f"wrote {output_dir}/: {', '.join(written)}")


if __name__ == "__main__":  # pragma: no cover
    main()
