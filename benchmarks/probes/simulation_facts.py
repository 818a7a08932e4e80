"""Two facts about the §4.2 simulation that docs/design.md uses (items 1 and 22), measured on the
simulation itself rather than on a fit:

1. where the paper's moment estimate of the NB inverse dispersion φ starts (nb_balance.py's data,
   N = 600, G = 300), against the noise's own φ;
2. how many genes two modules of one study share at the platelet size (platelet_size.py's data):
   each true column is a block plus a random 5 % of the other genes, so modules overlap.

    PYTHONPATH=src python benchmarks/probes/simulation_facts.py > benchmarks/results/simulation_facts.txt
"""
import sys
from itertools import combinations
from pathlib import Path

import numpy as np

from mssvae.likelihoods import nb_inverse_dispersion_init
from mssvae.simulate import simulate_rnaseq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from platelet_size import platelet_data  # noqa: E402

if {"-h", "--help"} & set(sys.argv[1:]):   # these probes have no argparse: say what they do, run nothing
    sys.exit(print(__doc__))

for seed in range(3):
    sim = simulate_rnaseq(n_samples=600, n_features=300, random_state=seed)
    phi = nb_inverse_dispersion_init(sim.X.astype(np.float64))
    q = np.quantile(phi, [0.1, 0.25, 0.5, 0.75, 0.9])
    print(f"N = 600, G = 300, seed {seed}: moment phi quantiles 10/25/50/75/90 % = "
          + " / ".join(f"{v:.3g}" for v in q))
    # The noise's own inverse dispersion is 1/BCV² with BCV = bcv_phi + 1/√μ (times a χ² factor of
    # mean about 1): at the median gene mean count it is
    mu = float(np.median(sim.X.mean(0)))
    print(f"    noise phi at the median gene mean ({mu:.0f} counts): "
          f"1/(bcv_phi + 1/sqrt(mu))^2 = {1 / (sim.params['bcv_phi'] + mu ** -0.5) ** 2:.1f}")

for seed in range(3):
    sim = platelet_data(seed)
    sizes, overlaps = [], []
    for lab in sim.labels:
        S = np.c_[sim.W_shared != 0, sim.W_specific[lab] != 0]
        S = S[:, S.any(0)]
        sizes += S.sum(0).tolist()
        overlaps += [int((S[:, a] & S[:, b]).sum()) for a, b in combinations(range(S.shape[1]), 2)]
    print(f"platelet size (N = 1463, G = 5000), seed {seed}: module sizes {min(sizes)}-{max(sizes)} genes; "
          f"two modules of one study share {min(overlaps)}-{max(overlaps)} genes "
          f"(median {np.median(overlaps):.0f}, {len(overlaps)} pairs)")
