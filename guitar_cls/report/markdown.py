"""report.md: one renderer per section, each returning its lines, joined by ``render_markdown``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from guitar_cls.data.schema import LABELS
from guitar_cls.ensemble import ENSEMBLE_FILE
from guitar_cls.evaluate import most_confused
from guitar_cls.tune.record import LATENCY, objective_column

if TYPE_CHECKING:
    from guitar_cls.report.data import SweepData
    from guitar_cls.report.importance import Importance

STOPPED_LABELS = {  # in the order the header lists them
    "asha": "stopped by ASHA",
    "early_stop": "stopped by early stopping",
    "budget": "cut by the time budget",
    "stopped": "ended early for a reason not recorded",
}
STOP_CELLS = {"asha": "ASHA @ {}", "early_stop": "early stop @ {}", "budget": "cut @ {}", "stopped": "stopped @ {}"}
ERROR_COLUMNS = ("source_audio", "event_index", "label", "predicted", "confidence", "duration_sec", "expression_style")


def fmt(value: Any) -> str:
    """Returns a compact table cell: 3 significant digits, small numbers in e-notation, '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        return f"{v:.2e}" if abs(v) < 1e-2 else f"{v:.3g}"
    return str(value)


def count(n: int, noun: str) -> str:
    return f"{int(n)} {noun}{'' if n == 1 else 's'}"


def metric_cell(value: Any, digits: int = 3) -> str:
    """Returns a metric cell with a fixed number of decimals, '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def bar_value(bar: dict[str, Any]) -> str:
    return metric_cell(bar["value"], 1 if bar["name"].startswith("CPU latency") else 3)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """Returns a GitHub-flavoured markdown table (cells formatted with ``fmt`` unless already strings)."""
    cell = [[(c if isinstance(c, str) else fmt(c)).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cell])


def _score(value: Any) -> str:
    return f"{value:.4f}" if pd.notna(value) else "–"


def _stop_cell(row: pd.Series) -> str:
    epochs = int(row["epochs"]) if pd.notna(row["epochs"]) else 0
    if row["stop_reason"] == "error":
        return "error"
    return STOP_CELLS.get(row["stop_reason"], "no").format(epochs)


def leaderboard_markdown(sweep: SweepData, top: int = 10) -> str:
    """Returns the top ``top`` trials as a markdown table (params, best and last score, epochs, latency, and the
    stop reason the record holds)."""
    from guitar_cls.report.figures import short_names

    names = short_names(sweep.params)
    shown = [k for k in sweep.params if k != "model.name"]
    header = ["#", "trial", "family", *[names[k] for k in shown]]
    header += [f"best {sweep.short_metric}", f"last {sweep.short_metric}", "epochs", "latency ms", "stopped early"]
    rows = []
    for rank, (_, r) in enumerate(sweep.board.head(top).iterrows(), start=1):
        rows.append(
            [
                str(rank),
                str(r["trial_id"]),
                str(r["family"]),
                *[r.get(k) for k in shown],
                _score(r[sweep.best_key]),
                _score(r.get(sweep.last_key, np.nan)),
                f"{int(r['epochs'])}/{sweep.max_epochs}",
                f"{r['latency_ms']:.1f}" if pd.notna(r["latency_ms"]) else "–",
                _stop_cell(r),
            ]
        )
    return markdown_table(header, rows)


@dataclass
class ReportContent:
    """What report.md shows beyond the sweep itself; ``figures`` maps a figure's role to its file name."""

    front: pd.DataFrame
    importance: Importance
    metrics: dict[str, Any] | None
    metrics_source: str
    bars: list[dict[str, Any]]
    advice: list[str]
    figures: dict[str, str]
    eval_dir: Path | None
    top: int
    space_path: str | None = None  # the search-space file as shown (relative to the project root)


def header_section(sweep: SweepData, c: ReportContent) -> list[str]:
    s, board = sweep.summary, sweep.board
    reasons = board["stop_reason"].value_counts()
    facts = [
        f"{len(board)} trials ({count((board['status'] == 'ERROR').sum(), 'error')}"
        + "".join(f", {int(reasons.get(r, 0))} {label}" for r, label in STOPPED_LABELS.items() if reasons.get(r, 0))
        + f"), up to {sweep.max_epochs} epochs"
    ]
    if "wall_s" in s:
        facts.append(f"wall time {float(s['wall_s']) / 60:.1f} min")
    if "best_trial" in s:
        facts.append(f"best trial **{s['best_trial']}**")
    refit = s.get("refit") or {}
    if refit.get("error"):
        epochs, error = refit.get("epochs"), refit["error"]
        facts.append(f"its refit for {epochs} epochs failed ({error}): the trial's checkpoint stays")
    elif refit:
        seeds = [m.get("seed") for m in refit.get("members") or []]
        models = f", {len(seeds)} models (training seeds {', '.join(map(str, seeds))}), their mean" if seeds else ""
        facts.append(
            f"its configuration refit for {refit.get('epochs')} epochs ({refit.get('epochs_run')} run){models}: "
            f"{sweep.metric} {refit.get(sweep.metric, float('nan')):.4f} against the trial's "
            f"{refit.get('trial_' + sweep.metric, float('nan')):.4f}, so the "
            + ("refit is the tested and registered model" if refit.get("used") else "trial's own checkpoint stays")
        )
    reg = s.get("registration") or {}
    if reg:
        facts.append(
            f"registered as {reg.get('model')} v{reg.get('version')}"
            + (" (now `champion`)" if reg.get("champion") else " (champion alias kept elsewhere)")
        )
    out = [f"# Sweep report: {sweep.name}", "", "; ".join(facts) + "."]
    if sweep.space is not None:
        space = sweep.space
        out.append(
            f"Search space: `{c.space_path}` ({space.search.algorithm}, {space.scheduler.type} scheduler)."
            + (f" Trials ranked by {sweep.metric} ({sweep.mode})." if sweep.metric != "val/balanced_accuracy" else "")
        )
    if sweep.multi_objective:
        out.append(f"Objectives: {objectives_text(sweep.objectives)}. {asha_note(sweep)}")
    return out


def objectives_text(objectives: list[dict[str, str]]) -> str:
    """Returns ``val/balanced_accuracy (max), latency_ms (min)``."""
    return ", ".join(f"{o['metric']} ({o['mode']})" for o in objectives)


def asha_note(sweep: SweepData) -> str:
    """Returns what pruned a multi-objective sweep's trials: ASHA is single-objective."""
    if sweep.space is not None and sweep.space.scheduler.type != "asha":
        return f"No trial was pruned early: the {sweep.space.scheduler.type} scheduler stops none."
    return (
        f"ASHA is single-objective and pruned on the first one only ({sweep.metric}): a fast trial weak at a rung "
        "is stopped even if it would have been on the front."
    )


def recommendations_section(sweep: SweepData, c: ReportContent) -> list[str]:
    return ["## Recommendations", "", *[f"- {a}" for a in c.advice]]


def bars_section(sweep: SweepData, c: ReportContent) -> list[str]:
    rows = [
        [
            b["name"] + (f" ({b['detail']})" if b["detail"] else ""),
            bar_value(b),
            f"{b['op']} {fmt(b['threshold'])}",
            {True: "yes", False: "**no**", None: "unknown"}[b["passed"]],
        ]
        for b in c.bars
    ]
    return [
        "## Quality bars",
        "",
        f"The champion on the test split (source: {c.metrics_source}); CPU latency from the sweep.",
        "",
        markdown_table(["bar", "value", "needs", "met"], rows),
    ]


def leaderboard_section(sweep: SweepData, c: ReportContent) -> list[str]:
    n = len(sweep.board)
    return [f"## Leaderboard (top {min(c.top, n)} of {n})", "", leaderboard_markdown(sweep, c.top)]


def parameters_section(sweep: SweepData, c: ReportContent) -> list[str]:
    out = [f"## Parameters vs {sweep.long_metric}", ""]
    if "parallel" in c.figures:
        out += [f"![parallel coordinates]({c.figures['parallel']})"]
    return out


def importance_section(sweep: SweepData, c: ReportContent) -> list[str]:
    out = ["## Parameter importance", "", c.importance.note]
    if "importance" in c.figures:
        rows = [[k, f"{v:.3f}"] for k, v in c.importance.values.items()]
        out += [
            "",
            markdown_table(["parameter", "importance"], rows),
            "",
            f"![parameter importance]({c.figures['importance']})",
        ]
    return out


def curves_section(sweep: SweepData, c: ReportContent) -> list[str]:
    if "curves" in c.figures:
        return ["## Learning curves", "", f"![learning curves]({c.figures['curves']})"]
    return [
        "## Learning curves",
        "",
        "No per-epoch results found (the Tune experiment folder is missing; see --storage).",
    ]


def pareto_section(sweep: SweepData, c: ReportContent) -> list[str]:
    front, objectives = c.front, sweep.front_objectives
    columns = [objective_column(o["metric"], sweep.metric) for o in objectives]
    names = [
        f"best {sweep.short_metric}" if col == sweep.best_key else ("latency ms" if col == LATENCY else col)
        for col in columns
    ]
    rows = [
        [str(r["trial_id"]), str(r["family"])]
        + [f"{r[col]:.1f}" if col == LATENCY else f"{r[col]:.4f}" for col in columns]
        for _, r in front.iterrows()
    ]
    if sweep.multi_objective:
        intro = [
            f"Pareto front of the sweep's objectives ({objectives_text(objectives)}), from the record: the "
            f"{len(front)} of {len(sweep.board)} trials that no other trial beats on every objective. "
            + asha_note(sweep)
        ]
    else:
        intro = [
            f"Pareto front: the {len(front)} of {len(sweep.board)} trials that no other trial beats on both accuracy "
            "and latency."
        ]
    out = ["## Accuracy vs latency" if not sweep.multi_objective else "## Pareto front", "", *intro, ""]
    out.append(markdown_table(["trial", "family", *names], rows))
    if "pareto" in c.figures:
        out += ["", f"![accuracy vs latency]({c.figures['pareto']})"]
    return out


def champion_section(sweep: SweepData, c: ReportContent) -> list[str]:
    out = ["## Champion on the test split", ""]
    picked = sweep.summary.get("champion")
    if picked:
        latency = picked.get("latency_ms")
        out += [
            f"Champion policy `{picked.get('policy')}` picked trial **{picked.get('trial_id')}**: "
            f"{sweep.metric} {metric_cell(picked.get(sweep.metric), 4)}, CPU latency "
            f"{'–' if latency is None else f'{float(latency):.2f}'} ms ({picked.get('reason', '')}).",
            "",
        ]
    m = c.metrics
    if not m:
        return out + ["No test metrics: summary.json has none and the champion was not evaluated."]
    out.append(
        f"Source: {c.metrics_source}. Balanced accuracy {metric_cell(m.get('balanced_accuracy'))}, macro F1 "
        f"{metric_cell(m.get('macro_f1'))}, accuracy {metric_cell(m.get('accuracy'))}."
    )
    if "confusion" in c.figures:
        out += ["", f"![confusion matrix]({c.figures['confusion']})"]
    return out + ["", *evaluation_lines(c.eval_dir, m)]


def evaluation_lines(eval_dir: Path | None, metrics: dict[str, Any], n_examples: int = 5) -> list[str]:
    """Returns the champion's per-class table, most-confused pairs and, from ``eval_dir``, its most confident
    mistakes, scores by source and weakest slices."""
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c in LABELS:
        lines.append(
            f"| {c} | {metric_cell(metrics.get(f'precision/{c}'))} | {metric_cell(metrics.get(f'recall/{c}'))} | "
            f"{metric_cell(metrics.get(f'f1/{c}'))} | {fmt(metrics.get(f'support/{c}'))} |"
        )
    lines.append("")
    pairs = metrics.get("most_confused")
    if pairs is None and metrics.get("confusion_matrix"):
        pairs = most_confused(metrics["confusion_matrix"])
    if pairs:
        shown = "; ".join(f"{p['true']} → {p['predicted']} ({p['count']})" for p in pairs[:4])
        lines.append(f"Most-confused pairs (true → predicted): {shown}.")
    else:
        lines.append("No confusions on the test split.")
    if eval_dir is None:
        return lines
    return lines + _mistake_lines(eval_dir, n_examples) + _breakdown_lines(eval_dir)


def _mistake_lines(eval_dir: Path, n_examples: int) -> list[str]:
    errors_csv = eval_dir / "errors.csv"
    if not errors_csv.is_file():
        return []
    errors = pd.read_csv(errors_csv)
    mistakes = errors[errors["kind"] == "high_confidence_mistake"].head(n_examples)
    if not len(mistakes):
        return []
    cols = [c for c in ERROR_COLUMNS if c in mistakes]
    return [
        "",
        f"Most confident mistakes (all in `evaluation/{errors_csv.name}`):",
        "",
        markdown_table(cols, mistakes[cols].values.tolist()),
    ]


def _breakdown_lines(eval_dir: Path) -> list[str]:
    breakdown_csv = eval_dir / "breakdown.csv"
    if not breakdown_csv.is_file():
        return []
    table = pd.read_csv(breakdown_csv)
    lines = []
    sources = table[table["factor"] == "subset_id"]
    if len(sources) > 1:  # the demo data's synthesized and sample-based recordings, or IDMT subsets
        by_source = "; ".join(
            f"{r.bucket}: balanced accuracy {r.balanced_accuracy:.3f} (n={r.n})" for r in sources.itertuples()
        )
        lines += ["", f"By source (`subset_id`): {by_source}."]
    slices = table[table["n"] >= 5].sort_values("accuracy", kind="stable").head(3)
    if len(slices):
        weakest = "; ".join(f"{r.factor} {r.bucket}: {r.accuracy:.2f} (n={r.n})" for r in slices.itertuples())
        lines += ["", f"Weakest slices (≥ 5 events, by accuracy; all in `evaluation/breakdown.csv`): {weakest}."]
    return lines


def ensemble_section(sweep: SweepData, c: ReportContent | None = None) -> list[str]:
    """The last ``jobs/ensemble.py`` outcome (``ensemble.json`` in the sweep folder); nothing when there is none."""
    path = Path(sweep.sweep_dir) / ENSEMBLE_FILE
    if not path.is_file():
        return []
    e = json.loads(path.read_text())
    metric = e["metric"]
    keys = list(dict.fromkeys(["balanced_accuracy", metric]))
    members = ", ".join(f"{m['trial_id']} ({m['weight']:.2f})" for m in e["members"] if m["weight"] > 0)
    rows = [
        [who, *(metric_cell(scores[k], 4) for k in keys), f"{ms:.2f}"]
        for who, scores, ms in (
            ("ensemble", e["test"], e["latency_ms"]),
            ("best member", e["best_member_test"], e["best_member_latency_ms"]),
        )
    ]
    reg = e.get("registration") or {}
    out = [
        "## Ensemble",
        "",
        f"`jobs/ensemble.py --top {e['top']} --method {e['method']}`: {e['rule']} of {members} (weights). Test "
        f"{metric} {e['gain']:+.4f} over the best member, at {e['latency_ratio']:.1f}x its CPU latency (ms per 1-s "
        "snippet, one thread).",
        "",
        markdown_table(["model", *(f"test {k}" for k in keys), "latency ms"], rows),
    ]
    if reg:
        out += ["", f"Registered as {reg['model']} v{reg['version']}; champion: {'yes' if reg['champion'] else 'no'} "
                f"({reg['reason']})."]  # fmt: skip
    return out


SECTIONS = (
    header_section,
    recommendations_section,
    bars_section,
    leaderboard_section,
    parameters_section,
    importance_section,
    curves_section,
    pareto_section,
    champion_section,
    ensemble_section,
)


def render_markdown(sweep: SweepData, content: ReportContent) -> str:
    """Returns report.md's text: every section of ``SECTIONS``, separated by blank lines."""
    return "\n\n".join("\n".join(section(sweep, content)).rstrip("\n") for section in SECTIONS).rstrip() + "\n"
