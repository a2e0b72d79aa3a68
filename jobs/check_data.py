"""Checks a metadata table against its audio: prints a summary, and every bad row (exit 1) when any is wrong.

Usage: python jobs/check_data.py --metadata M [--audio-root R] [--allow-outside-root] [--smoke-test]

A source_audio that is absolute or climbs out of the audio root (../x.wav) is a bad row unless --allow-outside-root.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from guitar_cls.data.schema import MetadataError, format_problems, read_metadata, summarize_metadata, validate_metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path, help="CSV or Parquet metadata table")
    parser.add_argument("--audio-root", type=Path, help="folder of the source_audio paths (default: the table's)")
    parser.add_argument("--allow-outside-root", action="store_true", help="accept absolute and ../ source_audio paths")
    parser.add_argument("--smoke-test", action="store_true", help="check a fresh 6-recording demo set")
    args = parser.parse_args(argv)
    if args.smoke_test:
        from guitar_cls.data.synth import make_demo_dataset

        with tempfile.TemporaryDirectory(prefix="check_data_") as tmp:
            return check(make_demo_dataset(tmp, n_recordings=6, seed=0), None)
    if args.metadata is None:
        parser.error("--metadata is required (or --smoke-test)")
    return check(args.metadata, args.audio_root, allow_outside_root=args.allow_outside_root)


def check(metadata: Path, audio_root: Path | None, *, allow_outside_root: bool = False) -> int:
    try:
        df = read_metadata(metadata)
    except MetadataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(summarize_metadata(df), indent=2))
    problems = validate_metadata(df, audio_root or metadata.parent, allow_outside_root=allow_outside_root)
    if problems:
        print(f"{len(problems)} problem(s) in {metadata}:\n{format_problems(problems)}", file=sys.stderr)
        return 1
    print(f"ok: {len(df)} events, no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
