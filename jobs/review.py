"""Rank a metadata table's events for a person to check (likely label errors, model disagreement, uncertainty).

    python jobs/review.py --model URI [--models URI ...] --metadata M [--audio-root R] --out review.csv
                          [--limit N] [--smoke-test]

--model / --models: checkpoint files or run folders, or MLflow URIs (models:/guitar-note-classifier@champion,
runs:/<id>/model); with several, disagreement between them is a reason too. Columns of the CSV: file, onset, offset,
label, predicted, scores (JSON), reason; the first row is the most worth checking (see guitar_cls/review.py).
Prints one JSON line: the output path, the number of rows and the count per reason.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from guitar_cls.config import load_config
from guitar_cls.logs import setup_logging
from guitar_cls.predict import Classifier
from guitar_cls.review import review
from guitar_cls.train.smoke import smoke_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint file/folder or MLflow model URI")
    parser.add_argument("--models", nargs="+", default=[], help="more models: their disagreement is ranked too")
    parser.add_argument("--metadata", help="metadata table (CSV or Parquet)")
    parser.add_argument("--audio-root", help="folder of the table's source_audio paths (default: the table's folder)")
    parser.add_argument("--out", required=True, help="review list CSV to write")
    parser.add_argument("--limit", type=int, help="keep only the first N rows")
    parser.add_argument("--smoke-test", action="store_true", help="two untrained tiny models on a 6-recording demo set")
    args = parser.parse_args()
    setup_logging()
    models, metadata = [args.model, *args.models], args.metadata
    if args.smoke_test:
        from guitar_cls.data.synth import make_demo_dataset

        cfg = load_config(None, smoke_overrides())
        models = [Classifier.from_config(cfg, seed=0), Classifier.from_config(cfg, seed=1)]
        metadata = make_demo_dataset(tempfile.mkdtemp(prefix="review_smoke_"), n_recordings=6)
    elif not (args.model and metadata):
        parser.error("--model and --metadata are required (or --smoke-test)")
    root = args.audio_root or Path(metadata).parent
    table = review(models, metadata, root, out=args.out, limit=args.limit)
    reasons = table["reason"].str.split("; ").explode().replace("", "none").value_counts()
    print(json.dumps({"out": str(Path(args.out).resolve()), "rows": len(table), "reasons": reasons.to_dict()}))


if __name__ == "__main__":
    main()
