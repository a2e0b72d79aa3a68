"""The report's figures: parallel coordinates, importance bars, learning curves, accuracy vs latency."""

from __future__ import annotations

from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from guitar_cls.report.data import SweepData, distribution_value, distributions
from guitar_cls.report.importance import Importance
from guitar_cls.report.markdown import fmt
from guitar_cls.tune.record import STOPPED_EARLY

LOSS = "train/loss"
NA_POSITION = -0.12  # where a parallel-coordinates axis shows "param not used by this trial"


def save(fig: Figure, path: Path) -> str:
    """Writes ``fig`` to ``path`` and returns the file name (what report.md links)."""
    fig.savefig(path)
    return path.name


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def short_names(keys: list[str]) -> dict[str, str]:
    """Returns each dotted key's shortest unique suffix (``model.params.dropout`` -> ``dropout``)."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if sum(k == name or k.endswith("." + name) for k in keys) == 1:
                break
        out[key] = name
    return out


def _axis_positions(dist: BaseDistribution, values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Returns values mapped to [0, 1] on a parallel-coordinates axis (NaN when absent) and its (position, label)
    ticks: categories evenly spaced, numbers linear or log between the distribution's bounds."""
    if isinstance(dist, CategoricalDistribution):
        n = len(dist.choices)
        pos = {c: (i / (n - 1) if n > 1 else 0.5) for i, c in enumerate(dist.choices)}
        y = [pos.get(v, np.nan) if v is not None else np.nan for v in (distribution_value(dist, v) for v in values)]
        return np.asarray(y, float), [(p, fmt(c)) for c, p in pos.items()]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    lo, hi = float(dist.low), float(dist.high)
    scale = np.log if dist.log else (lambda x: x)
    span = (scale(hi) - scale(lo)) or 1.0
    raw = np.asarray([distribution_value(dist, v) for v in values], dtype=float)
    y = (scale(raw) - scale(lo)) / span
    ticks = [(0.0, fmt(lo)), (1.0, fmt(hi))]
    return y, ticks


def fig_parallel_coordinates(sweep: SweepData) -> Figure:
    """Returns a parallel-coordinates plot of each finished trial's params and best value of the sweep's metric."""
    board, key = sweep.finished, sweep.best_key
    dists = distributions(sweep)
    names = short_names(list(dists))
    axes = [*dists, key]
    fig = _figure(max(6.0, 1.7 * len(axes)), 4.8)
    ax = fig.add_subplot()
    scores = board[key].to_numpy(float)
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    columns, ticks = [], []
    for param in dists:
        y, t = _axis_positions(dists[param], board[param] if param in board else pd.Series([None] * len(board)))
        if np.isnan(y).any():  # a conditional param the trial did not use: drawn on an "n/a" notch below the axis
            y = np.where(np.isnan(y), NA_POSITION, y)
            t = [*t, (NA_POSITION, "n/a")]
        columns.append(y)
        ticks.append(t)
    columns.append((scores - lo) / (hi - lo))
    ticks.append([(0.0, f"{lo:.3f}"), (1.0, f"{hi:.3f}")])
    data = np.stack(columns, axis=1) if len(board) else np.zeros((0, len(axes)))  # (trials, axes)
    norm = mpl.colors.Normalize(lo, hi)
    colormap = mpl.colormaps["viridis"]
    x = np.arange(len(axes))
    for row, score, reason in zip(data, scores, board["stop_reason"]):
        ax.plot(
            x,
            row,
            color=colormap(norm(score)),
            lw=1.6,
            alpha=0.85,
            ls="--" if reason in STOPPED_EARLY else "-",
            marker="o",
            ms=3,
        )
    for i, t in enumerate(ticks):
        ax.axvline(i, color="0.6", lw=0.8, zorder=0)
        for pos, label in t:
            ax.text(
                i + 0.06,
                pos,
                label,
                fontsize=7,
                va="center",
                ha="left",
                color="0.25",
                bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 0.5},
            )
    ax.set_xticks(x, [names.get(k, k) for k in dists] + [f"best {sweep.short_metric}"], rotation=20, ha="right")
    ax.set_yticks([])
    ax.set_ylim(NA_POSITION - 0.06, 1.08)
    ax.set_xlim(-0.2, len(axes) - 0.6)
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=colormap), ax=ax, label=f"best val {sweep.long_metric}")
    ax.set_title(f"{sweep.name}: params vs best {sweep.short_metric} (dashed: stopped early)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_importances(importance: Importance) -> Figure:
    """Returns a horizontal bar chart of parameter importances (most important on top)."""
    items = list(importance.values.items())[::-1]
    fig = _figure(6.4, 0.45 * len(items) + 1.4)
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlabel("importance (sums to 1)")
    ax.set_xlim(0, max([v for _, v in items] + [0.01]) * 1.18)
    ax.set_title(f"parameter importance ({importance.n_trials} trials)")
    fig.tight_layout()
    return fig


def fig_learning_curves(sweep: SweepData, legend_max: int = 12) -> Figure:
    """Returns the sweep's metric and train loss per epoch, one line per trial (dashed: stopped early)."""
    fig = _figure(11.0, 4.2)
    ax_acc, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = mpl.colormaps["tab10"]
    for rank, (_, row) in enumerate(sweep.board.iterrows()):
        curve = sweep.curves.get(row["trial_id"])
        if curve is None:
            continue
        style = {
            "color": colors(rank % 10),
            "ls": "--" if row["stop_reason"] in STOPPED_EARLY else "-",
            "marker": ".",
            "label": f"{row['trial_id']} ({row['family']})" if rank < legend_max else None,
        }
        epochs = curve["training_iteration"]
        if sweep.metric in curve:
            ax_acc.plot(epochs, curve[sweep.metric], **style)
        if LOSS in curve:
            ax_loss.plot(epochs, curve[LOSS], **style)
    for ax, label in ((ax_acc, f"val {sweep.long_metric}"), (ax_loss, "train loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{sweep.name}: learning curves (dashed: stopped before {sweep.max_epochs} epochs)")
    fig.tight_layout()
    return fig


def fig_pareto(sweep: SweepData, front: pd.DataFrame) -> Figure:
    """Returns the best value of the sweep's metric vs CPU latency for every trial, the Pareto front (``front``, over
    the sweep's objectives) circled, labelled and, when those are this plot's two axes, joined."""
    board, key = sweep.board, sweep.best_key
    fig = _figure(6.8, 4.6)
    ax = fig.add_subplot()
    ok = board.dropna(subset=[key, "latency_ms"])
    markers = "osD^v<>P*X"
    for i, (family, group) in enumerate(ok.groupby("family", sort=True)):
        ax.scatter(group["latency_ms"], group[key], marker=markers[i % len(markers)], s=36, alpha=0.75, label=family)
    # The front is a staircase in this plane only when its objectives are this plane's (else: circled points).
    planar = sorted(o["metric"] for o in sweep.front_objectives) == sorted([sweep.metric, "latency_ms"])
    front = front.dropna(subset=[key, "latency_ms"])
    if len(front) and planar:
        ax.step(front["latency_ms"], front[key], where="post", color="tab:red", lw=1.2, alpha=0.7)
    if len(front):
        ax.scatter(
            front["latency_ms"],
            front[key],
            s=110,
            facecolors="none",
            edgecolors="tab:red",
            lw=1.5,
            label="Pareto front",
        )
        for _, r in front.iterrows():
            ax.annotate(
                str(r["trial_id"]),
                (r["latency_ms"], r[key]),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=7,
            )
    if len(ok) and ok["latency_ms"].min() > 0 and ok["latency_ms"].max() / ok["latency_ms"].min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel("CPU latency per snippet (ms)")
    ax.set_ylabel(f"best val {sweep.long_metric}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("accuracy vs latency")
    fig.tight_layout()
    return fig
