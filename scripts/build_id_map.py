"""Rebuild the human Ensembl gene id → symbol map shipped in the package (no network at run time).

Source: Debian's r-bioc-org.hs.eg.db 3.16.0-1 (Bioconductor org.Hs.eg.db; NCBI Gene 2022-09-12,
Ensembl ids as NCBI lists them), fetched from the Debian registry:

    cd /tmp && apt-get download r-bioc-org.hs.eg.db
    python scripts/build_id_map.py /tmp/r-bioc-org.hs.eg.db_3.16.0-1_all.deb

Rows: the `ensembl` table joined to `gene_info` on the Entrez key, ordered by Entrez id (so for an
Ensembl id listed twice, `mssvae.preprocess.read_id_map` keeps the older, usually canonical
symbol).  This is the same source and query as `../shared/data/genesets/ensembl_to_symbol_*`.
Writes src/mssvae/data/ensembl_to_symbol_hs.tsv.gz (deterministic gzip) and a .json with the
provenance and SHA-256 of input and output.  Licences: the Debian package is Artistic-2.0; NCBI Gene
data are public domain.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

SQLITE = "usr/lib/R/site-library/org.Hs.eg.db/extdata/org.Hs.eg.sqlite"
OUT = Path(__file__).resolve().parents[1] / "src" / "mssvae" / "data"
NAME = "ensembl_to_symbol_hs"


def main(deb: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
        con = sqlite3.connect(Path(tmp) / SQLITE)
        rows = con.execute("SELECT e.ensembl_id, g.symbol FROM ensembl e JOIN gene_info g ON e._id = g._id "
                           "ORDER BY e._id, e.rowid").fetchall()
        meta = dict(con.execute("SELECT name, value FROM metadata").fetchall())
        con.close()
    text = "ensembl_id\tsymbol\n" + "".join(f"{e}\t{s}\n" for e, s in rows)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        gz.write(text.encode())
    out = OUT / f"{NAME}.tsv.gz"
    out.write_bytes(buf.getvalue())
    info = {
        "source": "Debian package r-bioc-org.hs.eg.db 3.16.0-1 (Bioconductor org.Hs.eg.db)",
        "source_file": Path(deb).name,
        "source_sha256": hashlib.sha256(Path(deb).read_bytes()).hexdigest(),
        "ncbi_gene_date": meta.get("EGSOURCEDATE"),
        "query": "ensembl JOIN gene_info ON _id, ordered by Entrez key, then row order",
        "rows": len(rows),
        "distinct_ids": len({e for e, _ in rows}),
        "licence": "Debian package Artistic-2.0; NCBI Gene data public domain",
        "built_by": "scripts/build_id_map.py",
        "output_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    (OUT / f"{NAME}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
