"""Duration-only baseline: how far does the annotated note length alone get? Prints one JSON line.

A data set where duration solves the task teaches a CNN to measure length, not timbre; the demo data is built so
that this baseline stays low (balanced accuracy <= 0.70). Grouped cross-validation by recording, a shallow decision
tree on log-duration.

With the audio at hand (``--audio-root``, default the metadata's folder) it also scores duration plus four attack
features (time to the energy peak, the envelope's crest, the share of energy above 4 kHz around the peak, and the
decay over the next 100 ms): the demo data puts clicks and fast passages on every class so that the attack does not
give the label away either.

Usage: python jobs/benchmark.py duration-baseline --metadata M [--audio-root R] [--folds 5] [--seed 0]
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


def attack_features(df: pd.DataFrame, audio_root: str | Path) -> np.ndarray:
    """Returns ``(N, 4)`` attack features of each event, read from its first 250 ms after the annotated onset:
    seconds to the 5-ms energy peak, peak / mean envelope, share of energy above 4 kHz in the 20 ms around the peak,
    and the dB drop from the peak to 100 ms later."""
    from guitar_cls.data.audio import read_segments

    out = np.zeros((len(df), 4))
    for rel, rows in df.groupby("source_audio"):
        spans = [(float(r.onset_sec), float(r.onset_sec) + 0.25) for r in rows.itertuples()]
        for i, got in zip(rows.index, read_segments(Path(audio_root) / str(rel), spans)):
            if isinstance(got, Exception):
                continue
            wave, sr = got
            hop = max(1, int(0.005 * sr))
            n = wave.size // hop
            if n < 2:
                continue
            env = np.sqrt(np.mean(wave[: n * hop].reshape(n, hop) ** 2, axis=1)) + 1e-9  # (T,) 5-ms RMS
            k = int(np.argmax(env))
            a, b = max(0, k * hop - int(0.01 * sr)), k * hop + int(0.01 * sr)
            spec = np.abs(np.fft.rfft(wave[a:b], n=2048)) ** 2
            freqs = np.fft.rfftfreq(2048, 1 / sr)
            later = env[min(n - 1, k + 20)]
            bright = spec[freqs > 4000].sum() / (spec.sum() + 1e-12)
            out[df.index.get_loc(i)] = [k * hop / sr, env[k] / env.mean(), bright, 20 * np.log10(env[k] / later)]
    return out


def duration_baseline(
    df: pd.DataFrame, folds: int = 5, seed: int = 0, max_depth: int = 3, extra: np.ndarray | None = None
) -> dict[str, float]:
    """Returns the out-of-fold balanced accuracy (and plain accuracy) of a tree that sees only log(duration_sec)
    (plus the columns of ``extra``, e.g. attack features).

    Folds are grouped by ``source_audio`` so no recording is in both the fitting and the scoring part.
    """
    x = np.log(df["duration_sec"].clip(lower=1e-4).to_numpy(dtype=float))[:, None]  # (N, 1)
    if extra is not None:
        x = np.c_[x, extra]
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
    parser.add_argument("--audio-root", help="folder the source_audio paths are relative to (default: the table's)")
    parser.add_argument("--no-attack", action="store_true", help="skip the duration + attack baseline")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke-test", action="store_true", help="12-recording demo set in a temp dir")
    args = parser.parse_args(argv)
    if args.metadata is None or args.smoke_test:
        import tempfile

        from guitar_cls.data.synth import make_demo_dataset

        with tempfile.TemporaryDirectory(prefix="duration_baseline_") as tmp:
            meta = make_demo_dataset(tmp, n_recordings=12, seed=args.seed)
            df = read_metadata(meta)
            attack = None if args.no_attack else attack_features(df, tmp)
        source = "demo(12 recordings)"
    else:
        df, source = read_metadata(args.metadata), str(args.metadata)
        attack = None if args.no_attack else attack_features(df, args.audio_root or Path(args.metadata).parent)
    result = duration_baseline(df, folds=args.folds, seed=args.seed)
    if attack is not None:
        both = duration_baseline(df, folds=args.folds, seed=args.seed, extra=attack)
        result["duration_attack_balanced_accuracy"] = both["balanced_accuracy"]
    print(json.dumps({"benchmark": "duration-baseline", "metadata": source, **result}))
    return 0
