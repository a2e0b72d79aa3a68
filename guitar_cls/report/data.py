"""What a report reads: the sweep's record (``tune.record.SweepRecord``), its search space, the Tune experiment's
per-epoch curves and the MLflow parent run's tags; and the champion's inputs for a test-split evaluation."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from guitar_cls.config import config_from_dict, load_config
from guitar_cls.evaluate import evaluate
from guitar_cls.storage import fetch, is_dir, is_remote, join
from guitar_cls.tune.record import (
    BEST,
    BEST_POLICY,
    CHECKPOINTS_DIR,
    LEADERBOARD_CSV,
    PARENT_RUN_FILE,
    SPLITS_FILE,
    TRIALS_FILE,
    SweepRecord,
    best_key,
    front_objectives,
    last_key,
    read_curves,
)
from guitar_cls.tune.space import SearchSpace, load_space

log = logging.getLogger(__name__)

CONSTANT_KEYS = ("training.epochs",)  # in every trial config, set by budget.max_epochs
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the guitar_cls package
METRIC_NAMES = {"val/balanced_accuracy": ("val BA", "balanced accuracy")}  # short and long names in the report


class SweepNotFound(FileNotFoundError):
    """The sweep's folder or record does not exist; the message names the path."""


class ReportError(ValueError):
    """The report cannot be written as asked (champion evaluation without its data, an unsafe output folder)."""


def display_path(path: str | Path) -> str:
    """Returns ``path`` as a report shows it: relative to the project root when inside it, else its file name only
    (a report never carries a machine's absolute paths)."""
    p = Path(path)
    try:
        return p.resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return p.name


@dataclass
class SweepData:
    """Everything a finished sweep left on disk.

    ``board`` is the record's leaderboard (best first by ``metric`` in ``mode``): ``trial_id``, ``status``,
    ``stop_reason`` (``tune.record.STOP_REASONS``), ``best/<metric>``, ``last/<metric>``, ``epochs``, ``latency_ms``,
    ``checkpoint_path``, the params, plus ``family`` (model name) and ``epoch_s`` (mean seconds per epoch, NaN without
    curves); ``curves`` maps trial id -> one row per epoch of its ``result.json``.
    """

    name: str
    sweep_dir: Path
    board: pd.DataFrame
    summary: dict[str, Any]
    params: list[str]  # searched params present in the board, in the space's order
    max_epochs: int
    curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    experiment_dir: str | Path | None = None  # a Path, or a URI when Ray's results are in object storage
    space: SearchSpace | None = None
    tags: dict[str, str] = field(default_factory=dict)
    metric: str = "val/balanced_accuracy"
    mode: str = "max"
    objectives: list[dict[str, str]] = field(default_factory=list)  # the record's, the primary first
    champion_policy: dict[str, Any] = field(default_factory=lambda: dict(BEST_POLICY))

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def front_objectives(self) -> list[dict[str, str]]:
        """Returns the Pareto front's objectives: the record's when it has several, else the metric and latency."""
        return front_objectives(self.metric, self.mode, self.objectives)

    @property
    def best_key(self) -> str:
        return best_key(self.metric)

    @property
    def last_key(self) -> str:
        return last_key(self.metric)

    @property
    def short_metric(self) -> str:
        """Returns the metric's short name in tables (``val BA``)."""
        return METRIC_NAMES.get(self.metric, (self.metric, self.metric))[0]

    @property
    def long_metric(self) -> str:
        """Returns the metric's name in prose (``balanced accuracy``)."""
        return METRIC_NAMES.get(self.metric, ("", self.metric.split("/", 1)[-1].replace("_", " ")))[1]

    @property
    def finished(self) -> pd.DataFrame:
        """Returns the trials that reported a best score (errors excluded), best first."""
        return self.board[(self.board["status"] != "ERROR") & self.board[self.best_key].notna()]

    @property
    def best(self) -> pd.Series | None:
        """Returns the champion's board row: summary.json's ``best_trial``, else the top finished trial."""
        finished = self.finished
        chosen = finished[finished["trial_id"] == str(self.summary.get("best_trial"))]
        return chosen.iloc[0] if len(chosen) else (finished.iloc[0] if len(finished) else None)

    def better(self, a: float, b: float) -> float:
        """Returns how much better score ``a`` is than ``b`` (positive: better) under the sweep's mode."""
        return a - b if self.mode == "max" else b - a


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
        SweepNotFound: there is no record for the sweep.
    """
    output_dir = Path(output_dir).expanduser().resolve()
    sweep_dir = output_dir / "sweeps" / name
    try:
        record = SweepRecord.read(sweep_dir)
    except FileNotFoundError:
        sweeps = output_dir / "sweeps"
        found = sorted({p.parent.name for f in (TRIALS_FILE, LEADERBOARD_CSV) for p in sweeps.glob(f"*/{f}")})
        raise SweepNotFound(
            f"sweep {name!r}: {sweep_dir / TRIALS_FILE} not found (finished sweeps under {sweeps}: "
            f"{', '.join(found) or 'none'})"
        ) from None
    except (ValueError, KeyError, TypeError) as e:
        raise ReportError(f"sweep {name!r}: unreadable record in {sweep_dir}: {e}") from None
    summary = record.summary
    if not summary:
        log.warning("%s not found: no champion, test metrics or wall time in the report", sweep_dir / "summary.json")
    tags = parent_run_tags(sweep_dir, output_dir)
    space_obj = _load_space(space, summary.get("space_file") or tags.get("space_file"))
    board = record.leaderboard()
    exp_dir = find_experiment_dir(name, board, output_dir, storage, summary.get("storage_path"))
    curves = read_curves(exp_dir) if exp_dir is not None else {}
    max_epochs = space_obj.budget.max_epochs if record.legacy and space_obj is not None else record.max_epochs
    if record.legacy:
        from guitar_cls.report.legacy import infer_stop_reasons

        board = board.assign(stop_reason=infer_stop_reasons(board, curves, space_obj, max_epochs))
    params = searched_params(board, space_obj, record.param_keys())
    board = _annotate(board, curves, space_obj)
    return SweepData(
        name, sweep_dir, board, summary, params, max_epochs, curves, exp_dir, space_obj, tags, record.metric,
        record.mode, record.objectives, record.champion,
    )  # fmt: skip


def _load_space(asked: str | Path | None, recorded: str | None) -> SearchSpace | None:
    if asked is not None:
        return load_space(asked)  # asked for explicitly: a bad file is an error
    if recorded and Path(recorded).is_file():
        return load_space(recorded)
    log.warning("no search-space file (%s): distributions are inferred from the leaderboard", recorded)
    return None


def parent_run_tags(sweep_dir: Path, output_dir: Path) -> dict[str, str]:
    """Returns the tags of the sweep's MLflow parent run (``space_file``, ``metadata``...), or {} when unreadable."""
    id_file = sweep_dir / PARENT_RUN_FILE
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
    name: str,
    board: pd.DataFrame,
    output_dir: Path,
    storage: str | Path | None = None,
    recorded: str | None = None,
) -> str | Path | None:
    """Returns the Tune experiment folder ``<storage>/<name>`` (see ``load_sweep``; ``recorded``: the storage path
    summary.json keeps), a Path or a URI in object storage, or None when there is none."""
    roots: list[str | Path] = [] if storage is None else [storage]
    if recorded:
        roots.append(recorded)
    checkpoints = board["checkpoint_path"].dropna() if "checkpoint_path" in board else pd.Series(dtype=str)
    for c in checkpoints.head(1).astype(str):  # <storage>/train-*/checkpoint_*
        roots.append(c.rstrip("/").rsplit("/", 2)[0] if is_remote(c) else Path(c).parent.parent)
    if os.environ.get("GUITAR_CLS_STORAGE"):
        roots.append(os.environ["GUITAR_CLS_STORAGE"])
    roots.append(output_dir / "ray_results")
    for root in roots:
        if is_remote(root):
            if is_dir(join(root, name)):
                return join(root, name)
        elif (Path(root).expanduser() / name).is_dir():
            return (Path(root).expanduser() / name).resolve()
    log.warning("no Tune experiment folder for %s under %s: no learning curves", name, [str(r) for r in roots])
    return None


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value


def searched_params(board: pd.DataFrame, space: SearchSpace | None, keys: list[str]) -> list[str]:
    """Returns the searched params in the board: the space's params in order, else every param key (of ``keys``)
    that varies between trials."""
    if space is not None:
        return [k for k in space.params if k in board.columns]
    config_cols = [c for c in keys if c in board.columns and c not in CONSTANT_KEYS]
    return [c for c in config_cols if board[c].dropna().map(_hashable).astype(str).nunique() > 1]


def setting(row: pd.Series, key: str, space: SearchSpace | None, default: Any) -> Any:
    """Returns a trial's config value: its own column, else the space's ``fixed`` value, else ``default``."""
    value = row.get(key)
    if value is not None and not (isinstance(value, float) and math.isnan(value)):
        return value
    if space is not None and key in space.fixed:
        return space.fixed[key]
    return default


def defaults(space: SearchSpace | None) -> dict[str, Any]:
    """Returns the config every trial started from (the defaults with the space's shared settings) as a dict."""
    if space is None:
        return load_config(None).to_dict()
    return config_from_dict({}, space.shared_overrides()).to_dict()


def _annotate(board: pd.DataFrame, curves: dict[str, pd.DataFrame], space: SearchSpace | None) -> pd.DataFrame:
    """Returns ``board`` with ``family`` and ``epoch_s`` columns (see ``SweepData``)."""
    default_family = defaults(space)["model"]["name"]
    family, epoch_s = [], []
    for _, row in board.iterrows():
        family.append(str(setting(row, "model.name", space, default_family)))
        curve = curves.get(row["trial_id"])
        epoch_s.append(float(curve["epoch_s"].mean()) if curve is not None and "epoch_s" in curve else np.nan)
    return board.assign(family=family, epoch_s=epoch_s)


def distributions(sweep: SweepData) -> dict[str, BaseDistribution]:
    """Returns the Optuna distribution of each searched param: the space's (``Param.distribution``), else inferred
    from the board."""
    out: dict[str, BaseDistribution] = {}
    for key in sweep.params:
        if sweep.space is not None:
            out[key] = sweep.space.params[key].distribution()
            continue
        values = sweep.board[key].dropna().map(_hashable)
        numeric = pd.to_numeric(values, errors="coerce")
        if len(values) and numeric.notna().all() and not values.map(lambda v: isinstance(v, bool)).any():
            lo, hi = float(numeric.min()), float(numeric.max())
            out[key] = FloatDistribution(lo, hi if hi > lo else lo + 1.0)
        else:
            out[key] = CategoricalDistribution(sorted({str(v) for v in values}))
    return out


def distribution_value(dist: BaseDistribution, value: Any) -> Any:
    """Returns a trial's ``value`` in ``dist``'s external form (a list as its JSON choice), or None when
    absent/outside."""
    value = _hashable(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if choice == value and isinstance(choice, bool) == isinstance(value, bool):
                return choice
            if str(choice) == str(value):  # "True" vs True in a record without a space file
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


def _local_checkpoint(sweep: SweepData, location: str, trial_id: str) -> Path | None:
    """Returns the best checkpoint file in a trial's checkpoint folder: a local path, or a copy fetched from object
    storage into the sweep folder's ``checkpoints/<trial_id>/`` (None when it cannot be fetched)."""
    if not is_remote(location):
        return Path(location) / BEST
    try:
        return fetch(join(location, BEST), sweep.sweep_dir / CHECKPOINTS_DIR / trial_id / BEST)
    except OSError as e:
        log.warning("cannot fetch the best checkpoint of trial %s from %s: %s", trial_id, location, e)
        return None


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
        checkpoint = _local_checkpoint(sweep, str(best["checkpoint_path"]), str(best["trial_id"]))
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
    splits = sweep.sweep_dir / SPLITS_FILE
    return Path(checkpoint), metadata, root, splits if splits.is_file() else None


def champion_evaluation(
    sweep: SweepData, out_dir: Path, metadata: str | Path | None = None, audio_root: str | Path | None = None
) -> dict[str, Any]:
    """Returns the metrics of ``guitar_cls.evaluate.evaluate`` on the best checkpoint's test split, written to
    ``out_dir`` (metrics.json, confusion_matrix.png, errors.csv, breakdown.csv...), with the model and metadata
    paths in metrics.json shown relative to the project root (``display_path``)."""
    checkpoint, meta, root, splits = champion_inputs(sweep, metadata, audio_root)
    model: Any = checkpoint
    shown = display_path(checkpoint)
    members = [Path(c) for c in sweep.summary.get("checkpoints") or []]  # a refit of several seeds: their mean
    if len(members) > 1 and all(c.is_file() for c in members):
        from guitar_cls.predict import Classifier, EnsembleClassifier

        model = EnsembleClassifier([Classifier.load(c) for c in members], [1.0] * len(members), "mean")
        shown = f"mean of {len(members)}: " + ", ".join(display_path(c) for c in members)
    log.info("evaluating the champion %s on the test split of %s", shown, meta)
    metrics = evaluate(model, meta, root, out_dir, split="test", splits_csv=splits)
    metrics = {**metrics, "model": shown, "metadata": display_path(meta)}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float))
    return metrics
