"""A finished sweep's report: ``report.md`` and its figures, written from the sweep's record.

``build_report(name, out)`` reads ``<output_dir>/sweeps/<name>/`` through ``tune.record.SweepRecord`` (trials with
their stop reasons, summary, splits, MLflow parent run) and the Tune experiment ``<storage>/<name>/`` (one
``result.json`` per trial: the learning curves), and writes into ``out``:

- ``report.md``: recommendations, the quality bars, the leaderboard (params, best and last value of the space's
  metric, epochs, latency, why a trial stopped, as the record says), parameter importance, the Pareto front (over the
  record's objectives for a multi-objective sweep, else accuracy vs latency), the champion policy's pick and the
  champion's test results (per-class metrics, most-confused pairs, high-confidence mistakes,
  weakest slices);
- ``parallel_coordinates.png``, ``importance.png``, ``learning_curves.png``, ``pareto.png`` and the champion's
  ``confusion_matrix.png`` (``evaluation/`` holds the full ``guitar_cls.evaluate`` output when it ran).

Paths in the report are relative to the project root. The report is written to a temporary folder beside ``out``
and moved into place at the end; an existing ``out`` is replaced only when it is a previous report (or with
``overwrite``), and files in it that we did not write are kept (``guitar_cls.outputs``). No Ray import.

Modules: ``data`` (reading), ``importance``, ``figures``, ``advice`` (quality bars, recommendations), ``markdown``
(one renderer per section), ``legacy`` (stop reasons of sweeps recorded before ``trials.json``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from guitar_cls.outputs import staged_output
from guitar_cls.report.advice import QUALITY_BARS, QualityBar, quality_bars, recommendations
from guitar_cls.report.data import (
    ReportError,
    SweepData,
    SweepNotFound,
    champion_evaluation,
    champion_inputs,
    display_path,
    distribution_value,
    distributions,
    load_sweep,
    read_curves,
)
from guitar_cls.report.figures import fig_importances, fig_learning_curves, fig_parallel_coordinates, fig_pareto, save
from guitar_cls.report.importance import Importance, param_importances
from guitar_cls.report.markdown import ReportContent, leaderboard_markdown, render_markdown
from guitar_cls.train.metrics import plot_confusion_matrix
from guitar_cls.tune.record import pareto_front

log = logging.getLogger(__name__)

REPORT = "report.md"
REPORT_KIND = "sweep report"  # the output kind in the folder's marker (guitar_cls.outputs)


@dataclass
class SweepReport:
    """What ``build_report`` wrote and the numbers behind it."""

    path: Path  # report.md
    sweep: SweepData
    front: pd.DataFrame
    importance: Importance
    metrics: dict[str, Any] | None  # the champion's test metrics (evaluation, else the sweep's summary)
    bars: list[dict[str, Any]]
    recommendations: list[str]
    figures: list[str]  # file names in the report folder


def _figures(sweep: SweepData, front: pd.DataFrame, importance: Importance, folder: Path) -> dict[str, str]:
    """Writes the sweep's figures into ``folder``; returns role -> file name."""
    figures: dict[str, str] = {}
    if len(sweep.finished):
        figures["parallel"] = save(fig_parallel_coordinates(sweep), folder / "parallel_coordinates.png")
    if importance.values:
        figures["importance"] = save(fig_importances(importance), folder / "importance.png")
    if sweep.curves:
        figures["curves"] = save(fig_learning_curves(sweep), folder / "learning_curves.png")
    figures["pareto"] = save(fig_pareto(sweep, front), folder / "pareto.png")
    return figures


def build_report(
    name: str,
    out: str | Path,
    *,
    output_dir: str | Path = "outputs",
    storage: str | Path | None = None,
    space: str | Path | None = None,
    evaluate_champion: bool = True,
    metadata: str | Path | None = None,
    audio_root: str | Path | None = None,
    top: int = 10,
    overwrite: bool = False,
) -> SweepReport:
    """Writes the report of sweep ``name`` (``report.md`` + figures) into ``out`` and returns what it holds.

    Args:
        evaluate_champion: run ``guitar_cls.evaluate`` on the best checkpoint's test split into
            ``out/evaluation``; without it the champion section uses summary.json's test metrics.
        metadata, audio_root: the data to evaluate on when summary.json and MLflow do not record them.
        top: leaderboard rows shown.
        overwrite: write into an ``out`` that is not a previous report (only our files are replaced; files that
            are not ours are never deleted, see ``guitar_cls.outputs``).
    """
    sweep = load_sweep(name, output_dir, storage=storage, space=space)
    out = Path(out).expanduser().resolve()
    if evaluate_champion:
        champion_inputs(sweep, metadata, audio_root)  # fail before any work when the data is unknown
    with staged_output(out, REPORT_KIND, overwrite=overwrite) as tmp:  # refuses a folder that is not ours first
        figures: dict[str, str] = {}
        eval_dir = None
        metrics = sweep.summary.get("test")
        source = "summary.json, the sweep's own test evaluation"
        if evaluate_champion:
            eval_dir = tmp / "evaluation"
            metrics = champion_evaluation(sweep, eval_dir, metadata, audio_root)
            source = "guitar_cls.evaluate, all files in `evaluation/`"
            figures["confusion"] = "evaluation/confusion_matrix.png"
        elif metrics and metrics.get("confusion_matrix"):
            plot_confusion_matrix(
                metrics["confusion_matrix"], tmp / "confusion_matrix.png", title="test split (sweep summary)"
            )
            figures["confusion"] = "confusion_matrix.png"
        front = pareto_front(sweep.board, sweep.metric, sweep.mode, sweep.front_objectives)
        importance = param_importances(sweep)
        figures |= _figures(sweep, front, importance, tmp)
        best = sweep.best
        latency = float(best["latency_ms"]) if best is not None and pd.notna(best["latency_ms"]) else None
        bars = quality_bars(metrics, latency)
        advice = recommendations(sweep, importance, metrics, bars)
        space_path = display_path(sweep.space.source) if sweep.space is not None else None
        content = ReportContent(front, importance, metrics, source, bars, advice, figures, eval_dir, top, space_path)
        (tmp / REPORT).write_text(render_markdown(sweep, content))
    log.info("sweep report for %s -> %s", name, out / REPORT)
    return SweepReport(out / REPORT, sweep, front, importance, metrics, bars, advice, list(figures.values()))


__all__ = [
    "QUALITY_BARS",
    "REPORT",
    "REPORT_KIND",
    "Importance",
    "QualityBar",
    "ReportError",
    "SweepData",
    "SweepNotFound",
    "SweepReport",
    "build_report",
    "champion_evaluation",
    "display_path",
    "distribution_value",
    "distributions",
    "leaderboard_markdown",
    "load_sweep",
    "param_importances",
    "quality_bars",
    "read_curves",
    "recommendations",
]
