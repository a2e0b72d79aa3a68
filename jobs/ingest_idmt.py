"""Builds the metadata table from an IDMT-SMT-Guitar folder tree (XML annotations + WAVs) and reports problems.

Usage: python jobs/ingest_idmt.py --root DIR --out metadata.csv|.parquet [--audio-root DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guitar_cls.data.idmt import ingest_idmt
from guitar_cls.data.schema import summarize_metadata, write_metadata
from guitar_cls.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder searched for *.xml and *.wav")
    parser.add_argument("--out", type=Path, required=True, help="metadata file (.csv or .parquet)")
    parser.add_argument("--audio-root", type=Path, help="folder source_audio is relative to (default --root)")
    args = parser.parse_args(argv)
    setup_logging()
    result = ingest_idmt(args.root, args.audio_root)
    for line in result.problems:
        print(f"problem: {line}", file=sys.stderr)
    if result.table.empty:
        print(f"no events ingested from {args.root}", file=sys.stderr)
        return 1
    write_metadata(result.table, args.out)
    summary = summarize_metadata(result.table)
    print(json.dumps({"metadata": str(args.out), "problems": len(result.problems), **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
