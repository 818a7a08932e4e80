"""Is a saved fit the same training as another?  Prints the start and kl_free kept, the candidates'
bounds and whether every tensor of the two modules is identical (design.md item 26).

    python benchmarks/probes/same_fit.py AUTO_DIR/seed9 SINGLE_DIR/seed9
"""

from __future__ import annotations

import sys

import torch

from mssvae import MSSVAE


def main() -> None:
    a, b = (MSSVAE.load(path) for path in sys.argv[1:3])
    for path, m in zip(sys.argv[1:3], (a, b)):
        print(f"{path}: mask_init_={m.mask_init_} kl_free_={m.kl_free_:g} start_scores_={m.start_scores_} "
              f"candidate_scores_={m.candidate_scores_}")
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    print(f"every module tensor identical: {same}")


if __name__ == "__main__":
    main()
