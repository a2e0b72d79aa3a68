"""Generates the demo data set: synthesized and sample-based guitar recordings (WAV + IDMT-style XML + metadata.csv).

Usage: python jobs/make_demo_data.py --out DIR [--recordings N] [--seed S] [--sources synth,samples] [--smoke-test]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from guitar_cls.data.schema import read_metadata, summarize_metadata
from guitar_cls.data.synth import SOURCES, make_demo_dataset
from guitar_cls.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (new, empty, or an earlier demo set)")
    parser.add_argument("--recordings", type=int, default=120, help="recordings in all, split evenly by source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sources", default=",".join(SOURCES), help=f"comma list of {', '.join(SOURCES)}")
    parser.add_argument("--exact-onsets", action="store_true", help="annotate played onsets (segmentation scoring)")
    parser.add_argument("--smoke-test", action="store_true", help="6 recordings")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        path = make_demo_dataset(
            args.out,
            n_recordings=6 if args.smoke_test else args.recordings,
            seed=args.seed,
            sources=[s.strip() for s in args.sources.split(",") if s.strip()],
            exact_onsets=args.exact_onsets,
        )
    except (FileExistsError, ValueError) as e:
        print(f"make_demo_data: {e}", file=sys.stderr)
        return 2
    df = read_metadata(path)
    summary = summarize_metadata(df)
    per_source = {str(k): int(v) for k, v in df["subset_id"].value_counts().sort_index().items()}
    print(json.dumps({"metadata": str(path), "n_events": summary["n_events"], "per_class": summary["per_class"],
                      "per_source": per_source}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
