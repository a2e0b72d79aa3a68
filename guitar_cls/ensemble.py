"""Ensembles of a sweep's top trials: combined probabilities, evaluated and registered like any model.

``build_ensemble(sweep, top=K, method=...)`` reads the sweep's record (``tune.record``), classifies the validation and
test events of its ``splits.csv`` from raw audio with each of the top-K trials' best checkpoints
(``predict.Classifier``, each with its own data settings), and combines them:

- ``mean``: the average of the members' probabilities;
- ``logit``: the softmax of the average of their log-probabilities (a normalised geometric mean);
- ``greedy``: Caruana et al. (2004) forward selection with replacement on the validation split; the members' weights
  are how often each was picked, combined by ``mean``.

The ensemble is scored on the test split with ``train.metrics.classification_metrics`` beside its best member (the
top-ranked trial), with the CPU latency of both (ms per 1-s snippet, one thread). It is logged as a nested run
``ensemble top-K method`` of the sweep's MLflow parent run and registered under the sweep's model name as a
``pyfunc.GuitarNoteEnsemble`` by ``tracking.SweepTracker.register`` (so ``champion`` moves by the same rule as for any
version). The outcome is written to ``ENSEMBLE_FILE`` in the sweep folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from guitar_cls.train.metrics import classification_metrics

log = logging.getLogger(__name__)

METHODS = ("mean", "logit", "greedy")
RULES = ("mean", "logit")  # how weighted members are combined (greedy selects weights, then averages)
ENSEMBLE_FILE = "ensemble.json"  # the last ensemble's outcome, in the sweep folder
GREEDY_ROUNDS = 25  # picks of Caruana's selection; the best-scoring prefix is kept
LOG_FLOOR = 1e-7  # log-probabilities are taken of max(p, LOG_FLOOR): a member's exact 0 does not veto a class


def combine(probs: np.ndarray, weights: np.ndarray | list[float], rule: str = "mean") -> np.ndarray:
    """Returns the ensemble's probabilities ``(N, C)`` of the members' ``probs`` ``(M, N, C)``.

    Args:
        weights: ``(M,)`` non-negative, normalised here to sum 1.
        rule: ``mean`` (weighted mean of probabilities) or ``logit`` (softmax of the weighted mean of
            log-probabilities).
    """
    probs = np.asarray(probs, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if probs.ndim != 3 or w.shape != probs.shape[:1]:
        raise ValueError(f"expected probs (M, N, C) and weights (M,), got {probs.shape} and {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
    w = w / w.sum()
    if rule == "mean":
        return np.einsum("m,mnc->nc", w, probs)
    if rule == "logit":
        z = np.einsum("m,mnc->nc", w, np.log(np.maximum(probs, LOG_FLOOR)))
        z -= z.max(axis=1, keepdims=True)  # (N, C), stable softmax
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)
    raise ValueError(f"unsupported ensemble rule: {rule!r} (known: {', '.join(RULES)})")


def greedy_weights(
    probs: np.ndarray,
    y_true: np.ndarray,
    *,
    metric: str = "balanced_accuracy",
    mode: str = "max",
    rounds: int = GREEDY_ROUNDS,
) -> np.ndarray:
    """Returns weights ``(M,)`` (summing to 1) by forward selection with replacement (Caruana et al., 2004).

    Each round adds the member whose addition gives the best ``metric`` of the mean of the picks so far (ties: the
    lowest index, i.e. the better-ranked trial); the weights are the pick counts of the best-scoring prefix (ties:
    the shortest). The first pick is so the best single member.

    Args:
        probs: validation probabilities ``(M, N, C)`` of the candidate members.
        y_true: ``(N,)`` class indices.
        metric, mode: a key of ``classification_metrics`` and whether higher (``max``) or lower (``min``) is better.
    """
    probs = np.asarray(probs, dtype=np.float64)
    sign = 1.0 if mode == "max" else -1.0
    counts = np.zeros(len(probs), dtype=np.int64)
    total = np.zeros(probs.shape[1:])  # (N, C), sum of the picked members' probabilities
    best_score, best_counts = -np.inf, counts.copy()
    for r in range(1, rounds + 1):
        scores = [sign * classification_metrics(y_true, (total + p) / r)[metric] for p in probs]
        pick = int(np.argmax(scores))  # first maximum: the better-ranked member on ties
        counts[pick] += 1
        total += probs[pick]
        if scores[pick] > best_score:
            best_score, best_counts = scores[pick], counts.copy()
    return best_counts / best_counts.sum()


def ensemble_weights(
    method: str, val_probs: np.ndarray, y_val: np.ndarray, *, metric: str, mode: str
) -> tuple[str, np.ndarray]:
    """Returns ``(rule, weights (M,))`` of ``method``: equal weights for ``mean``/``logit``, Caruana's selection on
    the validation probabilities ``(M, N, C)`` for ``greedy``."""
    if method in RULES:
        return method, np.full(len(val_probs), 1.0 / len(val_probs))
    if method == "greedy":
        return "mean", greedy_weights(val_probs, y_val, metric=metric, mode=mode)
    raise ValueError(f"unsupported ensemble method: {method!r} (known: {', '.join(METHODS)})")


@dataclass
class SweepEvents:
    """The events a sweep validated and tested on, as ``path`` (absolute), ``onset_sec``, ``offset_sec`` frames
    (what a pyfunc client sends) with their class indices."""

    val: pd.DataFrame
    y_val: np.ndarray
    test: pd.DataFrame
    y_test: np.ndarray
    fingerprint: str  # of the metadata table (the ``data_hash`` lineage tag)


def sweep_events(sweep_dir: Path, summary: dict[str, Any]) -> SweepEvents:
    """Returns the validation and test events of the sweep in ``sweep_dir`` (its ``summary.json`` names the metadata
    table and audio root, its ``splits.csv`` the split of every event).

    Raises:
        FileNotFoundError: the metadata table or splits.csv is missing.
    """
    from guitar_cls.data.pipeline import metadata_fingerprint
    from guitar_cls.data.schema import LABEL_TO_INDEX, read_metadata
    from guitar_cls.evaluate import select_split
    from guitar_cls.tune.record import SPLITS_FILE

    metadata = summary.get("metadata")
    splits_csv = sweep_dir / SPLITS_FILE
    if not metadata or not Path(metadata).is_file() or not splits_csv.is_file():
        raise FileNotFoundError(f"sweep {sweep_dir.name}: needs its metadata table ({metadata}) and {splits_csv}")
    df = read_metadata(metadata)
    root = Path(summary.get("audio_root") or Path(metadata).parent)
    splits = pd.read_csv(splits_csv)

    def events(split: str) -> tuple[pd.DataFrame, np.ndarray]:
        rows = select_split(df, split, splits=splits)
        frame = pd.DataFrame(
            {
                "path": [str((root / p).resolve()) for p in rows["source_audio"]],
                "onset_sec": rows["onset_sec"].to_numpy(float),
                "offset_sec": rows["offset_sec"].to_numpy(float),
            }
        )
        return frame, rows["label_category"].map(LABEL_TO_INDEX).to_numpy()

    (val, y_val), (test, y_test) = events("val"), events("test")
    return SweepEvents(val, y_val, test, y_test, metadata_fingerprint(df))


def member_probs(classifiers: list[Any], events: pd.DataFrame) -> np.ndarray:
    """Returns each classifier's probabilities ``(M, N, C)`` of the events (NaN rows where audio is unreadable)."""
    args = (list(events["path"]), list(events["onset_sec"]), list(events["offset_sec"]))
    return np.stack([clf.classify_files(*args, on_error="nan") for clf in classifiers])


def ensemble_latency_ms(classifiers: list[Any], **kw: Any) -> float:
    """Returns the median CPU latency in ms of all members on one 1-s snippet each (features + model, one thread;
    see ``inference.latency_ms``): what the ensemble costs per note, combination excluded (negligible)."""
    import torch

    from guitar_cls.inference import median_ms

    inputs = []
    for clf in classifiers:
        clf.model.cpu().eval()
        clf.frontend.cpu().eval()
        n = int(clf.cfg.data.sample_rate)
        wave = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n)).astype(np.float32) * 0.1)
        inputs.append((clf, wave, torch.tensor([n])))

    @torch.inference_mode()
    def classify() -> None:
        for clf, wave, lengths in inputs:
            clf.model(*clf.frontend(wave, lengths))

    return median_ms(classify, **kw)


def top_trials(record: Any, k: int) -> list[Any]:
    """Returns the record's ``k`` best trials with a score and a checkpoint file, best first (per its metric/mode).

    Raises:
        ValueError: fewer than two such trials (no ensemble) or ``k < 2``.
    """
    if k < 2:
        raise ValueError(f"--top {k}: an ensemble needs at least 2 members")
    ranked = [t for t in record.trials if t.status != "ERROR" and t.best is not None and t.checkpoint_path]
    ranked = [t for t in ranked if t.checkpoint.is_file()]
    ranked.sort(key=lambda t: t.best, reverse=record.mode == "max")
    if len(ranked) < 2:
        raise ValueError(f"sweep {record.name}: {len(ranked)} trial(s) with a checkpoint; an ensemble needs 2")
    if len(ranked) < k:
        log.warning("sweep %s: only %d trials with a checkpoint, ensembling those", record.name, len(ranked))
    return ranked[:k]


def _scores(y_true: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Returns ``classification_metrics`` of the rows where every probability is known."""
    ok = ~np.isnan(probs).any(axis=1)
    return classification_metrics(y_true[ok], probs[ok])


def evaluate_ensemble(
    record: Any, trials: list[Any], events: SweepEvents, method: str
) -> tuple[dict[str, Any], np.ndarray, Any]:
    """Returns the ensemble of ``trials`` (best first) by ``method`` as ``(summary, test_ok, cfg)``: the summary holds
    rule, weights, test metrics of the ensemble and of its best member and their latencies; ``test_ok`` ``(N,)`` marks
    the test events every member could read; ``cfg`` is the best member's config."""
    from guitar_cls.predict import Classifier

    classifiers = [Classifier.load(t.checkpoint) for t in trials]
    val, test = member_probs(classifiers, events.val), member_probs(classifiers, events.test)  # (M, N, C)
    val_ok = ~np.isnan(val).any(axis=(0, 2))
    test_ok = ~np.isnan(test).any(axis=(0, 2))
    if not (val_ok.all() and test_ok.all()):
        log.warning("unreadable audio: %d val and %d test events left out", (~val_ok).sum(), (~test_ok).sum())
    metric = record.test_metric
    rule, weights = ensemble_weights(method, val[:, val_ok], events.y_val[val_ok], metric=metric, mode=record.mode)
    y_test = events.y_test[test_ok]
    members = [
        {"trial_id": t.trial_id, "checkpoint": str(t.checkpoint), "weight": float(w), f"val_{record.metric}": t.best}
        for t, w in zip(trials, weights)
    ]
    for member, p in zip(members, test):
        member[f"test_{metric}"] = classification_metrics(y_test, p[test_ok])[metric]
    summary = {
        "method": method,
        "rule": rule,
        "metric": metric,
        "mode": record.mode,
        "members": members,
        "test": classification_metrics(y_test, combine(test[:, test_ok], weights, rule)),
        "best_member_test": classification_metrics(y_test, test[0, test_ok]),
        "latency_ms": ensemble_latency_ms([c for c, w in zip(classifiers, weights) if w > 0]),
        "best_member_latency_ms": ensemble_latency_ms(classifiers[:1]),
        "n_test": int(test_ok.sum()),
    }
    return summary, test_ok, classifiers[0].cfg


def register_ensemble(
    cfg: Any, sweep_dir: Path, summary: dict[str, Any], events: pd.DataFrame, y_true: np.ndarray, *, promote: bool
) -> dict[str, Any]:
    """Logs the ensemble as a nested run ``ensemble top-K method`` of the sweep's parent run and registers it through
    ``SweepTracker.register`` (``champion`` by the same rule as any version, scored on ``events``); returns the
    registration outcome."""
    import mlflow

    from guitar_cls.pyfunc import log_ensemble_model, score_model
    from guitar_cls.tracking import DATA_TAG, SweepTracker
    from guitar_cls.tune.record import SPLITS_FILE

    name, metric = sweep_dir.name, summary["metric"]
    tracker = SweepTracker(cfg, sweep_dir, name=name, tags={DATA_TAG: summary["data_hash"], "sweep": name})
    title = f"ensemble top-{len(summary['members'])} {summary['method']}"
    run_id = tracker.client.create_run(
        tracker.experiment_id, run_name=title, tags={"mlflow.parentRunId": tracker.run_id}
    ).info.run_id
    _log_run(tracker.client, run_id, summary)
    used = [m for m in summary["members"] if m["weight"] > 0]

    def log_model(checkpoint: Path, **kw: Any) -> Any:
        with mlflow.start_run(run_id=run_id, nested=True):
            return log_ensemble_model(
                [m["checkpoint"] for m in used],
                [m["weight"] for m in used],
                summary["rule"],
                members=[{"trial_id": m["trial_id"]} for m in used],
                **kw,
            )

    status = "FAILED"
    try:
        outcome = tracker.register(
            Path(used[0]["checkpoint"]),
            lambda uri: score_model(uri, events, y_true, metric),
            sweep_dir / SPLITS_FILE,
            promote=promote,
            metric=metric,
            mode=summary["mode"],
            test_metrics=summary["test"],
            log_model=log_model,
        )
        _describe(tracker.client, outcome, title, used)
        tracker.log_metrics({f"test_{metric}": outcome[f"test_{metric}"]}, prefix=title.replace(" ", "_") + "/")
        status = "FINISHED"
        return outcome
    finally:
        tracker.client.set_terminated(run_id, status=status)
        tracker.finish()


def _log_run(client: Any, run_id: str, summary: dict[str, Any]) -> None:
    """Logs the ensemble's params (method, rule, members and weights) and metrics into its run."""
    client.log_param(run_id, "method", summary["method"])
    client.log_param(run_id, "rule", summary["rule"])
    client.log_param(run_id, "members", json.dumps({m["trial_id"]: round(m["weight"], 4) for m in summary["members"]}))
    numbers = {
        **{f"test/{k}": v for k, v in summary["test"].items()},
        **{f"best_member_test/{k}": v for k, v in summary["best_member_test"].items()},
        "latency_ms": summary["latency_ms"],
        "best_member_latency_ms": summary["best_member_latency_ms"],
        "gain": summary["gain"],
    }
    for key, value in numbers.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            client.log_metric(run_id, key, float(value))


def _describe(client: Any, outcome: dict[str, Any], title: str, used: list[dict[str, Any]]) -> None:
    """Replaces the first line of the version's description (written by ``register`` for a best trial) by what the
    ensemble is."""
    name, version = outcome["model"], outcome["version"]
    text = client.get_model_version(name, version).description or ""
    members = ", ".join(f"{m['trial_id']} ({m['weight']:.2f})" for m in used)
    first = f"{title[0].upper()}{title[1:]} of the sweep's trials {members}."
    client.update_model_version(name, version, description="\n".join([first, *text.split("\n")[1:]]))


def _warn_if_data_changed(sweep_dir: Path, fingerprint: str) -> None:
    """Logs a warning when the metadata table differs from the one the sweep started on (``SWEEP_START``): the
    ensemble's ``data_hash`` then differs from the sweep's versions, so ``register`` does not compare them."""
    from guitar_cls.tune.record import SWEEP_START

    try:
        recorded = json.loads((sweep_dir / SWEEP_START).read_text()).get("data_fingerprint")
    except (OSError, ValueError):
        return
    if recorded and recorded != fingerprint:
        log.warning("sweep %s: the metadata table changed since the sweep (%s... -> %s...): the champion will not be "
                    "compared with the ensemble", sweep_dir.name, recorded[:12], fingerprint[:12])  # fmt: skip


def build_ensemble(
    sweep: str,
    *,
    output_dir: str | Path = "outputs",
    top: int = 3,
    method: str = "mean",
    register: bool = True,
    promote: bool = False,
) -> dict[str, Any]:
    """Returns the outcome of the ensemble of sweep ``sweep``'s ``top`` trials by ``method`` (see the module
    docstring), also written to ``ENSEMBLE_FILE`` in the sweep folder: members and weights, test metrics of the
    ensemble and its best member, ``gain`` (on the sweep's test metric), latencies and their ratio, and the
    registration (``promote``: the ensemble takes ``champion`` even from a model of other data or splits).

    Raises:
        FileNotFoundError: no such sweep, or its metadata/splits are gone.
        ValueError: an unknown method, or fewer than two trials with a checkpoint.
    """
    from guitar_cls.tune.record import SweepRecord

    if method not in METHODS:
        raise ValueError(f"unsupported ensemble method: {method!r} (known: {', '.join(METHODS)})")
    sweep_dir = Path(output_dir).resolve() / "sweeps" / sweep
    record = SweepRecord.read(sweep_dir)
    trials = top_trials(record, top)
    events = sweep_events(sweep_dir, record.summary)
    _warn_if_data_changed(sweep_dir, events.fingerprint)
    summary, test_ok, cfg = evaluate_ensemble(record, trials, events, method)
    metric = summary["metric"]
    summary = {
        "sweep": sweep,
        "top": len(trials),
        **summary,
        "gain": summary["test"][metric] - summary["best_member_test"][metric],
        "latency_ratio": summary["latency_ms"] / summary["best_member_latency_ms"],
        "data_hash": events.fingerprint,
    }
    if register:
        cfg = dataclasses.replace(
            cfg, logging=dataclasses.replace(cfg.logging, output_dir=str(Path(output_dir).resolve()))
        )
        summary["registration"] = register_ensemble(
            cfg,
            sweep_dir,
            summary,
            events.test[test_ok].reset_index(drop=True),
            events.y_test[test_ok],
            promote=promote,
        )
    tmp = sweep_dir / f".{ENSEMBLE_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(tmp, sweep_dir / ENSEMBLE_FILE)
    return summary
