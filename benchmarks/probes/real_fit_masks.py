"""Fits of the same real counts side by side: bound, gene sets, and where the scale of each factor sits.

    python benchmarks/platelets.py --threads 1 --work WORK                        # the default (3 candidates)
    mssvae fit WORK/platelets.h5ad --study-key group --likelihood nb --hidden 64,64 --n-shared 20 \\
        --n-specific 5 --batch-size 128 --epochs 800 --seed 0 --mask-init ones --kl-free 0 -o ONES --threads 1
    python benchmarks/probes/real_fit_masks.py WORK/platelets.h5ad WORK/fit/model ONES/model

For each saved model: the start and kl_free kept, its Eq. 2.4 bound per sample on the data
(``model.score``, its own seed, so two fits of one seed are scored with the same draws), the active
factors and their gene-set sizes (|W| > 0.5, the paper's §5 rule), the factors that carry
information (KL > 0.1 nats per sample) with no |W| > 0.5, and per shared column: the largest |W|,
how many entries are above 0.5 and in (0.05, 0.5], and the standard deviation of the posterior means
of its factor over the samples, and how many entries pass 0.5 once that spread is moved into W. The
decoder's scale is normalised (``normalize_decoder``, the NB default), but W[:, k] → W[:, k] / s
with z_k → s·z_k still leaves the decoder's input unchanged: the factor's KL pays for s > 1 and the
mask prior rewards it, so a factor whose posterior means spread far beyond the prior's unit variance
can carry its genes on entries below 0.5.
"""

from __future__ import annotations

import sys
import warnings

import anndata as ad
import numpy as np
import torch

from mssvae import MSSVAE
from mssvae.initialisation import varimax_masks

if {"-h", "--help"} & set(sys.argv[1:]) or len(sys.argv) < 3:   # no argparse: say what it does, run nothing
    sys.exit(print(__doc__))


def describe(model: MSSVAE, X: np.ndarray, study: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bound = model.score(X, study)
    Z = np.asarray(model.transform(X, study))
    W = np.abs(model.W_shared_)
    K_S = W.shape[1]
    sizes = (W > 0.5).sum(0)[np.asarray(model.active_shared_, dtype=int)].tolist()
    informative = [name for name, kl in zip(model.factor_names_, model.factor_kl_) if kl > 0.1]
    with_support = set()
    for block, w in [("shared", model.W_shared_), *model.W_specific_.items()]:
        for k in np.flatnonzero((np.abs(w) > 0.5).any(0)):
            with_support.add(f"{block}_{k}")
    print(f"start {model.mask_init_}, kl_free {model.kl_free_}; Eq. 2.4 per sample {bound:.2f}")
    if getattr(model, "candidates_", None) is not None and len(model.candidates_):
        print(model.candidates_.to_string(index=False))
    print(f"active shared {model.n_shared_active_} of {K_S}, gene-set sizes {sorted(sizes, reverse=True)}; "
          f"active specific {dict(model.n_specific_active_)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model._warn_hidden_factors()   # the fit's own count: merged and folded columns' genes are in other sets
    own = next((str(w.message).split(" but ")[0] for w in caught if "carry information" in str(w.message)), "none")
    print(f"factors with KL > 0.1 nats: {len(informative)}, of which with no |W| > 0.5 in their own column: "
          f"{len([f for f in informative if f not in with_support])}; the fit's warning: {own}")
    # #|W|·sd > 0.5: the genes above the threshold once the factor's spread is moved into W (z at unit spread)
    print("shared column: max|W|, #|W| > 0.5, #|W| in (0.05, 0.5], sd of posterior means, KL, #|W|·sd > 0.5")
    for k in range(K_S):
        a, sd = W[:, k], Z[:, k].std()
        print(f"  {k:3d} {a.max():6.2f} {(a > 0.5).sum():5d} {((a > 0.05) & (a <= 0.5)).sum():5d} "
              f"{sd:6.2f} {model.factor_kl_[k]:6.2f} {(a * sd > 0.5).sum():5d}")


def main() -> None:
    torch.set_num_threads(1)
    adata = ad.read_h5ad(sys.argv[1])
    X, study = np.asarray(adata.X), adata.obs["group"].astype(str).to_numpy()
    for path in sys.argv[2:]:
        print(f"## {path}")
        model = MSSVAE.load(path)
        describe(model, X, study)
        print()
    # where the varimax start puts the entries on these data (the last model's sizes and seed)
    codes = np.searchsorted(model.studies_, study)
    W0 = varimax_masks(X, codes, model.n_shared, list(model._n_specific), "nb", random_state=int(model.random_state))
    print(f"varimax start on these data: {(W0 > 0.5).mean():.3f} of the entries above 0.5, "
          f"{((W0 > 0.05) & (W0 <= 0.5)).mean():.3f} in (0.05, 0.5], median {np.median((W0 > 0.5).sum(0)):.0f} "
          "entries above 0.5 per column")


if __name__ == "__main__":
    main()
