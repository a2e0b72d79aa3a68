"""Classify note snippets (files or folders of .wav) or, with --recording, every note of whole recordings.

    python jobs/predict.py --model URI_OR_CHECKPOINT PATH [PATH ...] [--recording] [--visualize DIR] [--csv FILE]

Prints a table (path, [onset_sec, offset_sec,] label, confidence, prob_<label>...). --visualize writes the features
with a Grad-CAM overlay per snippet (per note with --recording) into DIR.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from guitar_cls.config import load_config
from guitar_cls.interpret import explain_file
from guitar_cls.logs import setup_logging
from guitar_cls.predict import Classifier, predict_files, predict_recording, wav_files
from guitar_cls.train.smoke import smoke_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="WAV files or folders")
    parser.add_argument("--model", help="checkpoint file/folder or MLflow model URI")
    parser.add_argument("--recording", action="store_true", help="split each file into notes by onset detection")
    parser.add_argument("--visualize", metavar="DIR", help="write a Grad-CAM figure per snippet / note")
    parser.add_argument("--csv", help="also write the table as CSV")
    parser.add_argument("--smoke-test", action="store_true", help="untrained tiny model on 2 demo recordings")
    args = parser.parse_args()
    setup_logging("WARNING")
    paths = args.paths
    if args.smoke_test:
        from guitar_cls.data.synth import make_demo_dataset

        clf = Classifier.from_config(load_config(None, smoke_overrides()))
        paths = [make_demo_dataset(tempfile.mkdtemp(prefix="predict_smoke_"), n_recordings=3).parent]
    elif not (args.model and paths):
        parser.error("--model and at least one PATH are required (or --smoke-test)")
    else:
        clf = Classifier.load(args.model)
    if args.recording:
        tables = [predict_recording(clf, f).assign(path=str(f)) for f in wav_files(paths)]
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        table = table[["path", *[c for c in table.columns if c != "path"]]]
    else:
        table = predict_files(clf, paths)
    if args.visualize:
        for i, row in table[table["error"] == ""].iterrows():
            name = f"{Path(row['path']).stem}_{i:03d}.png"
            explain_file(clf, row["path"], Path(args.visualize) / name, row.get("onset_sec"), row.get("offset_sec"))
    if args.csv:
        table.to_csv(args.csv, index=False)
    print(table.drop(columns=["error"] if not table["error"].any() else []).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
