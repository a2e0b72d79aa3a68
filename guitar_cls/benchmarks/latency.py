"""Single-thread CPU latency of one 1-s snippet (features included): PyTorch and ONNX Runtime, for a model and for
the brief's reference ResNet (``base_width=64, blocks=[2, 2, 2, 2]``, random weights, default features).

    python jobs/benchmark.py latency --model URI_OR_CHECKPOINT [--seconds 1.0] [--runs 50] [--smoke-test]

Prints one JSON line. ``onnx_ms`` is ONNX Runtime on the one-snippet waveform graph (``snippet`` variant: front
end inside the graph, no padding) with ``intra_op_num_threads=1``, as a torch-free deployment classifying one note
per request runs it; ``onnx_batch_graph_ms`` the dynamic-batch waveform graph given that one snippet;
``onnx_torch_frontend_ms`` the features graph fed by the PyTorch front end. PyTorch runs with
``torch.set_num_threads(1)``. Each figure is the median of ``--runs``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from guitar_cls.config import load_config
from guitar_cls.export import export_onnx, onnx_latency_ms, onnx_session
from guitar_cls.inference import latency_ms
from guitar_cls.predict import Classifier
from guitar_cls.train.smoke import smoke_overrides

log = logging.getLogger(__name__)

REFERENCE = {"name": "resnet", "params": {"base_width": 64, "blocks": [2, 2, 2, 2]}}


def measure(clf: Classifier, *, seconds: float, runs: int, workdir: Path, tag: str) -> dict[str, Any]:
    """Returns ``{torch_ms, onnx_ms, onnx_variant, onnx_batch_graph_ms, onnx_torch_frontend_ms}`` of one classifier.

    ``onnx_ms`` times the one-snippet waveform graph (front end inside ONNX Runtime; the features graph with the
    front end in PyTorch for hpss, which does not export); ``onnx_batch_graph_ms`` the dynamic-batch waveform graph
    (it masks padding, which one snippet does not have); ``onnx_torch_frontend_ms`` the features graph fed by the
    PyTorch front end (the split a deployment with PyTorch may use; the waveform graphs need no PyTorch).
    """
    torch_ms = latency_ms(clf.model, clf.frontend, clf.cfg.data.sample_rate, seconds=seconds, runs=runs)
    out: dict[str, Any] = {"torch_ms": torch_ms}
    variants = {"snippet": "onnx_ms", "waveform": "onnx_batch_graph_ms", "features": "onnx_torch_frontend_ms"}
    if clf.cfg.features.name == "hpss":
        variants = {"features": "onnx_ms"}
    for variant, key in variants.items():
        path = export_onnx(
            clf.model,
            clf.frontend,
            clf.cfg,
            workdir / f"{tag}_{variant}.onnx",
            include_frontend=variant != "features",
            snippet=variant == "snippet",
        )
        out[key] = onnx_latency_ms(onnx_session(path, threads=1), clf.frontend, clf.cfg, seconds=seconds, runs=runs)
        out.setdefault("onnx_variant", variant)
    if "onnx_torch_frontend_ms" not in out:
        out["onnx_torch_frontend_ms"] = out["onnx_ms"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py latency", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint file/folder or MLflow model URI")
    parser.add_argument("--seconds", type=float, default=1.0, help="snippet length")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per figure (median reported)")
    parser.add_argument("--smoke-test", action="store_true", help="an untrained tiny model, 5 runs")
    args = parser.parse_args(argv)
    if not args.model and not args.smoke_test:
        parser.error("--model is required (or --smoke-test)")
    runs = 5 if args.smoke_test else args.runs
    if args.smoke_test:
        clf = Classifier.from_config(load_config(None, smoke_overrides()))
    else:
        clf = Classifier.load(args.model)
    reference = Classifier.from_config(
        load_config(None, [("model.name", REFERENCE["name"]), ("model.params", REFERENCE["params"])])
    )
    with tempfile.TemporaryDirectory(prefix="latency_") as tmp:
        model = measure(clf, seconds=args.seconds, runs=runs, workdir=Path(tmp), tag="model")
        ref = measure(reference, seconds=args.seconds, runs=runs, workdir=Path(tmp), tag="reference")
    line = {
        "benchmark": "latency",
        "model": clf.source,
        "model_name": clf.cfg.model.name,
        "members": len(getattr(clf, "members", [clf])),  # an ensemble is timed as one network of all its members
        "features": clf.cfg.features.name,
        "seconds": args.seconds,
        "runs": runs,
        "threads": 1,
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in model.items()},
        "reference": "resnet base_width=64 blocks=[2,2,2,2], random weights, default features",
        **{f"reference_{k}": round(v, 3) if isinstance(v, float) else v for k, v in ref.items()},
        "torch_version": importlib.metadata.version("torch"),
        "onnxruntime_version": importlib.metadata.version("onnxruntime"),
    }
    print(json.dumps(line))
    return 0
