"""The report's judgement: the brief's quality bars and rule-based recommendations drawn from the numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from guitar_cls.data.schema import LABELS
from guitar_cls.report.data import SweepData
from guitar_cls.report.importance import Importance
from guitar_cls.report.markdown import bar_value, fmt

NEAR_BEST = 0.01  # "within 1 point" of the metric
# What a confusion between two classes usually means for guitar note events, and what to try.
CONFUSION_HINTS = {
    ("harmonic", "general_note"): "harmonics are heard as ordinary notes: their cue is a sparse, high-partial "
    "spectrum; try finer frequency resolution (CQT, 128 mel bins), class weights or focal loss, or more "
    "harmonic examples",
    ("general_note", "harmonic"): "clean high notes are taken for harmonics: check the pitch_range rows of "
    "breakdown.csv; more high-fret ordinary notes or finer frequency resolution separate them",
    ("dead_note", "general_note"): "dead notes are heard as ordinary notes: both start with a pick attack; the "
    "difference is the missing sustained pitch, so check the duration buckets and try the HPSS front end",
    ("general_note", "dead_note"): "short ordinary notes are taken for dead notes: check the short-duration rows "
    "of breakdown.csv; a longer minimum window (data.min_duration) keeps more of the decay",
    ("harmonic", "dead_note"): "harmonics are taken for dead notes: quiet, quickly decaying harmonics lose their "
    "pitch; check onset alignment (data.onset_offset_sec) and the duration buckets",
    ("dead_note", "harmonic"): "dead notes are taken for harmonics: both are quiet and short; the HPSS front end "
    "separates the percussive dead-note energy",
}


@dataclass(frozen=True)
class QualityBar:
    """One acceptance bar from the project brief: ``metric`` (a key of the test metrics) compared with a threshold."""

    name: str
    metric: str
    threshold: float
    above: bool = True  # the value must be above the threshold (else below)


QUALITY_BARS = (
    QualityBar("balanced accuracy", "balanced_accuracy", 0.85),
    QualityBar("every per-class F1", "min_f1", 0.75),
    QualityBar("harmonic recall", "recall/harmonic", 0.70),
    QualityBar("dead-note precision", "precision/dead_note", 0.80),
    QualityBar("CPU latency (ms)", "latency_ms", 50.0, above=False),
)


def quality_bars(metrics: dict[str, Any] | None, latency_ms: float | None) -> list[dict[str, Any]]:
    """Returns one row per ``QUALITY_BARS`` entry: ``{name, value, threshold, op, passed, detail}``; ``passed`` is
    None when the value is unknown."""
    metrics = dict(metrics or {})
    f1 = {label: metrics.get(f"f1/{label}") for label in LABELS}
    detail = {}
    if all(v is not None for v in f1.values()):
        worst = min(f1, key=lambda k: f1[k])
        metrics["min_f1"] = f1[worst]
        detail["min_f1"] = f"lowest: {worst}"
    metrics["latency_ms"] = latency_ms
    rows = []
    for bar in QUALITY_BARS:
        value = metrics.get(bar.metric)
        known = value is not None and not (isinstance(value, float) and math.isnan(value))
        passed = None if not known else (value > bar.threshold if bar.above else value < bar.threshold)
        rows.append(
            {
                "name": bar.name,
                "value": float(value) if known else None,
                "threshold": bar.threshold,
                "op": ">" if bar.above else "<",
                "passed": passed,
                "detail": detail.get(bar.metric, ""),
            }
        )
    return rows


def recommendations(
    sweep: SweepData, importance: Importance, metrics: dict[str, Any] | None, bars: list[dict[str, Any]]
) -> list[str]:
    """Returns rule-based advice drawn from the numbers, one markdown sentence group per finding."""
    advice = [
        _family_advice(sweep),
        _asha_advice(sweep),
        _latency_advice(sweep),
        _importance_advice(sweep, importance),
        _class_advice(metrics),
        _bars_advice(bars),
    ]
    return [a for a in advice if a]


def _family_advice(sweep: SweepData) -> str | None:
    agg = sweep.mode  # "max" or "min": the best score of each family
    best = sweep.finished.groupby("family")[sweep.best_key].agg([agg, "size"])
    best = best.sort_values(agg, ascending=agg == "min", kind="stable")
    if best.empty:
        return None
    top, score = best.index[0], float(best[agg].iloc[0])
    label = sweep.short_metric
    if len(best) == 1:
        return (
            f"All trials used **{top}** (best {label} {score:.4f}); the model family was not compared in this "
            "sweep (search_spaces/arch.yaml compares families)."
        )
    runner, second = best.index[1], float(best[agg].iloc[1])
    margin = sweep.better(score, second)
    per_family = ", ".join(f"{f} {m:.4f} ({int(n)} trials)" for f, (m, n) in best.iterrows())
    text = f"Best family: **{top}**, {margin:.4f} ahead of {runner} (best {label} per family: {per_family})."
    if margin < NEAR_BEST:
        text += (
            f" The margin is under {NEAR_BEST:.2f}: within the noise of one validation split, so let latency "
            "decide between them."
        )
    return text


def _asha_advice(sweep: SweepData) -> str | None:
    board = sweep.board
    asha = board[board["stop_reason"] == "asha"]
    early = board[board["stop_reason"] == "early_stop"]
    cut = board[board["stop_reason"] == "budget"]
    parts = []
    scheduler = sweep.space.scheduler.type if sweep.space is not None else None
    if len(asha):
        saved_epochs = int((sweep.max_epochs - asha["epochs"]).sum())
        saved_s = float(((sweep.max_epochs - asha["epochs"]) * asha["epoch_s"]).sum(min_count=1))
        full = sweep.max_epochs * len(board[board["status"] != "ERROR"])
        text = (
            f"ASHA stopped {len(asha)} of {len(board)} trials early (at epochs "
            f"{', '.join(str(int(e)) for e in asha['epochs'])}), saving {saved_epochs} trial-epochs "
            f"({saved_epochs / max(full, 1):.0%} of running every trial to {sweep.max_epochs} epochs)"
        )
        text += f", about {saved_s:.0f} s of training." if not math.isnan(saved_s) else "."
        text += " " + _asha_check(sweep, asha)
        parts.append(text.strip())
    elif scheduler == "asha":
        parts.append(
            "ASHA stopped no trial: every trial ran to the end or stopped itself; a larger "
            "reduction_factor or a shorter grace_period would prune harder."
        )
    if len(early):
        parts.append(
            f"{len(early)} trial(s) stopped themselves (early-stopping patience): {', '.join(early['trial_id'])}."
        )
    if len(cut):
        parts.append(
            f"{len(cut)} trial(s) were cut before {sweep.max_epochs} epochs by the time budget: "
            f"{', '.join(cut['trial_id'])}; their scores understate them."
        )
    return " ".join(parts) or None


def _asha_check(sweep: SweepData, asha: pd.DataFrame) -> str:
    """Returns whether each ASHA-stopped trial trailed the eventual best trial at the epoch it was stopped."""
    best = sweep.best
    curve = sweep.curves.get(best["trial_id"]) if best is not None else None
    if curve is None or sweep.best_key not in curve:
        return ""
    at = curve.set_index("training_iteration")[sweep.best_key]
    ahead, gaps = [], []
    for _, row in asha.iterrows():
        e = int(row["epochs"])
        if e not in at.index or pd.isna(row[sweep.best_key]):
            continue
        gap = sweep.better(float(at[e]), float(row[sweep.best_key]))
        (ahead if gap < 0 else gaps).append((row["trial_id"], e, gap))
    if ahead:
        names = ", ".join(f"{t} at epoch {e} (+{-g:.3f})" for t, e, g in ahead)
        return (
            f"But {names} led the best trial {best['trial_id']} when stopped: a longer grace_period would "
            "give such trials a fair chance."
        )
    if gaps:
        lo, hi = min(g for *_, g in gaps), max(g for *_, g in gaps)
        return (
            f"Every stopped trial trailed the best trial {best['trial_id']} at the same epoch (by {_span(lo, hi)}), "
            "so the stops look sound."
        )
    return ""


def _span(lo: float, hi: float) -> str:
    return f"{lo:.3f}" if math.isclose(lo, hi, abs_tol=5e-4) else f"{lo:.3f}-{hi:.3f}"


def _latency_advice(sweep: SweepData) -> str | None:
    ok = sweep.finished.dropna(subset=["latency_ms"])
    if ok.empty:
        return None
    best = sweep.best
    key, label = sweep.best_key, sweep.short_metric
    near = ok[[sweep.better(float(v), float(best[key])) >= -NEAR_BEST for v in ok[key]]]
    fast = near.sort_values("latency_ms", kind="stable").iloc[0]
    if fast["trial_id"] == best["trial_id"] or pd.isna(best["latency_ms"]):
        return (
            f"The best trial {best['trial_id']} is also the fastest within {NEAR_BEST * 100:.0f} point of it "
            f"({best['latency_ms']:.1f} ms per snippet on CPU)."
        )
    speedup = float(best["latency_ms"]) / max(float(fast["latency_ms"]), 1e-9)
    gap = sweep.better(float(best[key]), float(fast[key]))
    worse = "lower" if sweep.mode == "max" else "higher"
    text = (
        f"Fastest within {NEAR_BEST * 100:.0f} point of the best: {fast['trial_id']} ({fast['family']}, {label} "
        f"{fast[key]:.4f}, {fast['latency_ms']:.1f} ms) vs the best {best['trial_id']} ({best[key]:.4f}, "
        f"{best['latency_ms']:.1f} ms): {speedup:.1f}x faster at {gap:.4f} {worse} {label}"
    )
    if speedup < 1.25:
        return text + "; the difference is small, so pick by accuracy."
    return text + "; prefer it where latency matters."


def _importance_advice(sweep: SweepData, importance: Importance) -> str | None:
    if not importance.values:
        return None
    key, value = next(iter(importance.values.items()))
    top = sweep.finished.head(3)
    used = top[key].dropna() if key in top else pd.Series(dtype=object)
    text = f"Most important parameter: `{key}` ({value:.2f} of the importance over {importance.n_trials} trials)"
    if len(used):
        scalar = not used.map(lambda v: isinstance(v, (bool, list, dict))).any()
        numbers = pd.to_numeric(used, errors="coerce") if scalar else pd.Series([np.nan])
        if numbers.notna().all() and used.map(fmt).nunique() > 1:
            span = f"{fmt(float(numbers.min()))}-{fmt(float(numbers.max()))}"
        else:
            span = ", ".join(sorted({fmt(v) for v in used}))
        text += f"; the top {len(top)} trials used {span}: centre the next sweep's range there"
    return text + "."


def _class_advice(metrics: dict[str, Any] | None) -> str | None:
    if not metrics or not all(f"f1/{c}" in metrics for c in LABELS):
        return None
    worst = min(LABELS, key=lambda c: metrics[f"f1/{c}"])
    i = LABELS.index(worst)
    text = f"Weakest class on the test split: **{worst}** (F1 {metrics[f'f1/{worst}']:.3f})."
    cm = np.asarray(metrics.get("confusion_matrix") or [], dtype=int)
    if cm.shape != (len(LABELS), len(LABELS)):
        return text
    row, col = cm[i].copy(), cm[:, i].copy()
    row[i] = col[i] = 0
    missed, taken = int(row.max()), int(col.max())
    if missed >= taken and missed > 0:
        pair, count = (worst, LABELS[int(row.argmax())]), missed
        text += f" {count} of {int(cm[i].sum())} {worst} events were predicted as {pair[1]} (a recall problem)"
    elif taken > 0:
        pair, count = (LABELS[int(col.argmax())], worst), taken
        text += f" {count} {pair[0]} events were predicted as {worst} (a precision problem)"
    else:
        return text
    hint = CONFUSION_HINTS.get(pair)
    text += f": {hint}." if hint else "."
    support = {c: metrics.get(f"support/{c}") for c in LABELS}
    small = [f"{c} ({int(n)})" for c, n in support.items() if n is not None and n < 10]
    if small:
        text += f" Few test events for {', '.join(small)}: one event moves these numbers a lot."
    return text


def _bars_advice(bars: list[dict[str, Any]]) -> str | None:
    known = [b for b in bars if b["passed"] is not None]
    if not known:
        return None
    failed = [b for b in known if not b["passed"]]
    if not failed:
        return f"All {len(known)} quality bars are met on the test split."
    listed = "; ".join(f"{b['name']} {bar_value(b)} (needs {b['op']} {fmt(b['threshold'])})" for b in failed)
    return f"Quality bars: {len(known) - len(failed)} of {len(known)} met; not met: {listed}."
