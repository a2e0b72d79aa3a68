"""Note segmentation of whole recordings: ``onsets.detect_notes`` scored against the played onsets. One JSON line.

A fresh demo set is rendered with ``exact_onsets=True`` (the XML holds the onset each note was played at, not an
annotator's mark), ``detect_notes`` runs on every WAV (mono), and its onsets are matched one-to-one to the reference
within ``--window`` seconds (``mir_eval.util.match_events``, as ``mir_eval.onset.f_measure`` does). ``f_measure``,
``precision`` and ``recall`` are pooled over all notes (true positives, references and detections summed over the
recordings); ``mean_file_f_measure`` is the mean of ``mir_eval.onset.f_measure`` per recording. ``per_source`` holds
the pooled F per ``subset_id`` and ``recall_per_label`` the share of each class's notes that were found.

    python jobs/benchmark.py segmentation [--recordings 24] [--seed 0] [--window 0.05] [--smoke-test]
    python jobs/benchmark.py segmentation --metadata M   # an existing table's onsets as the reference
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

from guitar_cls.data.schema import read_metadata
from guitar_cls.onsets import detect_notes


def _f(tp: int, n_ref: int, n_est: int) -> tuple[float, float, float]:
    """Returns (F, precision, recall) of pooled counts (0 where undefined, as mir_eval)."""
    p = tp / n_est if n_est else 0.0
    r = tp / n_ref if n_ref else 0.0
    return (2 * p * r / (p + r) if p + r else 0.0), p, r


def score_segmentation(df: pd.DataFrame, audio_root: str | Path, window: float = 0.05, **detect_kw: Any) -> dict:
    """Returns pooled onset F/precision/recall of ``detect_notes`` over the recordings of a metadata table.

    Args:
        df: metadata table; its ``onset_sec`` per ``source_audio`` is the reference.
        audio_root: folder the ``source_audio`` paths are relative to.
        window: a detection within this many seconds of a reference onset is a hit.
        detect_kw: passed to ``detect_notes``.
    """
    import mir_eval

    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # subset -> [tp, n_ref, n_est]
    label_hits: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # label -> [found, total]
    file_f: list[float] = []
    errors: list[float] = []
    seconds = 0.0
    for source, part in df.groupby("source_audio", sort=True):
        part = part.sort_values("onset_sec")
        wave, sr = sf.read(Path(audio_root) / str(source), dtype="float32", always_2d=True)
        t0 = time.perf_counter()
        notes = detect_notes(wave.mean(axis=1), sr, **detect_kw)
        seconds += time.perf_counter() - t0
        ref = part["onset_sec"].to_numpy(dtype=float)
        est = np.array([a for a, _ in notes], dtype=float)
        matching = mir_eval.util.match_events(ref, est, window) if est.size else []
        file_f.append(mir_eval.onset.f_measure(ref, est, window=window)[0])
        c = counts[str(part["subset_id"].iloc[0])]
        c[0], c[1], c[2] = c[0] + len(matching), c[1] + ref.size, c[2] + est.size
        found = np.zeros(ref.size, dtype=bool)
        for i, j in matching:
            found[i] = True
            errors.append(est[j] - ref[i])
        for label, hit in zip(part["label_category"].astype(str), found):
            label_hits[label][0] += int(hit)
            label_hits[label][1] += 1
    tp, n_ref, n_est = (sum(c[k] for c in counts.values()) for k in range(3))
    f, p, r = _f(tp, n_ref, n_est)
    out: dict[str, Any] = {
        "f_measure": round(f, 4),
        "precision": round(p, 4),
        "recall": round(r, 4),
        "pooling": "notes",
        "mean_file_f_measure": round(float(np.mean(file_f)) if file_f else 0.0, 4),
        "window_sec": window,
        "n_recordings": len(file_f),
        "n_notes": n_ref,
        "n_detected": n_est,
        "median_abs_onset_error_ms": round(1000 * float(np.median(np.abs(errors))), 1) if errors else None,
        "recall_per_label": {k: round(v[0] / v[1], 4) for k, v in sorted(label_hits.items())},
        "detect_sec": round(seconds, 2),
    }
    if len(counts) > 1:
        out["per_source"] = {k: round(_f(*v)[0], 4) for k, v in sorted(counts.items())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmark.py segmentation", description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=24, help="demo recordings to render")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--window", type=float, default=0.05, help="onset tolerance (s)")
    parser.add_argument("--metadata", type=Path, help="score an existing table (audio relative to its folder)")
    parser.add_argument("--smoke-test", action="store_true", help="2 demo recordings (one per source)")
    args = parser.parse_args(argv)
    if args.metadata is not None and not args.smoke_test:
        df, root, source = read_metadata(args.metadata), args.metadata.parent, str(args.metadata)
        result = score_segmentation(df, root, window=args.window)
    else:
        from guitar_cls.data.synth import make_demo_dataset

        n = 2 if args.smoke_test else args.recordings
        with tempfile.TemporaryDirectory(prefix="segmentation_") as tmp:
            path = make_demo_dataset(tmp, n_recordings=n, seed=args.seed, exact_onsets=True)
            result = score_segmentation(read_metadata(path), tmp, window=args.window)
        source = f"demo({n} recordings, seed {args.seed}, exact onsets)"
    print(json.dumps({"benchmark": "segmentation", "data": source, **result}))
    return 0
