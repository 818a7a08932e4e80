"""What the extra study-specific columns of a platelet-size fit are (docs/design.md, item 21).

    python benchmarks/platelet_size.py --seed 2 --subsample 0.1 --threads 2 --set kl_free=0.5 \
        --set "hidden=(64,64)" --set batch_size=128 --save /tmp/fit_s2
    python benchmarks/probes/specific_extras.py /tmp/fit_s2 --seed 2

In the simulation two modules of a study share genes (each column has its 178-gene block plus 5 %
of the other genes at random, so two columns share ~30 genes).  For every study: each estimated
active column, its best true module (Jaccard) and whether the Hungarian match keeps it; for the
columns no true module keeps (the "extras"), how many of their genes lie in two or more of the
study's true modules, and what their factor encodes: the leave-one-out R² of its posterior means
from the study's true factors (linear in all of them; k-NN on the best one and on the best pair)
and from the other estimated columns of the block (the same three).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneOut, cross_val_predict
from sklearn.neighbors import KNeighborsRegressor

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from platelet_size import saved_fit_and_data  # noqa: E402

from mssvae.metrics import jaccard_matrix, support  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))


def loo_r2(X: np.ndarray, y: np.ndarray, estimator) -> float:
    """Leave-one-out R² of y (n,) predicted from X (n, d)."""
    pred = cross_val_predict(estimator, X, y, cv=LeaveOneOut())
    return float(1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def explain(y: np.ndarray, F: np.ndarray, names: list[str]) -> str:
    """How well the factors F (n, d) predict y: linear on all, k-NN on the best one and best pair."""
    if F.shape[1] == 0:
        return "nothing to explain it with"
    knn = KNeighborsRegressor(n_neighbors=5)
    lin = loo_r2(F, y, LinearRegression())
    one = max((loo_r2(F[:, [a]], y, knn), names[a]) for a in range(F.shape[1]))
    pairs = [(loo_r2(F[:, list(p)], y, knn), "+".join(names[i] for i in p))
             for p in itertools.combinations(range(F.shape[1]), 2)]
    two = max(pairs) if pairs else (float("nan"), "-")
    return f"linear(all) {lin:5.2f}  kNN best one {one[0]:5.2f} ({one[1]})  kNN best pair {two[0]:5.2f} ({two[1]})"


def main() -> None:
    sim, model = saved_fit_and_data(__doc__)
    Z = model.transform(sim.X, sim.study)
    names = list(model.factor_names_)
    for lab, W_true in sim.W_specific.items():
        rows = sim.study == lab
        T = support(W_true)
        W_est = model.W_specific_[lab]
        S_all = support(W_est)
        cols = np.flatnonzero(S_all.any(0))
        S = S_all[:, cols]
        J = jaccard_matrix(T, S)
        r, c = linear_sum_assignment(J, maximize=True)
        kept = {int(cols[j]) for j in c}
        in_two = T.sum(1) >= 2
        print(f"== {lab}: n = {rows.sum()}, true modules {T.shape[1]} "
              f"({in_two.sum()} genes in two or more), active columns {len(cols)}")
        Zs = Z[rows]
        est_idx = [names.index(f"{lab}_{k}") for k in cols]
        for j, k in enumerate(cols):
            t = int(J[:, j].argmax())
            g = S[:, j]
            tag = "matched" if int(k) in kept else "EXTRA"
            print(f"  column {k}: {g.sum():4d} genes, best true {t} (J {J[t, j]:.3f}), {tag}; "
                  f"genes in 2+ true modules {int((g & in_two).sum())}, in none {int((g & ~T.any(1)).sum())}")
            if tag == "EXTRA":
                y = Zs[:, est_idx[j]]
                xi = [f"xi{i}" for i in range(T.shape[1])]
                print("    from true factors:   " + explain(y, sim.Z_specific[lab], xi))
                others = [i for i in range(len(cols)) if i != j]
                print("    from other columns:  " + explain(y, Zs[:, [est_idx[i] for i in others]],
                                                         [str(cols[i]) for i in others]))
                pair_genes = {(t1, t2): int((g & T[:, t1] & T[:, t2]).sum())
                              for t1, t2 in itertools.combinations(range(T.shape[1]), 2)}
                print(f"    its genes in both modules of each true pair: {pair_genes}")
        for t1, t2 in itertools.combinations(range(T.shape[1]), 2):
            both = T[:, t1] & T[:, t2]
            where = S_all[both].sum(0)
            print(f"  true pair {t1}+{t2}: {both.sum()} genes in both; estimated columns holding them: "
                  + ", ".join(f"{k}:{int(where[k])}" for k in np.flatnonzero(where)))


if __name__ == "__main__":
    main()
