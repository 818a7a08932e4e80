"""Compile the fused decoder's kernels for a GPU (by default Hopper, sm_90a) on any machine, and read ptxas's report.

    python benchmarks/fused_ptxas.py --out benchmarks/results/fused_ptxas.csv
    python benchmarks/fused_ptxas.py --latent 60 --out benchmarks/results/fused_ptxas_k60.csv   (training's grouped K)
    python benchmarks/fused_ptxas.py --arch 80,86,89 --latent 60,80 --only-default \
        --out benchmarks/results/fused_ptxas_other_gpus.csv   (the defaults on an A100, RTX 30xx, RTX 40xx)

No GPU is needed: Triton compiles to PTX and its bundled ptxas assembles it for sm_90a.  For each tiling
(rows BM, H1 block BH1 for the backward, warps, pipeline stages) at the RNA configuration's padded
sizes (K 80 → 128, hidden 256/128) a row records the registers per thread, the bytes spilled to local
memory, the shared memory, and whether the products use Hopper's wgmma or the older mma.sync.
Spills and mma.sync are what a tiling costs before it runs; the time itself needs a GPU
(benchmarks/fused_tune.py).
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import re
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from mssvae import _triton_decoder as kernels

PTR, I32 = "*fp32", "i32"


def compile_kernel(which: str, tiles: dict, KP: int, H1P: int, H2P: int, arch: int = 90) -> dict:
    ints = ["r", "g", "Kg", "H1", "H2", "n_mb", "genes_per"]
    if which == "fwd":
        fn, names = kernels._hidden_fwd, ["zg", "Wg", "V1g", "V2t", "b2", "vh", "F_out", "H2_out"]
        const = dict(BM=tiles["BM"], KP=KP, H1P=H1P, H2P=H2P, DT=tl.bfloat16, PREC="tf32", STORE_H2=True)
        ints.append("row0")
    else:
        fn = kernels._hidden_bwd
        names = ["zg", "Wg", "V1g", "V2t", "vh", "dF", "H2_in", "dz_part", "dW_part", "dV1_part", "dV2_part",
                 "dvh_part", "db2_part"]
        const = dict(BM=tiles["BM"], KP=KP, BH1=tiles["BH1"], H2P=H2P, DT=tl.bfloat16, PREC="tf32")
    sig = {n: ("*bf16" if n in ("H2_out", "H2_in") else PTR) for n in names}
    sig.update({n: I32 for n in ints})
    sig.update({n: "constexpr" for n in const})
    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=GPUTarget("cuda", arch, 32),
                              options=dict(num_warps=tiles["num_warps"], num_stages=tiles["num_stages"]))
    ptx = compiled.asm["ptx"]
    if "cubin" not in compiled.asm:
        raise RuntimeError("Triton did not assemble the kernel")
    try:   # the ptxas Triton itself uses for this architecture (a newer one for sm_90 and up)
        from triton.backends.nvidia.compiler import get_ptxas
        ptxas = get_ptxas(arch).path
    except ImportError:
        ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(ptx)
    # sm_90a and later: the arch-specific variant Triton targets there (wgmma); earlier ones have none
    report = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}{'a' if arch >= 90 else ''}", f.name, "-o", os.devnull],
                            capture_output=True, text=True).stderr
    os.unlink(f.name)
    number = lambda pattern: int(m.group(1)) if (m := re.search(pattern, report)) else -1  # noqa: E731
    return dict(registers=number(r"Used (\d+) registers"), spill_store_bytes=number(r"(\d+) bytes spill stores"),
                spill_load_bytes=number(r"(\d+) bytes spill loads"), shared_bytes=compiled.metadata.shared,
                wgmma=ptx.count("wgmma.mma_async"), mma_sync=ptx.count("mma.sync"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--latent", default="80", help="K before padding; several, comma-separated")
    p.add_argument("--hidden", default="256,128")
    p.add_argument("--kernels", default="fwd,bwd", help="which kernels' tilings to compile (fwd, bwd or both)")
    p.add_argument("--arch", default="90", help="compute capabilities, comma-separated (90: H100/H200)")
    p.add_argument("--only-default", action="store_true", help="only fused_decoder.CONFIG's tilings")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    from mssvae.fused_decoder import CONFIG, _pow2

    H1, H2 = (int(v) for v in a.hidden.split(","))
    H1P, H2P = _pow2(H1), _pow2(H2)
    rows = []
    grid = {"fwd": [dict(BM=bm, num_warps=w, num_stages=s)
                    for bm, w, s in itertools.product((16, 32, 64, 128), (4, 8), (1, 2, 3))],
            "bwd": [dict(BM=bm, BH1=bh, num_warps=w, num_stages=s)
                    for bm, bh, w, s in itertools.product((16, 32, 64), (32, 64, 128), (4, 8), (1, 2, 3))]}
    jobs = [(arch, int(k), which, tiles) for arch in a.arch.split(",") for k in a.latent.split(",")
            for which, tilings in grid.items() if which in a.kernels.split(",")
            for tiles in tilings if tiles == CONFIG[which] or not a.only_default]
    for arch, k, which, tiles in jobs:
        arch = int(arch)
        row = dict(kernel=which, **{key: tiles.get(key) for key in ("BM", "BH1", "num_warps", "num_stages")},
                   default=tiles == CONFIG[which], **compile_kernel(which, tiles, _pow2(k), H1P, H2P, arch),
                   latent=k, hidden=a.hidden, target=f"sm_{arch}{'a' if arch >= 90 else ''} (compiled, not run)",
                   machine=f"{platform.machine()}, triton {triton.__version__}")
        print(row, flush=True)
        rows.append(row)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(a.out, index=False)


if __name__ == "__main__":
    main()
