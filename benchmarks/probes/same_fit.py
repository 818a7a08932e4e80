"""The start and kl_free each saved fit kept, with the candidates' bounds; given two fits, also
whether every tensor of the two modules is identical (design.md item 26).

    python benchmarks/probes/same_fit.py AUTO_DIR/seed9 SINGLE_DIR/seed9
    python benchmarks/probes/same_fit.py DIR/seed2 DIR/seed3 --choice-only
"""

from __future__ import annotations

import sys

import torch

from mssvae import MSSVAE


def main() -> None:
    paths = [a for a in sys.argv[1:] if a != "--choice-only"]
    models = [MSSVAE.load(path) for path in paths]
    for path, m in zip(paths, models):
        print(f"{path}: mask_init_={m.mask_init_} kl_free_={m.kl_free_:g} start_scores_={m.start_scores_} "
              f"candidate_scores_={m.candidate_scores_}")
    if "--choice-only" in sys.argv or len(models) != 2:
        return
    a, b = models
    sa, sb = a.module_.state_dict(), b.module_.state_dict()
    same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    print(f"every module tensor identical: {same}")


if __name__ == "__main__":
    main()
