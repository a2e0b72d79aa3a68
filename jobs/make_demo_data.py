"""Generates the synthetic demo data set (WAV + IDMT-style XML + metadata.csv).

Usage: python jobs/make_demo_data.py --out DIR [--recordings N] [--seed S] [--smoke-test]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guitar_cls.data.schema import read_metadata, summarize_metadata
from guitar_cls.data.synth import make_demo_dataset
from guitar_cls.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--recordings", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke-test", action="store_true", help="6 recordings")
    args = parser.parse_args(argv)
    setup_logging()
    path = make_demo_dataset(args.out, n_recordings=6 if args.smoke_test else args.recordings, seed=args.seed)
    summary = summarize_metadata(read_metadata(path))
    print(json.dumps({"metadata": str(path), "n_events": summary["n_events"], "per_class": summary["per_class"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
