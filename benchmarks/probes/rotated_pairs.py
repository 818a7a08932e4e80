"""Rotated shared pairs (design.md item 23): does each gene of a pair's union follow one direction?

    python benchmarks/replicate.py --kind rnaseq SIM NET --seeds 1 --threads 1 --save-models FITS --out ...
    python benchmarks/probes/rotated_pairs.py FITS/seed1 --seed 1 SIM

(SIM, NET: the settings of benchmarks/README.md, "The GSE68086 shape over ten seeds".)

For every pair (k, l) of reported shared columns whose supports (|W| > 0.5) overlap with Jaccard
≥ 0.3: the gradient of each union gene's log decoder mean with respect to (z_k, z_l), at every
sample's posterior mean (central differences).  A gene that depends on one direction u of the
(z_k, z_l) plane has gradients parallel to u at every sample; the first right singular vector of its
(N, 2) gradient matrix gives u's angle (mod 180°), and s1² / (s1² + s2²) says how one-dimensional it
is.  Printed per true shared module among the union's genes: the genes' angles (median, spread) and
one-dimensionality, so a rotated pair shows two tight clusters of angles, one per true module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from platelet_size import saved_fit_and_data  # noqa: E402

from mssvae.metrics import active_columns, consensus, jaccard_matrix, support  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))


def gene_directions(module, z: torch.Tensor, pair: tuple[int, int], genes: np.ndarray, eps: float = 1e-2):
    """(angle in degrees mod 180, one-dimensionality) of each gene's gradient in the plane of ``pair``."""
    grads = []
    with torch.no_grad():
        for c in pair:
            step = torch.zeros_like(z)
            step[:, c] = eps
            up = torch.log(module.decode(z + step)[:, genes].double())
            down = torch.log(module.decode(z - step)[:, genes].double())
            grads.append(((up - down) / (2 * eps)).numpy())
    D = np.stack(grads, axis=-1)                      # (N, g, 2)
    angles, oned = np.empty(len(genes)), np.empty(len(genes))
    for i in range(len(genes)):
        _, s, vt = np.linalg.svd(D[:, i, :], full_matrices=False)
        angles[i] = np.degrees(np.arctan2(vt[0, 1], vt[0, 0])) % 180.0
        oned[i] = s[0] ** 2 / max((s ** 2).sum(), 1e-300)
    return angles, oned


def two_clusters(angles: np.ndarray, n_iter: int = 50) -> np.ndarray:
    """Labels 0/1 of a 2-means on the doubled angles (directions mod 180° as points on a circle)."""
    P = np.c_[np.cos(np.radians(2 * angles)), np.sin(np.radians(2 * angles))]
    far = np.argmin(P @ P[0])                         # start from a point and the one most opposite it
    C = P[[0, far]]
    for _ in range(n_iter):
        lab = np.argmax(P @ C.T, axis=1)
        C = np.stack([P[lab == c].mean(0) if (lab == c).any() else C[c] for c in (0, 1)])
    return lab


def describe(angles: np.ndarray, oned: np.ndarray, member: np.ndarray) -> None:
    """Per true module among the union's genes (those in that module alone): centre and spread of angles."""
    for t in np.flatnonzero(member.any(0)):
        sel = member[:, t] & (member.sum(1) == 1)
        if sel.sum() < 3:
            continue
        ang = angles[sel]
        centre = (np.degrees(np.angle(np.exp(2j * np.radians(ang)).mean())) / 2) % 180   # circular mean mod 180
        dev = np.abs((ang - centre + 90) % 180 - 90).mean()
        print(f"  true module {t}: {sel.sum():3d} genes (in it alone), angle {centre:6.1f}° ± {dev:5.1f}° "
              f"(mean |dev|), one-dimensionality median {np.median(oned[sel]):.3f}")
    none = ~member.any(1)
    if none.any():
        print(f"  in no true module: {none.sum()} genes, one-dimensionality median {np.median(oned[none]):.3f}")


def main() -> None:
    sim, model = saved_fit_and_data(__doc__)
    module = model.module_.cpu().eval()
    Z = torch.as_tensor(model.transform(sim.X, sim.study), dtype=torch.float32)
    T = support(sim.W_shared)
    S = support(model.W_shared_)
    act = [int(c) for c in model.active_shared_]
    J = jaccard_matrix(S[:, act], S[:, act])
    split, used = S.copy(), set()
    pairs = sorted(((J[a, b], act[a], act[b]) for a in range(len(act)) for b in range(a + 1, len(act))
                    if J[a, b] >= 0.3), reverse=True)
    for jac, k, m in pairs:
        genes = np.flatnonzero(S[:, k] | S[:, m])
        angles, oned = gene_directions(module, Z, (k, m), genes)
        print(f"columns {k} ({S[:, k].sum()} genes) and {m} ({S[:, m].sum()}): Jaccard {jac:.2f}, union {len(genes)}")
        if k not in used and m not in used:   # a column in two pairs is split in the first (most overlapping)
            used |= {k, m}
            lab = two_clusters(angles)
            split[genes, k], split[genes, m] = lab == 0, lab == 1
            for c in (0, 1):
                inside = {int(t): int(n) for t, n in enumerate(T[genes[lab == c]].sum(0)) if n}
                print(f"  cluster {c}: {(lab == c).sum()} genes; genes per true module {inside}")
        describe(angles, oned, T[genes])
        hist, _ = np.histogram(angles, bins=12, range=(0, 180))
        print("  angle histogram (15° bins):", " ".join(str(h) for h in hist))
    for name, M in (("as reported", S), ("pairs split by direction", split)):
        cols = active_columns(M, max_density=0.25)
        print(f"shared consensus {name}: {consensus(T, M[:, cols]):.3f}")


if __name__ == "__main__":
    main()
