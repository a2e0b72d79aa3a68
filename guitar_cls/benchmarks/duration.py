"""Duration-only baseline: how far does the annotated note length alone get? Prints one JSON line.

A data set where duration solves the task teaches a CNN to measure length, not timbre; the demo data is built so
that this baseline stays low (balanced accuracy <= 0.70). Grouped cross-validation by recording, a shallow decision
tree on log-duration.

Usage: python jobs/benchmark.py duration-baseline --metadata M [--folds 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold
from sklearn.tree import DecisionTreeClassifier

from guitar_cls.data.schema import LABEL_TO_INDEX, read_metadata


def duration_baseline(df: pd.DataFrame, folds: int = 5, seed: int = 0, max_depth: int = 3) -> dict[str, float]:
    """Returns the out-of-fold balanced accuracy (and plain accuracy) of a tree that sees only log(duration_sec).

    Folds are grouped by ``source_audio`` so no recording is in both the fitting and the scoring part.
    """
    x = np.log(df["duration_sec"].clip(lower=1e-4).to_numpy(dtype=float))[:, None]  # (N, 1)
    y = df["label_category"].map(LABEL_TO_INDEX).to_numpy(dtype=int)
    groups = df["source_audio"].astype(str).to_numpy()
    n_splits = min(folds, len(np.unique(groups)))
    if n_splits < 2:
        raise ValueError(f"need at least 2 recordings for grouped cross-validation, got {len(np.unique(groups))}")
    pred = np.empty_like(y)
    cv = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in cv.split(x, y, groups):
        tree = DecisionTreeClassifier(max_depth=max_depth, class_weight="balanced", random_state=seed)
        pred[test] = tree.fit(x[train], y[train]).predict(x[test])
    return {
        "balanced_accuracy": round(float(balanced_accuracy_score(y, pred)), 4),
        "accuracy": round(float(np.mean(pred == y)), 4),
        "n_events": int(len(y)),
        "n_recordings": int(len(np.unique(groups))),
        "folds": int(n_splits),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py duration-baseline", description=__doc__.splitlines()[0])
    parser.add_argument("--metadata", type=Path, help="metadata CSV/Parquet (default: a small fresh demo set)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke-test", action="store_true", help="12-recording demo set in a temp dir")
    args = parser.parse_args(argv)
    if args.metadata is None or args.smoke_test:
        import tempfile

        from guitar_cls.data.synth import make_demo_dataset

        with tempfile.TemporaryDirectory(prefix="duration_baseline_") as tmp:
            df = read_metadata(make_demo_dataset(tmp, n_recordings=12, seed=args.seed))
        source = "demo(12 recordings)"
    else:
        df, source = read_metadata(args.metadata), str(args.metadata)
    result = duration_baseline(df, folds=args.folds, seed=args.seed)
    print(json.dumps({"benchmark": "duration-baseline", "metadata": source, **result}))
    return 0
