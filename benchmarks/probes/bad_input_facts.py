"""Two measured facts behind docs/bad_inputs.md's choices:

1. Constant features ("Constant features: kept"): the two-block simulation (600 samples, 40
   features) fitted 100 epochs as is, with 10 constant features added (5 all-zero, 5 all-3), and
   with those 10 under the earlier noise prior that took the 5 % variance quantile over every
   feature, constant ones included.
2. Huge values (`X-too-large`): N = 2000 × 20 standard-normal values scaled to 1e17 and to 1e18,
   fitted one epoch with the ±1e15 refusal switched off, to see which gives a NaN loss.

    PYTHONPATH=src python benchmarks/probes/bad_input_facts.py > benchmarks/results/bad_input_facts.txt
"""
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import mssvae._validation as val
import mssvae.likelihoods as lk
from mssvae import MSSVAE
from mssvae.metrics import consensus, support
from mssvae.training import TrainingDivergedError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from conftest import two_block_data  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

torch.set_num_threads(1)
warnings.simplefilter("ignore")
X, study, Ws, _ = two_block_data(n=300)
Xc = np.hstack([X, np.zeros((len(X), 5), np.float32), np.full((len(X), 5), 3.0, np.float32)])


def earlier_priors(self, X, s):
    """The noise prior before the fix: the 5 % quantile over every feature, constant ones too."""
    variances = X.var(0, ddof=1)
    return {"noise": (s["noise_alpha"], lk.inverse_gamma_beta(variances, s["noise_alpha"])),
            "noise_init": max(float(np.quantile(variances, 0.05)), 1e-6)}


def fit(data, label):
    m = MSSVAE(n_shared=5, n_specific=2, max_epochs=100, batch_size=256, random_state=1, lr=0.01,
               device="cpu").fit(data, study)
    W = m.W_shared_
    print(f"{label:55s} shared consensus {consensus(Ws[:, :] != 0, support(W[:40])):.2f}; first-epoch loss "
          f"{m.history_['loss'].iloc[0]:.3g}; largest |W| of the constant rows "
          f"{np.abs(m.module_.W.detach().numpy()[40:]).max() if data.shape[1] > 40 else float('nan'):.4f}; "
          f"finite {bool(np.isfinite(m.transform(data, study)).all())}")


fit(X, "two blocks, 40 features")
fit(Xc, "+ 10 constant features (today's prior)")
current = MSSVAE._empirical_priors
MSSVAE._empirical_priors = earlier_priors
fit(Xc, "+ 10 constant features (earlier prior, quantile over all)")
MSSVAE._empirical_priors = current

val.MAX_ABS_VALUE = float("inf")
rng = np.random.default_rng(0)
base = rng.normal(size=(2000, 20))
labels = np.repeat(["a", "b"], 1000)
for scale in (1e17, 1e18):
    try:
        m = MSSVAE(n_shared=2, n_specific=1, max_epochs=1, batch_size=256, random_state=0).fit(
            (base * scale).astype(np.float32), labels)
        print(f"values scaled to {scale:g}: no NaN, first-epoch loss {m.history_['loss'].iloc[0]:.3g}")
    except TrainingDivergedError as e:
        print(f"values scaled to {scale:g}: NaN loss ({str(e).splitlines()[0][:120]})")
