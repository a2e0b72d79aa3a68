"""Evaluate a model on a metadata table; prints metrics.json's headline numbers as one JSON line.

    python jobs/evaluate.py --model URI_OR_CHECKPOINT --metadata M [--audio-root R] --out DIR
                            [--split all|train|val|test] [--splits-csv F] [--overwrite] [--smoke-test]

--model: a checkpoint file or run folder, or an MLflow URI (models:/guitar-note-classifier@champion).
--split defaults to "all" ("test" with --splits-csv); a named split without --splits-csv uses the splits saved
with the model, else recomputes them with the model config's split settings.
--out may be new, empty or a previous evaluation; any other folder is refused unless --overwrite, which writes the
evaluation's files into it and keeps every other file.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from guitar_cls.config import load_config
from guitar_cls.evaluate import evaluate
from guitar_cls.logs import setup_logging
from guitar_cls.outputs import OutputFolderError
from guitar_cls.predict import Classifier
from guitar_cls.train.smoke import smoke_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint file/folder or MLflow model URI")
    parser.add_argument("--metadata", help="metadata table (CSV or Parquet)")
    parser.add_argument("--audio-root", help="folder of the table's source_audio paths (default: the table's folder)")
    parser.add_argument("--out", required=True, help="output folder (new, empty or a previous evaluation)")
    parser.add_argument("--split", choices=("all", "train", "val", "test"))
    parser.add_argument("--splits-csv", help="saved splits (source_audio, event_index, split)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty --out (keeps other files)")
    parser.add_argument("--smoke-test", action="store_true", help="untrained tiny model on a 6-recording demo set")
    args = parser.parse_args()
    setup_logging()
    model, metadata = args.model, args.metadata
    if args.smoke_test:
        from guitar_cls.data.synth import make_demo_dataset

        model = Classifier.from_config(load_config(None, smoke_overrides()))
        metadata = make_demo_dataset(tempfile.mkdtemp(prefix="evaluate_smoke_"), n_recordings=6)
    elif not (model and metadata):
        parser.error("--model and --metadata are required (or --smoke-test)")
    root = args.audio_root or Path(metadata).parent
    try:
        metrics = evaluate(
            model, metadata, root, args.out, split=args.split, splits_csv=args.splits_csv, overwrite=args.overwrite
        )
    except OutputFolderError as e:
        sys.exit(f"error: {e}")
    keys = ("model", "split", "n_events", "n_unusable", "accuracy", "balanced_accuracy", "macro_f1", "mcc", "ece")
    print(json.dumps({"out": str(Path(args.out).resolve()), **{k: metrics[k] for k in keys}}))


if __name__ == "__main__":
    main()
