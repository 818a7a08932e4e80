"""Where a platelet-size fit loses shared consensus: each true shared factor against the estimate.

    python benchmarks/platelet_size.py --seed 4 --subsample 0.1 --threads 2 --set kl_free=0.5 \
        --set "hidden=(64,64)" --set batch_size=128 --save /tmp/fit_s4
    python benchmarks/probes/shared_misses.py /tmp/fit_s4 --seed 4

For each true shared support (|W| > 0.5, as the §4.2 scores read it): its size, the estimated
shared column with the best Jaccard and that Jaccard, the Hungarian match's Jaccard, and the best
Jaccard among every study's specific columns (a shared program fitted as specific ones), and how
many of the true genes the best column misses are curved ones (§4.2's sin genes, j ≡ 0 mod 3;
``simulate.nonlinear_features``) out of the curved genes of that factor.  Then each estimated
shared column: its size, the true support it overlaps most, and how much of it lies inside that
support (a split, a union of several modules, or noise).

    python benchmarks/probes/shared_misses.py FIT --seed S [--sim ...] --before CK/.../checkpoint.safetensors

``--before`` (the kept candidate's last checkpoint, written by ``replicate.py --checkpoints CK``
before the mask check) adds how many of the missed genes were still in the slab (|W| > 0.5) when
training ended, so were removed by the mask check (docs/design.md item 17), not held at 0 by the spike.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from platelet_size import saved_fit_and_data  # noqa: E402

from mssvae.metrics import active_columns, jaccard_matrix, support  # noqa: E402
from mssvae.simulate import nonlinear_features  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))


def main() -> None:
    checkpoint = None
    if "--before" in sys.argv:
        i = sys.argv.index("--before")
        checkpoint = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    sim, model = saved_fit_and_data(__doc__)
    before = None if checkpoint is None else np.abs(load_file(checkpoint)["module.W"][:, :model.W_shared_.shape[1]])
    T = support(sim.W_shared)
    S = support(model.W_shared_)
    keep = active_columns(S, max_density=0.25)
    S = S[:, keep]
    J = jaccard_matrix(T, S)
    rows, cols = linear_sum_assignment(J, maximize=True)
    match = dict(zip(rows, cols))
    spec = np.concatenate([support(w) for w in model.W_specific_.values()], axis=1)
    Jspec = jaccard_matrix(T, spec) if spec.shape[1] else np.zeros((T.shape[1], 1))
    print(f"true shared {T.shape[1]}, estimated active shared {S.shape[1]} (columns {keep.tolist()})")
    print("true  size  best_est  J_best  J_matched  best_specific_J  overlap_of_true_in_est_union  "
          "curved_missed/curved" + ("  missed_removed_by_mask_check" if before is not None else ""))
    union = S.any(1)
    curved = nonlinear_features(T.shape[0])
    for k in range(T.shape[1]):
        b = int(J[k].argmax()) if S.shape[1] else -1
        jm = J[k, match[k]] if k in match else 0.0
        missed = T[:, k] & ~S[:, b] if b >= 0 else T[:, k]
        print(f"{k:4d} {T[:, k].sum():5d} {keep[b] if b >= 0 else -1:9d} {J[k].max() if S.shape[1] else 0:7.3f}"
              f" {jm:10.3f} {Jspec[k].max():16.3f} {(T[:, k] & union).sum() / T[:, k].sum():10.3f}"
              f"  {(missed & curved).sum():3d}/{(T[:, k] & curved).sum()} of {missed.sum()} missed"
              + (f"  {(missed & (before[:, keep[b]] > 0.5)).sum():3d}" if before is not None and b >= 0 else ""))
    print("estimated shared columns: size, best true, J, share of the column inside that true support")
    for j in range(S.shape[1]):
        t = int(J[:, j].argmax())
        inside = (S[:, j] & T[:, t]).sum() / max(S[:, j].sum(), 1)
        print(f"{keep[j]:4d} {S[:, j].sum():5d} {t:4d} {J[t, j]:6.3f} {inside:6.3f}")


if __name__ == "__main__":
    main()
