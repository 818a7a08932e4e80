"""Rebuild the GO Biological Process collection shipped in the package (no network at run time).

Source: Enrichr's "GO_Biological_Process_2023" library (Gene Ontology Consortium annotations,
CC BY 4.0), as shipped in the PyPI sdist of blitzgsea 1.3.54 (Apache-2.0), fetched from the
package registry:

    pip download --no-deps --no-binary=:all: blitzgsea==1.3.54 -d /tmp/bg
    python scripts/build_go_bp.py /tmp/bg/blitzgsea-1.3.54.tar.gz

Terms with fewer than 10 or more than 500 genes are dropped (they are too small to test or too
broad to interpret, and it keeps the package small).  Writes src/mssvae/data/go_bp_2023.gmt.gz
(deterministic gzip, no timestamp) and go_bp_2023.json (provenance, sizes, SHA-256 of input
and output).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

MEMBER = "blitzgsea-1.3.54/blitzgsea/data/GO_Biological_Process_2023"
OUT = Path(__file__).resolve().parents[1] / "src" / "mssvae" / "data"
MIN_SIZE, MAX_SIZE = 10, 500


def main(sdist: str) -> None:
    with tarfile.open(sdist) as tar:
        raw = tar.extractfile(MEMBER).read()
    lines, n_in = [], 0
    for line in raw.decode("utf-8").splitlines():
        fields = [f for f in line.rstrip("\n").split("\t")]
        if len(fields) < 3:
            continue
        n_in += 1
        genes = list(dict.fromkeys(g.split(",")[0] for g in fields[2:] if g))
        if MIN_SIZE <= len(genes) <= MAX_SIZE:
            lines.append("\t".join([fields[0], "GO_Biological_Process_2023", *genes]))
    text = ("\n".join(lines) + "\n").encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, filename="") as gz:
        gz.write(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "go_bp_2023.gmt.gz").write_bytes(buf.getvalue())
    meta = {
        "name": "GO Biological Process 2023 (Enrichr library)",
        "source": "PyPI sdist blitzgsea 1.3.54, file " + MEMBER,
        "source_sha256": hashlib.sha256(raw).hexdigest(),
        "licence": "GO annotations: CC BY 4.0 (Gene Ontology Consortium); blitzgsea: Apache-2.0",
        "gene_ids": "human gene symbols",
        "term_size_range": [MIN_SIZE, MAX_SIZE],
        "terms_in_source": n_in,
        "terms_kept": len(lines),
        "output_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
    }
    (OUT / "go_bp_2023.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
