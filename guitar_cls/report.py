"""A finished sweep's report: ``report.md`` and its figures, written from the files the sweep left behind.

``build_report(name, out)`` reads ``<output_dir>/sweeps/<name>/`` (``leaderboard.csv``, ``summary.json``,
``splits.csv``, ``mlflow_parent_run_id``) and the Tune experiment ``<storage>/<name>/`` (one ``result.json`` per
trial), and writes into ``out``:

- ``report.md``: recommendations, the quality bars, the leaderboard (params, best val balanced accuracy, epochs,
  latency, why a trial stopped), parameter importance, the accuracy/latency Pareto front and the champion's test
  results (per-class metrics, most-confused pairs, high-confidence mistakes, weakest slices);
- ``parallel_coordinates.png``, ``importance.png``, ``learning_curves.png``, ``pareto.png`` and the champion's
  ``confusion_matrix.png`` (``evaluation/`` holds the full ``guitar_cls.evaluate`` output when it ran).

A trial that stopped before ``budget.max_epochs`` is labelled ``early_stopping`` when its own validation history
shows ``training.early_stopping_patience`` epochs without improvement, ``asha`` when it stopped at an ASHA rung
(``grace_period * reduction_factor**k``), else ``stopped`` (the time budget ran out). A trial cut by the time budget
exactly at a rung reads as ``asha``: the files do not tell the two apart.

The report is written to a temporary folder beside ``out`` and moved into place at the end; an existing ``out`` is
replaced only when it is a previous report (or with ``overwrite``), and files in it that we did not write are kept
(``guitar_cls.outputs``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib as mpl
import numpy as np
import optuna
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from guitar_cls.config import config_from_dict, load_config
from guitar_cls.data.schema import LABELS
from guitar_cls.evaluate import evaluate
from guitar_cls.outputs import staged_output
from guitar_cls.train.loop import METRIC
from guitar_cls.train.metrics import plot_confusion_matrix
from guitar_cls.tune.space import SearchSpace, load_space
from guitar_cls.tune.sweep import BEST_KEY, pareto_front

log = logging.getLogger(__name__)

REPORT = "report.md"
REPORT_KIND = "sweep report"  # the output kind in the folder's marker (guitar_cls.outputs)
LOSS = "train/loss"
# Columns of leaderboard.csv that are not trial params (the rest are the Tune trial config).
BOARD_COLUMNS = ("trial_id", "status", BEST_KEY, "last/" + METRIC, "epochs", "latency_ms", "checkpoint_path")
CONSTANT_KEYS = ("training.epochs",)  # in every trial config, set by budget.max_epochs
STOPPED = ("asha", "early_stopping", "stopped")
NEAR_BEST = 0.01  # "within 1 point" of balanced accuracy
MIN_IMPORTANCE_TRIALS = 2
FEW_TRIALS = 10  # below this, importance rankings are indicative only
NA_POSITION = -0.12  # where a parallel-coordinates axis shows "param not used by this trial"
STOP_LABELS = {
    "asha": "stopped by ASHA",
    "early_stopping": "stopped by early stopping",
    "stopped": "cut by the time budget",
}
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


class SweepNotFound(FileNotFoundError):
    """The sweep's folder or leaderboard does not exist; the message names the path."""


class ReportError(ValueError):
    """The report cannot be written as asked (champion evaluation without its data, an unsafe output folder)."""


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


@dataclass
class SweepData:
    """Everything a finished sweep left on disk.

    ``board`` is ``leaderboard.csv`` (best first) plus ``family`` (model name), ``stop_reason`` (``completed``,
    ``asha``, ``early_stopping``, ``stopped`` or ``error``) and ``epoch_s`` (mean seconds per epoch, NaN without
    curves); ``curves`` maps trial id -> one row per epoch of its ``result.json``.
    """

    name: str
    sweep_dir: Path
    board: pd.DataFrame
    summary: dict[str, Any]
    params: list[str]  # searched params present in the board, in the space's order
    max_epochs: int
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    experiment_dir: Path | None = None
    space: SearchSpace | None = None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def finished(self) -> pd.DataFrame:
        """Returns the trials that reported a best validation score (errors excluded), best first."""
        return self.board[(self.board["status"] != "ERROR") & self.board[BEST_KEY].notna()]

    @property
    def best(self) -> pd.Series | None:
        """Returns the champion's board row: summary.json's ``best_trial``, else the top finished trial."""
        finished = self.finished
        chosen = finished[finished["trial_id"] == str(self.summary.get("best_trial"))]
        return chosen.iloc[0] if len(chosen) else (finished.iloc[0] if len(finished) else None)


@dataclass
class Importance:
    """Parameter importances (normalised to sum to 1, most important first) or the reason there are none."""

    values: dict[str, float]
    note: str
    n_trials: int


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


# ---------------------------------------------------------------------------------------------------- loading


def load_sweep(
    name: str,
    output_dir: str | Path = "outputs",
    *,
    storage: str | Path | None = None,
    space: str | Path | None = None,
) -> SweepData:
    """Returns the sweep ``name`` read from ``<output_dir>/sweeps/<name>`` and its Tune experiment folder.

    Args:
        storage: Tune storage path; default: the one the checkpoints live under, then ``$GUITAR_CLS_STORAGE``,
            then ``<output_dir>/ray_results``.
        space: search-space YAML; default: ``space_file`` recorded in summary.json or the MLflow parent run.

    Raises:
        SweepNotFound: there is no ``leaderboard.csv`` for the sweep.
    """
    output_dir = Path(output_dir).expanduser().resolve()
    sweep_dir = output_dir / "sweeps" / name
    board_csv = sweep_dir / "leaderboard.csv"
    if not board_csv.is_file():
        found = sorted(p.parent.name for p in (output_dir / "sweeps").glob("*/leaderboard.csv"))
        raise SweepNotFound(
            f"sweep {name!r}: {board_csv} not found (finished sweeps under {output_dir / 'sweeps'}: "
            f"{', '.join(found) or 'none'})"
        )
    board = pd.read_csv(board_csv, dtype={"trial_id": str})  # ids like "00123456" stay strings
    missing = [c for c in ("trial_id", "status", BEST_KEY, "epochs", "latency_ms") if c not in board.columns]
    if missing:
        raise ReportError(f"{board_csv}: missing columns {missing}")
    board["trial_id"] = board["trial_id"].astype(str)
    board = board.sort_values(BEST_KEY, ascending=False, kind="stable", na_position="last").reset_index(drop=True)
    summary_path = sweep_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    if not summary:
        log.warning("%s not found: no champion, test metrics or wall time in the report", summary_path)
    tags = parent_run_tags(sweep_dir, output_dir)
    space_obj = None
    space_path = space or summary.get("space_file") or tags.get("space_file")
    if space is not None:
        space_obj = load_space(space)  # asked for explicitly: a bad file is an error
    elif space_path and Path(space_path).is_file():
        space_obj = load_space(space_path)
    else:
        log.warning("no search-space file (%s): distributions are inferred from the leaderboard", space_path)
    exp_dir = find_experiment_dir(name, board, output_dir, storage)
    curves = read_curves(exp_dir) if exp_dir is not None else {}
    params = searched_params(board, space_obj)
    max_epochs = _max_epochs(board, space_obj)
    board = annotate_trials(board, curves, space_obj, max_epochs)
    return SweepData(name, sweep_dir, board, summary, params, max_epochs, curves, exp_dir, space_obj, tags)


def parent_run_tags(sweep_dir: Path, output_dir: Path) -> dict[str, str]:
    """Returns the tags of the sweep's MLflow parent run (``space_file``, ``metadata``...), or {} when unreadable."""
    id_file = sweep_dir / "mlflow_parent_run_id"
    if not id_file.is_file():
        return {}
    import mlflow
    from mlflow.tracking import MlflowClient

    from guitar_cls.tracking import tracking_uri

    uri = tracking_uri(config_from_dict({}, [("logging.output_dir", str(output_dir))]))
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).is_file():
        return {}  # opening a missing sqlite store would create one
    try:
        return dict(MlflowClient(tracking_uri=uri).get_run(id_file.read_text().strip()).data.tags)
    except mlflow.exceptions.MlflowException as e:
        log.warning("cannot read the sweep's MLflow parent run from %s: %s", uri, e)
        return {}


def find_experiment_dir(
    name: str, board: pd.DataFrame, output_dir: Path, storage: str | Path | None = None
) -> Path | None:
    """Returns the Tune experiment folder ``<storage>/<name>`` (see ``load_sweep``), or None when there is none."""
    roots: list[Path] = []
    if storage is not None:
        roots.append(Path(storage).expanduser())
    checkpoints = board["checkpoint_path"].dropna() if "checkpoint_path" in board else pd.Series(dtype=str)
    roots += [Path(str(c)).parent.parent for c in checkpoints.head(1) if "://" not in str(c)]  # <storage>/train-*/ckpt
    if os.environ.get("GUITAR_CLS_STORAGE"):
        roots.append(Path(os.environ["GUITAR_CLS_STORAGE"]))
    roots.append(output_dir / "ray_results")
    for root in roots:
        if (root / name).is_dir():
            return (root / name).resolve()
    log.warning("no Tune experiment folder for %s under %s: no learning curves", name, [str(r) for r in roots])
    return None


def read_curves(experiment_dir: Path) -> dict[str, pd.DataFrame]:
    """Returns trial id -> its per-epoch results (one row per ``training_iteration``, the last report wins).

    Unreadable lines (a trial killed mid-write) are skipped.
    """
    curves: dict[str, pd.DataFrame] = {}
    for path in sorted(experiment_dir.glob("*/result.json")):
        rows = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rows.append({k: v for k, v in json.loads(line).items() if not isinstance(v, (dict, list))})
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line", path)
        rows = [r for r in rows if "trial_id" in r and "training_iteration" in r]
        if not rows:
            continue
        df = pd.DataFrame(rows).drop_duplicates("training_iteration", keep="last").sort_values("training_iteration")
        curves[str(rows[-1]["trial_id"])] = df.reset_index(drop=True)
    return curves


def searched_params(board: pd.DataFrame, space: SearchSpace | None) -> list[str]:
    """Returns the searched params in the board: the space's params in order, else every varying config column."""
    if space is not None:
        return [k for k in space.params if k in board.columns]
    config_cols = [c for c in board.columns if c not in BOARD_COLUMNS and c not in CONSTANT_KEYS]
    return [c for c in config_cols if board[c].dropna().astype(str).nunique() > 1]


def _max_epochs(board: pd.DataFrame, space: SearchSpace | None) -> int:
    if space is not None:
        return space.budget.max_epochs
    if "training.epochs" in board and board["training.epochs"].notna().any():
        return int(board["training.epochs"].max())
    return int(board["epochs"].max()) if len(board) else 0


def asha_rungs(space: SearchSpace | None, max_epochs: int) -> set[int]:
    """Returns the epochs at which ASHA may stop a trial (empty without ASHA)."""
    if space is None or space.scheduler.type != "asha":
        return set()
    s = space.scheduler
    n = int(math.log(max_epochs / s.grace_period) / math.log(s.reduction_factor) + 1)
    milestones = {math.ceil(s.grace_period * s.reduction_factor**k - 1e-9) for k in range(n)}
    return {m for m in milestones if m < max_epochs}


def epochs_without_improvement(values: pd.Series) -> int:
    """Returns how many epochs at the end of ``values`` did not improve on the best before them (the loop's rule)."""
    best, since = -math.inf, 0
    for v in values.dropna():
        if v > best + 1e-6:
            best, since = v, 0
        else:
            since += 1
    return since


def _setting(row: pd.Series, key: str, space: SearchSpace | None, default: Any) -> Any:
    """Returns a trial's config value: its own column, else the space's ``fixed`` value, else ``default``."""
    value = row.get(key)
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        return value
    if space is not None and key in space.fixed:
        return space.fixed[key]
    return default


def annotate_trials(
    board: pd.DataFrame, curves: dict[str, pd.DataFrame], space: SearchSpace | None, max_epochs: int
) -> pd.DataFrame:
    """Returns ``board`` with ``family``, ``stop_reason`` and ``epoch_s`` columns (see ``SweepData``)."""
    defaults = (
        load_config(None).to_dict() if space is None else config_from_dict({}, space.shared_overrides()).to_dict()
    )
    rungs = asha_rungs(space, max_epochs)
    family, reason, epoch_s = [], [], []
    for _, row in board.iterrows():
        family.append(str(_setting(row, "model.name", space, defaults["model"]["name"])))
        curve = curves.get(row["trial_id"])
        epoch_s.append(float(curve["epoch_s"].mean()) if curve is not None and "epoch_s" in curve else np.nan)
        epochs = int(row["epochs"]) if pd.notna(row["epochs"]) else 0
        patience = int(
            _setting(row, "training.early_stopping_patience", space, defaults["training"]["early_stopping_patience"])
        )
        if row["status"] == "ERROR":
            reason.append("error")
        elif epochs >= max_epochs:
            reason.append("completed")
        elif curve is not None and METRIC in curve and epochs_without_improvement(curve[METRIC]) >= patience:
            reason.append("early_stopping")
        elif epochs in rungs:
            reason.append("asha")
        else:
            reason.append("stopped")
    return board.assign(family=family, stop_reason=reason, epoch_s=epoch_s)


# ---------------------------------------------------------------------------------------------------- importance


def distributions(sweep: SweepData) -> dict[str, BaseDistribution]:
    """Returns the Optuna distribution of each searched param: from the space file, else inferred from the board."""
    out: dict[str, BaseDistribution] = {}
    for key in sweep.params:
        if sweep.space is not None:
            p = sweep.space.params[key]
            if p.kind == "choice":
                out[key] = CategoricalDistribution([p.encode(c) for c in p.choices])
            elif p.kind == "int":
                out[key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
            else:
                out[key] = FloatDistribution(float(p.low), float(p.high), log=p.kind == "loguniform", step=p.step)
            continue
        values = sweep.board[key].dropna()
        numeric = pd.to_numeric(values, errors="coerce")
        if len(values) and numeric.notna().all() and not values.map(lambda v: isinstance(v, bool)).any():
            lo, hi = float(numeric.min()), float(numeric.max())
            out[key] = FloatDistribution(lo, hi if hi > lo else lo + 1.0)
        else:
            out[key] = CategoricalDistribution(sorted({str(v) for v in values}))
    return out


def distribution_value(dist: BaseDistribution, value: Any) -> Any:
    """Returns ``value`` (as read from leaderboard.csv) in ``dist``'s external form, or None when absent/outside."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if choice == value and isinstance(choice, bool) == isinstance(value, bool):
                return choice
            if str(choice) == str(value):  # "True" vs True, "[1, 1]" as read back from the CSV
                return choice
            numbers = [c for c in (choice, value) if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if len(numbers) == 2 and math.isclose(float(choice), float(value), rel_tol=1e-9):
                return choice
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    number = min(max(number, dist.low), dist.high)
    if dist.step is not None:
        number = dist.low + round((number - dist.low) / dist.step) * dist.step
    return int(round(number)) if isinstance(dist, IntDistribution) else number


def param_importances(sweep: SweepData) -> Importance:
    """Returns Optuna's parameter importances of the finished trials' best val balanced accuracy.

    The study is rebuilt from the leaderboard (one ``create_trial`` per finished trial, with the space's
    distributions). Optuna's default evaluator (PED-ANOVA) scores conditional params on the trials that used them;
    params that never varied are left out.
    """
    finished = sweep.finished
    n = len(finished)
    if n < MIN_IMPORTANCE_TRIALS:
        return Importance(
            {}, f"Parameter importance needs at least {MIN_IMPORTANCE_TRIALS} finished trials; this sweep has {n}.", n
        )
    dists = distributions(sweep)
    trials, seen = [], {k: set() for k in dists}
    for _, row in finished.iterrows():
        params = {k: v for k, d in dists.items() if (v := distribution_value(d, row.get(k))) is not None}
        for k, v in params.items():
            seen[k].add(str(v))
        trials.append(
            optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=float(row[BEST_KEY])
            )
        )
    varied = [k for k in dists if len(seen[k]) > 1]
    if finished[BEST_KEY].nunique() < 2:
        return Importance(
            {},
            f"All {n} finished trials reached the same best val balanced accuracy: no parameter "
            "made a difference to rank.",
            n,
        )
    if not varied:
        return Importance({}, f"No parameter took more than one value in the {n} finished trials.", n)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize", study_name=sweep.name)
        study.add_trials(trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PED-ANOVA's "few trials" warnings: the note says so
            values = optuna.importance.get_param_importances(study, params=varied)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        log.warning("parameter importance failed: %s", e)
        return Importance({}, f"Parameter importance could not be computed from {n} trials: {e}", n)
    finally:
        optuna.logging.set_verbosity(verbosity)
    note = (
        f"PED-ANOVA (Optuna's default evaluator) over {n} finished trials; conditional parameters are scored on "
        "the trials that used them."
    )
    if n < FEW_TRIALS:
        note += f" With fewer than {FEW_TRIALS} trials the ranking is indicative only."
    return Importance({k: float(v) for k, v in values.items()}, note, n)


# ---------------------------------------------------------------------------------------------------- figures


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
        return np.asarray(y, float), [(p, _fmt(c)) for c, p in pos.items()]
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    lo, hi = float(dist.low), float(dist.high)
    scale = np.log if dist.log else (lambda x: x)
    span = (scale(hi) - scale(lo)) or 1.0
    raw = np.asarray([distribution_value(dist, v) for v in values], dtype=float)
    y = (scale(raw) - scale(lo)) / span
    ticks = [(0.0, _fmt(lo)), (1.0, _fmt(hi))]
    return y, ticks


def fig_parallel_coordinates(sweep: SweepData) -> Figure:
    """Returns a parallel-coordinates plot of each finished trial's params and best val balanced accuracy."""
    board = sweep.finished
    dists = distributions(sweep)
    names = short_names(list(dists))
    axes = [*dists, BEST_KEY]
    fig = _figure(max(6.0, 1.7 * len(axes)), 4.8)
    ax = fig.add_subplot()
    scores = board[BEST_KEY].to_numpy(float)
    lo, hi = (float(scores.min()), float(scores.max())) if len(scores) else (0.0, 1.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.01, hi + 0.01
    columns, ticks = [], []
    for key in dists:
        y, t = _axis_positions(dists[key], board[key] if key in board else pd.Series([None] * len(board)))
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
            ls="--" if reason in STOPPED else "-",
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
    ax.set_xticks(x, [names.get(k, k) for k in dists] + ["best val BA"], rotation=20, ha="right")
    ax.set_yticks([])
    ax.set_ylim(NA_POSITION - 0.06, 1.08)
    ax.set_xlim(-0.2, len(axes) - 0.6)
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=colormap), ax=ax, label="best val balanced accuracy")
    ax.set_title(f"{sweep.name}: params vs best val BA (dashed: stopped early)", fontsize=10)
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
    """Returns val balanced accuracy and train loss per epoch, one line per trial (dashed: stopped early)."""
    fig = _figure(11.0, 4.2)
    ax_acc, ax_loss = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = mpl.colormaps["tab10"]
    for rank, (_, row) in enumerate(sweep.board.iterrows()):
        curve = sweep.curves.get(row["trial_id"])
        if curve is None:
            continue
        style = {
            "color": colors(rank % 10),
            "ls": "--" if row["stop_reason"] in STOPPED else "-",
            "marker": ".",
            "label": f"{row['trial_id']} ({row['family']})" if rank < legend_max else None,
        }
        epochs = curve["training_iteration"]
        if METRIC in curve:
            ax_acc.plot(epochs, curve[METRIC], **style)
        if LOSS in curve:
            ax_loss.plot(epochs, curve[LOSS], **style)
    for ax, label in ((ax_acc, "val balanced accuracy"), (ax_loss, "train loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(mpl.ticker.MaxNLocator(integer=True))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    ax_acc.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{sweep.name}: learning curves (dashed: stopped before {sweep.max_epochs} epochs)")
    fig.tight_layout()
    return fig


def fig_pareto(board: pd.DataFrame, front: pd.DataFrame) -> Figure:
    """Returns best val balanced accuracy vs CPU latency for every trial, the Pareto front joined and labelled."""
    fig = _figure(6.8, 4.6)
    ax = fig.add_subplot()
    ok = board.dropna(subset=[BEST_KEY, "latency_ms"])
    markers = "osD^v<>P*X"
    for i, (family, group) in enumerate(ok.groupby("family", sort=True)):
        ax.scatter(
            group["latency_ms"], group[BEST_KEY], marker=markers[i % len(markers)], s=36, alpha=0.75, label=family
        )
    if len(front):
        ax.step(front["latency_ms"], front[BEST_KEY], where="post", color="tab:red", lw=1.2, alpha=0.7)
        ax.scatter(
            front["latency_ms"],
            front[BEST_KEY],
            s=110,
            facecolors="none",
            edgecolors="tab:red",
            lw=1.5,
            label="Pareto front",
        )
        for _, r in front.iterrows():
            ax.annotate(
                str(r["trial_id"]),
                (r["latency_ms"], r[BEST_KEY]),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=7,
            )
    if len(ok) and ok["latency_ms"].min() > 0 and ok["latency_ms"].max() / ok["latency_ms"].min() > 10:
        ax.set_xscale("log")
    ax.set_xlabel("CPU latency per snippet (ms)")
    ax.set_ylabel("best val balanced accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("accuracy vs latency")
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path)
    return path.name


# ---------------------------------------------------------------------------------------------------- champion


def champion_inputs(
    sweep: SweepData, metadata: str | Path | None = None, audio_root: str | Path | None = None
) -> tuple[Path, Path, Path, Path | None]:
    """Returns (checkpoint, metadata, audio root, splits.csv or None) to evaluate the sweep's best trial with.

    Metadata: the argument, else summary.json ``metadata``, else the MLflow parent run's ``metadata`` tag. Audio
    root: the argument, else summary.json ``audio_root``, else the metadata file's folder (the demo layout).
    """
    checkpoint = sweep.summary.get("checkpoint")
    best = sweep.best
    if checkpoint is None and best is not None and pd.notna(best.get("checkpoint_path")):
        checkpoint = Path(best["checkpoint_path"]) / "best.pt"
    if checkpoint is None or not Path(checkpoint).is_file():
        raise ReportError(f"sweep {sweep.name}: the best checkpoint {checkpoint} is missing; use --no-evaluate")
    metadata = metadata or sweep.summary.get("metadata") or sweep.tags.get("metadata")
    if not metadata:
        raise ReportError(
            f"sweep {sweep.name}: neither summary.json nor the MLflow run records the metadata table; "
            "pass --metadata (and --audio-root) or --no-evaluate"
        )
    metadata = Path(metadata)
    if not metadata.is_file():
        raise ReportError(f"sweep {sweep.name}: metadata table {metadata} not found; pass --metadata or --no-evaluate")
    root = Path(audio_root or sweep.summary.get("audio_root") or sweep.tags.get("audio_root") or metadata.parent)
    splits = sweep.sweep_dir / "splits.csv"
    return Path(checkpoint), metadata, root, splits if splits.is_file() else None


def champion_evaluation(
    sweep: SweepData, out_dir: Path, metadata: str | Path | None = None, audio_root: str | Path | None = None
) -> dict[str, Any]:
    """Returns the metrics of ``guitar_cls.evaluate.evaluate`` on the best checkpoint's test split, written to
    ``out_dir`` (metrics.json, confusion_matrix.png, errors.csv, breakdown.csv...)."""
    checkpoint, meta, root, splits = champion_inputs(sweep, metadata, audio_root)
    log.info("evaluating the champion %s on the test split of %s", checkpoint, meta)
    return evaluate(checkpoint, meta, root, out_dir, split="test", splits_csv=splits)


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


# ---------------------------------------------------------------------------------------------------- advice


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
    best = sweep.finished.groupby("family")[BEST_KEY].agg(["max", "size"]).sort_values("max", ascending=False)
    if best.empty:
        return None
    top, score = best.index[0], float(best["max"].iloc[0])
    if len(best) == 1:
        return (
            f"All trials used **{top}** (best val BA {score:.4f}); the model family was not compared in this "
            "sweep (search_spaces/arch.yaml compares families)."
        )
    runner, second = best.index[1], float(best["max"].iloc[1])
    margin = score - second
    per_family = ", ".join(f"{f} {m:.4f} ({int(n)} trials)" for f, (m, n) in best.iterrows())
    text = f"Best family: **{top}**, {margin:.4f} ahead of {runner} (best val BA per family: {per_family})."
    if margin < NEAR_BEST:
        text += (
            f" The margin is under {NEAR_BEST:.2f}: within the noise of one validation split, so let latency "
            "decide between them."
        )
    return text


def _asha_advice(sweep: SweepData) -> str | None:
    board = sweep.board
    asha = board[board["stop_reason"] == "asha"]
    early = board[board["stop_reason"] == "early_stopping"]
    cut = board[board["stop_reason"] == "stopped"]
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
    if curve is None or BEST_KEY not in curve:
        return ""
    at = curve.set_index("training_iteration")[BEST_KEY]
    ahead, gaps = [], []
    for _, row in asha.iterrows():
        e = int(row["epochs"])
        if e not in at.index or pd.isna(row[BEST_KEY]):
            continue
        gap = float(at[e]) - float(row[BEST_KEY])
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
    near = ok[ok[BEST_KEY] >= float(best[BEST_KEY]) - NEAR_BEST]
    fast = near.sort_values("latency_ms", kind="stable").iloc[0]
    if fast["trial_id"] == best["trial_id"] or pd.isna(best["latency_ms"]):
        return (
            f"The best trial {best['trial_id']} is also the fastest within {NEAR_BEST * 100:.0f} point of it "
            f"({best['latency_ms']:.1f} ms per snippet on CPU)."
        )
    speedup = float(best["latency_ms"]) / max(float(fast["latency_ms"]), 1e-9)
    text = (
        f"Fastest within {NEAR_BEST * 100:.0f} point of the best: {fast['trial_id']} ({fast['family']}, val BA "
        f"{fast[BEST_KEY]:.4f}, {fast['latency_ms']:.1f} ms) vs the best {best['trial_id']} ({best[BEST_KEY]:.4f}, "
        f"{best['latency_ms']:.1f} ms): {speedup:.1f}x faster at {float(best[BEST_KEY]) - float(fast[BEST_KEY]):.4f} "
        "lower val BA"
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
        numbers = pd.to_numeric(used, errors="coerce")
        if numbers.notna().all() and not used.map(lambda v: isinstance(v, bool)).any() and used.nunique() > 1:
            span = f"{_fmt(float(numbers.min()))}-{_fmt(float(numbers.max()))}"
        else:
            span = ", ".join(sorted({_fmt(v) for v in used}))
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
    listed = "; ".join(f"{b['name']} {_bar_value(b)} (needs {b['op']} {_fmt(b['threshold'])})" for b in failed)
    return f"Quality bars: {len(known) - len(failed)} of {len(known)} met; not met: {listed}."


# ---------------------------------------------------------------------------------------------------- markdown


def _fmt(value: Any) -> str:
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


def _count(n: int, noun: str) -> str:
    return f"{int(n)} {noun}{'' if n == 1 else 's'}"


def _metric(value: Any, digits: int = 3) -> str:
    """Returns a metric cell with a fixed number of decimals, '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{float(value):.{digits}f}"


def _bar_value(bar: dict[str, Any]) -> str:
    return _metric(bar["value"], 1 if bar["name"].startswith("CPU latency") else 3)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """Returns a GitHub-flavoured markdown table (cells formatted with ``_fmt`` unless already strings)."""
    cell = [[(c if isinstance(c, str) else _fmt(c)).replace("|", "\\|") for c in r] for r in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cell])


def _stop_cell(row: pd.Series) -> str:
    reason = row["stop_reason"]
    epochs = int(row["epochs"]) if pd.notna(row["epochs"]) else 0
    return {
        "asha": f"ASHA @ {epochs}",
        "early_stopping": f"early stop @ {epochs}",
        "stopped": f"cut @ {epochs}",
        "error": "error",
    }.get(reason, "no")


def leaderboard_markdown(sweep: SweepData, top: int = 10) -> str:
    """Returns the top ``top`` trials as a markdown table (params, best val BA, epochs, latency, stop reason)."""
    names = short_names(sweep.params)
    header = ["#", "trial", "family", *[names[k] for k in sweep.params if k != "model.name"]]
    header += ["best val BA", "last val BA", "epochs", "latency ms", "stopped early"]
    rows = []
    for rank, (_, r) in enumerate(sweep.board.head(top).iterrows(), start=1):
        rows.append(
            [
                str(rank),
                str(r["trial_id"]),
                str(r["family"]),
                *[r.get(k) for k in sweep.params if k != "model.name"],
                f"{r[BEST_KEY]:.4f}" if pd.notna(r[BEST_KEY]) else "–",
                f"{r['last/' + METRIC]:.4f}" if pd.notna(r.get("last/" + METRIC, np.nan)) else "–",
                f"{int(r['epochs'])}/{sweep.max_epochs}",
                f"{r['latency_ms']:.1f}" if pd.notna(r["latency_ms"]) else "–",
                _stop_cell(r),
            ]
        )
    return markdown_table(header, rows)


def _evaluation_markdown(eval_dir: Path | None, metrics: dict[str, Any], n_examples: int = 5) -> list[str]:
    lines = ["| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for c in LABELS:
        lines.append(
            f"| {c} | {_metric(metrics.get(f'precision/{c}'))} | {_metric(metrics.get(f'recall/{c}'))} | "
            f"{_metric(metrics.get(f'f1/{c}'))} | {_fmt(metrics.get(f'support/{c}'))} |"
        )
    lines.append("")
    pairs = metrics.get("most_confused")
    if pairs is None and metrics.get("confusion_matrix"):
        cm = metrics["confusion_matrix"]
        pairs = sorted(
            (
                {"true": LABELS[i], "predicted": LABELS[j], "count": int(cm[i][j])}
                for i in range(len(LABELS))
                for j in range(len(LABELS))
                if i != j and cm[i][j] > 0
            ),
            key=lambda p: -p["count"],
        )
    if pairs:
        lines.append(
            "Most-confused pairs (true → predicted): "
            + "; ".join(f"{p['true']} → {p['predicted']} ({p['count']})" for p in pairs[:4])
            + "."
        )
    else:
        lines.append("No confusions on the test split.")
    if eval_dir is None:
        return lines
    errors_csv = eval_dir / "errors.csv"
    if errors_csv.is_file():
        errors = pd.read_csv(errors_csv)
        mistakes = errors[errors["kind"] == "high_confidence_mistake"].head(n_examples)
        if len(mistakes):
            cols = [
                c
                for c in (
                    "source_audio",
                    "event_index",
                    "label",
                    "predicted",
                    "confidence",
                    "duration_sec",
                    "expression_style",
                )
                if c in mistakes
            ]
            lines += [
                "",
                f"Most confident mistakes (all in `evaluation/{errors_csv.name}`):",
                "",
                markdown_table(cols, mistakes[cols].values.tolist()),
            ]
    breakdown_csv = eval_dir / "breakdown.csv"
    if breakdown_csv.is_file():
        table = pd.read_csv(breakdown_csv)
        sources = table[table["factor"] == "subset_id"]
        if len(sources) > 1:  # the demo data's synthesized and sample-based recordings, or IDMT subsets
            lines += [
                "",
                "By source (`subset_id`): "
                + "; ".join(
                    f"{r.bucket}: balanced accuracy {r.balanced_accuracy:.3f} (n={r.n})" for r in sources.itertuples()
                )
                + ".",
            ]
        slices = table[table["n"] >= 5].sort_values("accuracy", kind="stable").head(3)
        if len(slices):
            lines += [
                "",
                "Weakest slices (≥ 5 events, by accuracy; all in `evaluation/breakdown.csv`): "
                + "; ".join(f"{r.factor} {r.bucket}: {r.accuracy:.2f} (n={r.n})" for r in slices.itertuples())
                + ".",
            ]
    return lines


def render_markdown(
    sweep: SweepData,
    *,
    front: pd.DataFrame,
    importance: Importance,
    metrics: dict[str, Any] | None,
    metrics_source: str,
    bars: list[dict[str, Any]],
    advice: list[str],
    figures: dict[str, str],
    eval_dir: Path | None,
    top: int,
) -> str:
    """Returns report.md's text; ``figures`` maps a figure's role to its file name in the report folder."""
    s = sweep.summary
    board = sweep.board
    reasons = board["stop_reason"].value_counts()
    head = [f"# Sweep report: {sweep.name}", ""]
    facts = [
        f"{len(board)} trials ({_count((board['status'] == 'ERROR').sum(), 'error')}"
        + "".join(f", {int(reasons.get(r, 0))} {STOP_LABELS[r]}" for r in STOPPED if reasons.get(r, 0))
        + f"), up to {sweep.max_epochs} epochs"
    ]
    if "wall_s" in s:
        facts.append(f"wall time {float(s['wall_s']) / 60:.1f} min")
    if "best_trial" in s:
        facts.append(f"best trial **{s['best_trial']}**")
    reg = s.get("registration") or {}
    if reg:
        facts.append(
            f"registered as {reg.get('model')} v{reg.get('version')}"
            + (" (now `champion`)" if reg.get("champion") else " (champion alias kept elsewhere)")
        )
    head.append("; ".join(facts) + ".")
    if sweep.space is not None:
        head.append(
            f"Search space: `{sweep.space.source}` ({sweep.space.search.algorithm}, "
            f"{sweep.space.scheduler.type} scheduler)."
        )
    out = [*head, "", "## Recommendations", ""] + [f"- {a}" for a in advice] + [""]

    out += [
        "## Quality bars",
        "",
        f"The champion on the test split (source: {metrics_source}); CPU latency from the sweep.",
        "",
    ]
    out.append(
        markdown_table(
            ["bar", "value", "needs", "met"],
            [
                [
                    b["name"] + (f" ({b['detail']})" if b["detail"] else ""),
                    _bar_value(b),
                    f"{b['op']} {_fmt(b['threshold'])}",
                    {True: "yes", False: "**no**", None: "unknown"}[b["passed"]],
                ]
                for b in bars
            ],
        )
    )
    out += [
        "",
        f"## Leaderboard (top {min(top, len(board))} of {len(board)})",
        "",
        leaderboard_markdown(sweep, top),
        "",
    ]

    out += ["## Parameters vs balanced accuracy", ""]
    if "parallel" in figures:
        out += [f"![parallel coordinates]({figures['parallel']})", ""]
    out += ["## Parameter importance", "", importance.note, ""]
    if "importance" in figures:
        out += [
            markdown_table(["parameter", "importance"], [[k, f"{v:.3f}"] for k, v in importance.values.items()]),
            "",
            f"![parameter importance]({figures['importance']})",
            "",
        ]
    out += ["## Learning curves", ""]
    if "curves" in figures:
        out += [f"![learning curves]({figures['curves']})", ""]
    else:
        out += ["No per-epoch results found (the Tune experiment folder is missing; see --storage).", ""]

    out += [
        "## Accuracy vs latency",
        "",
        f"Pareto front: the {len(front)} of {len(board)} trials that no other trial beats on both accuracy and "
        "latency.",
        "",
    ]
    out.append(
        markdown_table(
            ["trial", "family", "best val BA", "latency ms"],
            [
                [str(r["trial_id"]), str(r["family"]), f"{r[BEST_KEY]:.4f}", f"{r['latency_ms']:.1f}"]
                for _, r in front.iterrows()
            ],
        )
    )
    if "pareto" in figures:
        out += ["", f"![accuracy vs latency]({figures['pareto']})"]

    out += ["", "## Champion on the test split", ""]
    if metrics:
        out.append(
            f"Source: {metrics_source}. Balanced accuracy {_metric(metrics.get('balanced_accuracy'))}, macro F1 "
            f"{_metric(metrics.get('macro_f1'))}, accuracy {_metric(metrics.get('accuracy'))}."
        )
        if "confusion" in figures:
            out += ["", f"![confusion matrix]({figures['confusion']})"]
        out += ["", *_evaluation_markdown(eval_dir, metrics)]
    else:
        out.append("No test metrics: summary.json has none and the champion was not evaluated.")
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------- the report


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
        front = pareto_front(sweep.board)
        importance = param_importances(sweep)
        if len(sweep.finished):
            figures["parallel"] = _save(fig_parallel_coordinates(sweep), tmp / "parallel_coordinates.png")
        if importance.values:
            figures["importance"] = _save(fig_importances(importance), tmp / "importance.png")
        if sweep.curves:
            figures["curves"] = _save(fig_learning_curves(sweep), tmp / "learning_curves.png")
        figures["pareto"] = _save(fig_pareto(sweep.board, front), tmp / "pareto.png")
        best = sweep.best
        latency = float(best["latency_ms"]) if best is not None and pd.notna(best["latency_ms"]) else None
        bars = quality_bars(metrics, latency)
        advice = recommendations(sweep, importance, metrics, bars)
        text = render_markdown(
            sweep,
            front=front,
            importance=importance,
            metrics=metrics,
            metrics_source=source,
            bars=bars,
            advice=advice,
            figures=figures,
            eval_dir=eval_dir,
            top=top,
        )
        (tmp / REPORT).write_text(text)
    log.info("sweep report for %s -> %s", name, out / REPORT)
    return SweepReport(out / REPORT, sweep, front, importance, metrics, bars, advice, list(figures.values()))


__all__ = [
    "QUALITY_BARS",
    "Importance",
    "QualityBar",
    "ReportError",
    "SweepData",
    "SweepNotFound",
    "SweepReport",
    "build_report",
    "distributions",
    "champion_evaluation",
    "fig_importances",
    "fig_learning_curves",
    "fig_parallel_coordinates",
    "fig_pareto",
    "leaderboard_markdown",
    "load_sweep",
    "param_importances",
    "quality_bars",
    "read_curves",
    "recommendations",
]
