"""Evaluation of a trained model on any metadata table: metrics, plots, predictions, error lists and breakdowns.

``evaluate(source, metadata, audio_root, out_dir)`` classifies every selected event from its audio (the model's own
preprocessing, see ``predict.Classifier``) and writes into ``out_dir``:

- ``metrics.json``: ``classification_metrics`` (accuracy, balanced accuracy, macro/micro F1, MCC, ECE, per-class
  precision/recall/F1, confusion matrix) plus counts, the most-confused pairs and the breakdowns;
- ``confusion_matrix.png``, ``calibration.png`` (reliability diagram per class);
- ``predictions.csv`` (one row per event, unreadable audio with its ``error``), ``errors.csv`` (high-confidence
  mistakes, low-confidence correct predictions, most-confused pairs) and ``breakdown.csv`` (metrics per duration
  bucket, pitch range, excitation style and expression style).

The files are written to a temporary folder beside ``out_dir`` and moved into place at the end, so a failed run
leaves no half-written ``out_dir``. An existing ``out_dir`` is replaced only when it is a previous evaluation (or
with ``overwrite``); files in it that we did not write are kept (``guitar_cls.outputs``).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from guitar_cls.data.schema import LABEL_TO_INDEX, LABELS, read_metadata
from guitar_cls.data.splits import make_splits
from guitar_cls.outputs import check_output_folder, staged_output
from guitar_cls.predict import PROB_COLUMNS, Classifier, EnsembleClassifier, files_windows
from guitar_cls.train.metrics import classification_metrics, plot_confusion_matrix, plot_reliability

log = logging.getLogger(__name__)

DURATION_EDGES = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, np.inf)  # seconds
PITCH_EDGES = (-np.inf, 40, 48, 60, 72, np.inf)  # MIDI: below the low E string, E2-B2, C3-B3, C4-B4, C5 and up
PITCH_NAMES = ("<E2 (<40)", "E2-B2 (40-47)", "C3-B3 (48-59)", "C4-B4 (60-71)", "C5+ (72+)")
BREAKDOWN_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
EVALUATION = "evaluation"  # the output kind in the folder's marker (guitar_cls.outputs)
META_COLUMNS = (
    "source_audio",
    "event_index",
    "onset_sec",
    "offset_sec",
    "duration_sec",
    "pitch_midi",
    "excitation_style",
    "expression_style",
)


def select_split(
    df: pd.DataFrame,
    split: str,
    *,
    splits: pd.DataFrame | None = None,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    group_by: str = "source_audio",
) -> pd.DataFrame:
    """Returns the rows of ``df`` in ``split`` (``all``, ``train``, ``val`` or ``test``), index kept.

    ``splits`` is a saved assignment (``source_audio, event_index, split``); without one the split is recomputed
    with ``make_splits(df, fractions, seed, group_by)`` (the training run's settings give the training run's split).
    """
    if split == "all":
        return df
    if split not in ("train", "val", "test"):
        raise ValueError(f"unsupported split: {split!r} (known: all, train, val, test)")
    if splits is None:
        log.info("no saved splits: recomputing them (fractions %s, seed %d, by %s)", fractions, seed, group_by)
        assign = make_splits(df, fractions, seed=seed, group_col=group_by)
    else:
        key = splits.assign(
            source_audio=splits["source_audio"].astype(str), event_index=splits["event_index"].astype(int)
        )
        key = key.drop_duplicates(["source_audio", "event_index"]).set_index(["source_audio", "event_index"])["split"]
        index = pd.MultiIndex.from_arrays([df["source_audio"].astype(str), df["event_index"].astype(int)])
        assign = pd.Series(key.reindex(index).to_numpy(), index=df.index)
        missing = int(assign.isna().sum())
        if missing == len(df):
            raise ValueError("the splits table names none of these events (another data set?); use split 'all'")
        if missing:
            log.warning("%d of %d events are not in the splits table; they are left out", missing, len(df))
    return df[assign == split]


def breakdown_table(meta: pd.DataFrame, y_true: np.ndarray, probs: np.ndarray) -> pd.DataFrame:
    """Returns metrics per bucket: ``factor, bucket, n, accuracy, balanced_accuracy, macro_f1, n_<label>...`` for
    subsets (the demo data's sources), duration buckets, pitch ranges, excitation styles and expression styles
    (missing values: ``unknown``)."""
    duration = pd.cut(meta["duration_sec"].astype(float), DURATION_EDGES, right=False)
    duration_names = duration.astype(str).where(duration.notna(), "unknown")
    pitch = pd.cut(meta["pitch_midi"].astype(float), PITCH_EDGES, right=False, labels=PITCH_NAMES)
    factors = {
        "subset_id": (meta["subset_id"].astype("string").fillna("unknown"), None),  # the demo's source, IDMT subset
        "duration_sec": (duration_names, [str(c) for c in duration.cat.categories] + ["unknown"]),
        "pitch_range": (pitch.astype(str).where(pitch.notna(), "unknown"), [*PITCH_NAMES, "unknown"]),
        "excitation_style": (meta["excitation_style"].astype("string").fillna("unknown"), None),
        "expression_style": (meta["expression_style"].astype("string").fillna("unknown"), None),
    }
    rows = []
    for factor, (values, order) in factors.items():
        values = values.to_numpy().astype(str)
        for bucket in order or sorted(set(values)):
            mask = values == bucket
            if not mask.any():
                continue
            with warnings.catch_warnings():  # one-class buckets: sklearn warns about the confusion-matrix shape
                warnings.simplefilter("ignore", UserWarning)
                m = classification_metrics(y_true[mask], probs[mask])
            row: dict[str, Any] = {"factor": factor, "bucket": bucket, "n": int(mask.sum())}
            row.update({k: m[k] for k in BREAKDOWN_METRICS})
            row.update({f"n_{name}": int((y_true[mask] == i).sum()) for i, name in enumerate(LABELS)})
            rows.append(row)
    return pd.DataFrame(rows)


def error_table(predictions: pd.DataFrame, cm: list[list[int]], n_examples: int = 20) -> pd.DataFrame:
    """Returns ``errors.csv``: the ``n_examples`` most confident mistakes, the ``n_examples`` least confident correct
    predictions and every off-diagonal confusion-matrix pair by count (``kind`` says which, ``count`` for pairs)."""
    ok = predictions[predictions["error"] == ""]
    wrong = ok[~ok["correct"]].sort_values("confidence", ascending=False).head(n_examples)
    right = ok[ok["correct"]].sort_values("confidence", ascending=True).head(n_examples)
    pairs = pd.DataFrame(most_confused(cm)).rename(columns={"true": "label", "predicted": "predicted"})
    parts = [
        wrong.assign(kind="high_confidence_mistake"),
        right.assign(kind="low_confidence_correct"),
        pairs.assign(kind="confused_pair"),
    ]
    table = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else None
    columns = ["kind", "count", *predictions.columns]
    table = pd.DataFrame(columns=columns) if table is None else table.reindex(columns=columns)
    return table.astype({"count": "Int64", "row": "Int64", "event_index": "Int64"})


def most_confused(cm: list[list[int]]) -> list[dict[str, Any]]:
    """Returns the off-diagonal ``{true, predicted, count}`` cells with a count, most frequent first."""
    cells = [
        {"true": LABELS[i], "predicted": LABELS[j], "count": int(cm[i][j])}
        for i in range(len(LABELS))
        for j in range(len(LABELS))
        if i != j and cm[i][j] > 0
    ]
    return sorted(cells, key=lambda c: -c["count"])


def evaluation_report(
    meta: pd.DataFrame, probs: np.ndarray, errors: list[str] | None = None, n_examples: int = 20
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Returns (metrics, predictions, errors, breakdown) of probabilities ``(N, 3)`` for the metadata rows ``meta``.

    Rows whose audio could not be used (NaN probabilities, reason in ``errors``) are listed in the predictions but
    left out of every metric.
    """
    probs = np.asarray(probs, dtype=np.float64)
    errors = errors if errors is not None else [""] * len(meta)
    usable = ~np.isnan(probs).any(axis=1)
    y_true = meta["label_category"].map(LABEL_TO_INDEX).to_numpy()
    pred = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    predictions = meta.loc[:, list(META_COLUMNS)].copy()
    predictions.insert(0, "row", meta.index.to_numpy())
    predictions["label"] = meta["label_category"].to_numpy()
    predictions["predicted"] = [LABELS[p] if ok else None for p, ok in zip(pred, usable)]
    predictions["confidence"] = np.where(usable, np.nan_to_num(probs).max(axis=1) if len(probs) else 0.0, np.nan)
    for j, col in enumerate(PROB_COLUMNS):
        predictions[col] = probs[:, j] if len(probs) else []
    predictions["correct"] = usable & (pred == y_true)
    predictions["error"] = [e or "" for e in errors]

    y, p = y_true[usable].astype(np.int64), probs[usable]
    metrics = classification_metrics(y, p)
    metrics["n_events"] = int(usable.sum())
    metrics["n_unusable"] = int((~usable).sum())
    metrics["most_confused"] = most_confused(metrics["confusion_matrix"])
    breakdown = breakdown_table(meta[usable], y, p)
    metrics["breakdown"] = {
        f"{r.factor}/{r.bucket}": {"n": r.n, **{k: getattr(r, k) for k in BREAKDOWN_METRICS}}
        for r in breakdown.itertuples()
    }
    return metrics, predictions, error_table(predictions, metrics["confusion_matrix"], n_examples), breakdown


def write_report(
    out_dir: str | Path,
    metrics: dict[str, Any],
    predictions: pd.DataFrame,
    errors: pd.DataFrame,
    breakdown: pd.DataFrame,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes every output file into ``out_dir`` (temporary folder, then moved into place) and returns it.

    ``out_dir`` may be new, empty or a previous evaluation; any other folder needs ``overwrite`` (see
    ``guitar_cls.outputs``: files that are not ours are never deleted).
    """
    out_dir = Path(out_dir).expanduser().resolve()
    with staged_output(out_dir, EVALUATION, overwrite=overwrite) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
        predictions.to_csv(tmp / "predictions.csv", index=False)
        errors.to_csv(tmp / "errors.csv", index=False)
        breakdown.to_csv(tmp / "breakdown.csv", index=False)
        usable = predictions["error"] == ""
        y_true = predictions.loc[usable, "label"].map(LABEL_TO_INDEX).to_numpy()
        plot_confusion_matrix(
            metrics["confusion_matrix"],
            tmp / "confusion_matrix.png",
            title=f"{metrics.get('split', '')} (n={metrics['n_events']})",
        )
        plot_reliability(y_true, predictions.loc[usable, list(PROB_COLUMNS)].to_numpy(), tmp / "calibration.png")
    return out_dir


def evaluate(
    source: str | Path | Classifier | EnsembleClassifier,
    metadata: str | Path,
    audio_root: str | Path,
    out_dir: str | Path,
    *,
    split: str | None = None,
    splits_csv: str | Path | None = None,
    n_examples: int = 20,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Evaluates a model (checkpoint, ``models:/`` URI or Classifier) on a metadata table; returns the metrics.

    Args:
        split: ``all`` (default without ``splits_csv``) or ``train``/``val``/``test`` (default ``test`` with
            ``splits_csv``). A named split uses ``splits_csv``, else the splits saved with the model, else splits
            recomputed with the model config's split settings.
        overwrite: write into an ``out_dir`` that is not a previous evaluation (only our files are replaced).
    """
    check_output_folder(Path(out_dir).expanduser().resolve(), EVALUATION, overwrite=overwrite)  # before any work
    clf = source if isinstance(source, (Classifier, EnsembleClassifier)) else Classifier.load(source)
    split = split or ("test" if splits_csv else "all")
    df = read_metadata(metadata)
    saved = pd.read_csv(splits_csv) if splits_csv else clf.splits
    s = clf.cfg.splits
    meta = select_split(df, split, splits=saved, fractions=(s.train, s.val, s.test), seed=s.seed, group_by=s.group_by)
    if len(meta) == 0:
        raise ValueError(f"{metadata}: no events in split {split!r}")
    unknown = sorted(set(meta["label_category"].fillna("<missing>")) - set(LABELS))
    if unknown:
        raise ValueError(f"{metadata}: labels {unknown} are not among {list(LABELS)}")
    log.info("evaluating %s on %d events (%s split of %s)", clf.source, len(meta), split, metadata)
    root = Path(audio_root)
    paths = [root / str(p) for p in meta["source_audio"]]
    windows, errors = files_windows(paths, meta["onset_sec"].tolist(), meta["offset_sec"].tolist(), clf.cfg.data)
    if any(errors):
        log.warning("%d events have unusable audio (listed in predictions.csv)", sum(map(bool, errors)))
    probs = clf.classify_windows(windows)
    metrics, predictions, error_rows, breakdown = evaluation_report(meta, probs, errors, n_examples)
    metrics = {"model": str(clf.source), "metadata": str(Path(metadata).resolve()), "split": split, **metrics}
    write_report(out_dir, metrics, predictions, error_rows, breakdown, overwrite=overwrite)
    log.info("balanced accuracy %.4f on %d events -> %s", metrics["balanced_accuracy"], metrics["n_events"], out_dir)
    return metrics
