"""A review list for labelling (active learning): which events a person should listen to first.

``review(models, metadata, audio_root)`` classifies every event of a metadata table with one or more models
(``predict.Classifier.load``: a checkpoint file or run folder, ``models:/name@alias``, ``runs:/<id>/model``) and ranks
the events by ``rank_events``, in tiers:

1. **likely label errors** — a confident prediction against the label, confident-learning style: the event's
   *confident class* (the most probable class among those whose probability reaches the class's threshold, the mean
   probability of that class over the events labelled with it) is not its label. Ranked by the self-confidence
   ``p[label]``, lowest first (cleanlab's ``self_confidence`` label-quality score).
2. **models disagree** — several models whose predicted classes differ; ranked by the Jensen-Shannon divergence of
   their probabilities, highest first.
3. **uncertain** — a low margin between the two most probable classes or a high entropy; ranked by the margin.
4. the rest, by the margin (least sure first), so the table is a full ranking that can be cut anywhere.

Events without audio come last, with their error as the reason. With several models the ranking scores use the mean
of their probabilities. Events without a label (``label_category`` empty) are ranked for annotation by uncertainty
and disagreement only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from guitar_cls.data.schema import LABEL_TO_INDEX, LABELS, read_metadata
from guitar_cls.predict import Classifier

log = logging.getLogger(__name__)

REVIEW_COLUMNS: tuple[str, ...] = ("file", "onset", "offset", "label", "predicted", "scores", "reason")
LABEL_ERROR = "likely label error"
DISAGREE = "models disagree"
UNCERTAIN = "uncertain"
NO_AUDIO = "no audio (unreadable, empty or silent)"
_EPS = 1e-12


@dataclass(frozen=True)
class ReviewThresholds:
    """When an event is called uncertain: top-1 minus top-2 probability below ``margin``, or entropy (normalised to
    [0, 1] by log of the number of classes) above ``entropy``; a prediction against the label counts as confident
    only from ``min_confidence`` up (besides the class threshold), so a model that knows nothing flags nothing."""

    margin: float = 0.2
    entropy: float = 0.7
    min_confidence: float = 0.5


def normalized_entropy(probs: np.ndarray) -> np.ndarray:
    """Returns the entropy of each row of ``probs`` ``(N, K)`` divided by ``log K``: 0 = certain, 1 = uniform."""
    p = np.clip(probs, _EPS, 1.0)
    return -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])


def top2_margin(probs: np.ndarray) -> np.ndarray:
    """Returns the most probable class's probability minus the second's, per row of ``probs`` ``(N, K)``."""
    top = np.sort(probs, axis=1)
    return top[:, -1] - top[:, -2]


def self_confidence(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Returns ``p[label]`` per row of ``probs`` ``(N, K)``; NaN where ``labels`` is -1 (no label)."""
    labelled = labels >= 0
    out = np.full(len(labels), np.nan)
    out[labelled] = probs[labelled, labels[labelled]]
    return out


def class_thresholds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Returns ``(K,)``: the mean probability of class k over the events labelled k (confident learning's per-class
    threshold; NaN for a class no event carries)."""
    k = probs.shape[1]
    return np.array([probs[labels == c, c].mean() if (labels == c).any() else np.nan for c in range(k)])


def confident_class(probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Returns the most probable class among those at or above their threshold per row, or -1 where none is."""
    above = np.where(probs >= thresholds[None, :], probs, -1.0)
    best = above.argmax(axis=1)
    return np.where(above.max(axis=1) >= 0, best, -1)


def js_divergence(model_probs: np.ndarray) -> np.ndarray:
    """Returns the Jensen-Shannon divergence of ``model_probs`` ``(M, N, K)`` per event ``(N,)``, divided by
    ``log M`` so it lies in [0, 1] (0 for one model)."""
    m = model_probs.shape[0]
    if m < 2:
        return np.zeros(model_probs.shape[1])
    p = np.clip(model_probs, _EPS, 1.0)
    mean = p.mean(axis=0)  # (N, K)
    mean_entropy = -(mean * np.log(mean)).sum(axis=1)
    entropies = -(p * np.log(p)).sum(axis=2).mean(axis=0)
    return np.maximum(mean_entropy - entropies, 0.0) / np.log(m)


def review_scores(model_probs: np.ndarray, labels: np.ndarray, min_confidence: float = 0.5) -> pd.DataFrame:
    """Returns the per-event ranking scores of ``model_probs`` ``(M, N, K)`` and integer ``labels`` ``(N,)``
    (-1: no label): ``predicted``, ``self_confidence``, ``margin``, ``entropy``, ``disagreement`` (JS divergence),
    ``models_agree`` (all models predict the same class), ``label_error`` (the confident class is not the label;
    thresholds at least ``min_confidence``) and ``usable`` (every model gave finite probabilities)."""
    model_probs = np.asarray(model_probs, dtype=np.float64)
    usable = np.isfinite(model_probs).all(axis=(0, 2))
    probs = np.nan_to_num(model_probs.mean(axis=0), nan=1.0 / model_probs.shape[2])  # (N, K)
    labels = np.where(usable, labels, -1)
    # a class nobody labelled has no mean: min_confidence alone decides
    thresholds = np.fmax(class_thresholds(probs[usable], labels[usable]), min_confidence)
    conf = confident_class(probs, thresholds)
    votes = np.nan_to_num(model_probs).argmax(axis=2)  # (M, N)
    return pd.DataFrame(
        {
            "predicted": probs.argmax(axis=1),
            "self_confidence": self_confidence(probs, labels),
            "margin": top2_margin(probs),
            "entropy": normalized_entropy(probs),
            "disagreement": js_divergence(np.nan_to_num(model_probs, nan=1.0 / model_probs.shape[2])),
            "models_agree": (votes == votes[:1]).all(axis=0),
            "label_error": (labels >= 0) & (conf >= 0) & (conf != labels),
            "usable": usable,
        }
    )


def rank_events(
    scores: pd.DataFrame, thresholds: ReviewThresholds = ReviewThresholds()
) -> tuple[np.ndarray, list[str]]:
    """Returns (event order, reason per event in input order) for ``review_scores`` output: tiers as in the module
    docstring; an event may carry several reasons, its first one sets the tier."""
    uncertain = (scores["margin"] < thresholds.margin) | (scores["entropy"] > thresholds.entropy)
    flags = {
        LABEL_ERROR: scores["label_error"].to_numpy(),
        DISAGREE: ~scores["models_agree"].to_numpy(),
        UNCERTAIN: uncertain.to_numpy(),
    }
    usable = scores["usable"].to_numpy()
    tier = np.full(len(scores), len(flags), dtype=np.int64)
    for t, mask in reversed(list(enumerate(flags.values()))):
        tier[mask] = t
    tier[~usable] = len(flags) + 1
    # one key per tier, smaller first: self-confidence, minus divergence, margin, margin
    key = np.select(
        [tier == 0, tier == 1],
        [scores["self_confidence"].to_numpy(), -scores["disagreement"].to_numpy()],
        scores["margin"].to_numpy(),
    )
    order = np.lexsort((np.arange(len(scores)), key, tier))
    reasons = [
        "; ".join(name for name, mask in flags.items() if mask[i]) if usable[i] else NO_AUDIO
        for i in range(len(scores))
    ]
    return order, reasons


def _scores_json(probs: np.ndarray, row: pd.Series) -> str:
    out = {name: round(float(p), 4) for name, p in zip(LABELS, probs)}
    for key in ("self_confidence", "margin", "entropy", "disagreement"):
        value = float(row[key])
        if np.isfinite(value):
            out[key] = round(value, 4)
    return json.dumps(out)


def review_table(
    meta: pd.DataFrame, model_probs: np.ndarray, thresholds: ReviewThresholds = ReviewThresholds()
) -> pd.DataFrame:
    """Returns the ranked review list (``REVIEW_COLUMNS``, most worth checking first; the index is ``meta``'s) of
    the events in ``meta`` (``source_audio``, ``onset_sec``, ``offset_sec``, ``label_category``) and their
    probabilities ``(M, N, K)`` from M models. ``scores`` is JSON: the mean probability per label and the ranking
    scores."""
    model_probs = np.asarray(model_probs, dtype=np.float64)
    if model_probs.ndim != 3 or model_probs.shape[1:] != (len(meta), len(LABELS)):
        raise ValueError(f"probabilities of shape (models, {len(meta)}, {len(LABELS)}) needed, got {model_probs.shape}")
    label_names = meta["label_category"].astype("string").fillna("")
    unknown = sorted(set(label_names) - set(LABELS) - {""})
    if unknown:
        raise ValueError(f"labels {unknown} are not among {list(LABELS)}")
    labels = label_names.map(lambda name: LABEL_TO_INDEX.get(name, -1)).to_numpy(np.int64)
    scores = review_scores(model_probs, labels, thresholds.min_confidence)
    order, reasons = rank_events(scores, thresholds)
    mean = model_probs.mean(axis=0)
    table = pd.DataFrame(
        {
            "file": meta["source_audio"].astype(str).to_numpy(),
            "onset": meta["onset_sec"].to_numpy(),
            "offset": meta["offset_sec"].to_numpy(),
            "label": label_names.to_numpy(),
            "predicted": [LABELS[p] if ok else "" for p, ok in zip(scores["predicted"], scores["usable"])],
            "scores": [_scores_json(mean[i], scores.iloc[i]) for i in range(len(meta))],
            "reason": reasons,
        },
        index=meta.index,
    )
    return table.iloc[order]


def review(
    models: Sequence[str | Path | Classifier],
    metadata: str | Path,
    audio_root: str | Path,
    *,
    out: str | Path | None = None,
    limit: int | None = None,
    thresholds: ReviewThresholds = ReviewThresholds(),
) -> pd.DataFrame:
    """Returns (and writes to ``out`` as CSV) the review list of every event in ``metadata`` under ``models``.

    Args:
        models: checkpoint files or run folders, MLflow model URIs or loaded Classifiers; one or more.
        audio_root: the folder the table's ``source_audio`` paths are relative to.
        limit: keep only the first ``limit`` rows.
    """
    if not models:
        raise ValueError("at least one model is needed")
    meta = read_metadata(metadata)
    root = Path(audio_root)
    paths = [root / str(p) for p in meta["source_audio"]]
    probs = []
    for source in models:
        clf = source if isinstance(source, Classifier) else Classifier.load(source)
        log.info("classifying %d events with %s", len(meta), clf.source)
        probs.append(clf.classify_files(paths, meta["onset_sec"].tolist(), meta["offset_sec"].tolist(), on_error="nan"))
    table = review_table(meta, np.stack(probs), thresholds)  # (M, N, K) in
    if limit is not None:
        table = table.head(limit)
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
        log.info("review list of %d events -> %s", len(table), out)
    return table
