"""Export a model to ONNX (dynamic batch and time axes), check it against PyTorch; prints one JSON line.

    python jobs/export_onnx.py --model URI_OR_CHECKPOINT --out model.onnx [--include-frontend | --snippet]
        [--smoke-test]

Without --include-frontend the graph maps features [B, C, F, T] + frame lengths to logits; with it, waveforms
[B, N] + sample lengths to probabilities (front end inside; not for hpss features). --snippet writes the waveform
graph for one snippet at a time ([1, N], no padding, no masking ops: the fastest for one request per note).
"""

from __future__ import annotations

import argparse
import json

from guitar_cls.config import load_config
from guitar_cls.export import export_model
from guitar_cls.logs import setup_logging
from guitar_cls.predict import Classifier
from guitar_cls.train.smoke import smoke_overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint file/folder or MLflow model URI")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--include-frontend", action="store_true", help="waveform in, probabilities out")
    parser.add_argument("--snippet", action="store_true", help="the waveform graph for one snippet at a time")
    parser.add_argument("--smoke-test", action="store_true", help="export an untrained tiny model")
    args = parser.parse_args()
    if not args.model and not args.smoke_test:
        parser.error("--model is required (or --smoke-test)")
    setup_logging()
    source = Classifier.from_config(load_config(None, smoke_overrides())) if args.smoke_test else args.model
    summary = export_model(
        source, args.out, include_frontend=args.include_frontend or args.snippet, snippet=args.snippet
    )
    print(json.dumps(summary))
    if summary["max_abs_diff_probabilities"] >= 1e-4:
        raise SystemExit(f"ONNX Runtime differs from PyTorch by {summary['max_abs_diff_probabilities']:.2e}")


if __name__ == "__main__":
    main()
