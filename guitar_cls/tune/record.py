"""The sweep folder contract: what a sweep leaves in ``<output_dir>/sweeps/<name>/`` and how it is read back.

One module owns every file name and key of a sweep's record, so that the sweep (the writer), the report and the
champion registration (readers) cannot drift apart:

- ``trials.json`` (``TRIALS_FILE``): the record itself: the space's ``metric`` and ``mode`` (the primary objective),
  its ``objectives`` (``[{metric, mode}, ...]``, the primary first) and ``champion`` policy (``{kind, value}``),
  ``max_epochs`` and one entry per trial with its typed params (lists stay lists), best and last value of the metric,
  each objective's value (``values``: the primary's best, ``latency_ms``, others' last report), epochs run, CPU
  latency, checkpoint folder (a path, or a URI when Ray's results are in object storage: ``fetch_checkpoint`` gives a
  local copy under ``checkpoints/``), the Ray node of each worker rank (``worker_nodes``) and ``stop_reason``
  (``STOP_REASONS``), decided by what stopped it: ASHA (the scheduler writes ``asha_stops.jsonl`` when it stops a
  trial), the training loop's early stopping (its last report carries ``EARLY_STOP_KEY``), the time budget, an
  error, or nothing (``completed``);
- ``leaderboard.csv``: the same trials as a table for people and MLflow, best first (written, never read back; sweeps
  from before ``trials.json`` left only this file, read by ``read_legacy_board``);
- ``summary.json``, ``splits.csv`` (``SPLITS_FILE``), ``sweep.json`` (``SWEEP_START``: data fingerprint and splits
  settings of the first run), ``mlflow_parent_run_id`` (``PARENT_RUN_FILE``).

No Ray import: the report reads records on machines without a cluster.

Over 500 lines because it owns every file of the sweep folder (names, typed trials, stop reasons, objectives,
champion policy, leaderboard and Pareto front, the old format's reader): one place, so writer and readers agree.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from guitar_cls import storage
from guitar_cls.train.checkpoint import BEST, SPLITS_FILE
from guitar_cls.train.loop import EARLY_STOP_KEY, METRIC, best_key
from guitar_cls.train.resources import WORKER_NODES, node_list

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.json"
LEADERBOARD_CSV = "leaderboard.csv"
SUMMARY_FILE = "summary.json"
SWEEP_START = "sweep.json"  # what the first run used (data fingerprint, splits settings); --resume checks it
PARENT_RUN_FILE = "mlflow_parent_run_id"  # the sweep's MLflow parent run, continued by --resume
ASHA_STOPS = "asha_stops.jsonl"  # one {"trial_id", "epoch"} line per trial the ASHA scheduler stopped
RECORD_FILES = (PARENT_RUN_FILE, SWEEP_START, TRIALS_FILE, LEADERBOARD_CSV, SUMMARY_FILE)  # any shows the name is used

# Why a trial ended: ran its max_epochs; stopped by ASHA at a rung; stopped itself (early-stopping patience); cut by
# the sweep's time budget (or never started); failed; ended early with no recorded cause (a sweep resumed after its
# scheduler's decisions were lost).
STOP_REASONS = ("completed", "asha", "early_stop", "budget", "error", "stopped")
STOPPED_EARLY = ("asha", "early_stop", "budget", "stopped")
LATENCY = "latency_ms"  # the per-trial CPU latency (single thread), a metric every trial reports
BEST_POLICY = {"kind": "best", "value": None}


def last_key(metric: str) -> str:
    """Returns the leaderboard column of a trial's last reported value."""
    return "last/" + metric


@dataclass
class TrialRecord:
    """One trial of a sweep as the record keeps it."""

    trial_id: str
    status: str  # TERMINATED | ERROR | CUT (stopped before its end by the time budget) | NOT_STARTED
    stop_reason: str | None  # one of STOP_REASONS; None only in legacy records until the report infers it
    epochs: int
    best: float | None  # best value of the sweep's metric over its epochs
    last: float | None
    latency_ms: float | None
    checkpoint_path: str | None  # the trial's last checkpoint folder (holds BEST)
    params: dict[str, Any] = field(default_factory=dict)  # the trial config, dotted keys, typed values
    values: dict[str, float | None] = field(default_factory=dict)  # objective metric -> value (see objective_value)
    worker_nodes: list[str] = field(default_factory=list)  # Ray node id of each Train worker rank (last report)

    @property
    def checkpoint(self) -> Path | None:
        """Returns the trial's best checkpoint file in local storage, or None when it reported none (a checkpoint in
        object storage: ``fetch_checkpoint``)."""
        return Path(self.checkpoint_path) / BEST if self.checkpoint_path else None


CHECKPOINTS_DIR = "checkpoints"  # in the sweep folder: best checkpoints fetched from object storage, per trial id


def fetch_checkpoint(trial: TrialRecord, sweep_dir: str | Path) -> Path | None:
    """Returns the trial's best checkpoint as a local file: ``trial.checkpoint`` for local storage, else a copy of
    the one in object storage (``s3://...``) under ``<sweep_dir>/checkpoints/<trial_id>/`` (fetched once); None when
    the trial reported no checkpoint."""
    if not trial.checkpoint_path or not storage.is_remote(trial.checkpoint_path):
        return trial.checkpoint
    remote = storage.join(trial.checkpoint_path, BEST)
    return storage.fetch(remote, Path(sweep_dir) / CHECKPOINTS_DIR / trial.trial_id / BEST)


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def objective_value(trial: TrialRecord, metric: str, primary: str) -> float | None:
    """Returns ``trial``'s value of the objective ``metric``: what the record keeps in ``values``, else (hand-built
    and older records) the best value for the primary metric and the latency for ``latency_ms``."""
    if metric in trial.values:
        return _number(trial.values[metric])
    if metric == primary:
        return trial.best
    return trial.latency_ms if metric == LATENCY else None


def objective_column(metric: str, primary: str) -> str:
    """Returns the leaderboard column holding an objective: ``best/<metric>`` for the primary one (the best epoch's
    value, that of the checkpoint), ``latency_ms``, else ``last/<metric>`` (the last report, what Optuna was told)."""
    if metric == primary:
        return best_key(metric)
    return LATENCY if metric == LATENCY else last_key(metric)


def trial_from_result(
    result: Any,
    *,
    metric: str,
    max_epochs: int,
    asha_stops: Mapping[str, int] | None = None,
    objectives: Sequence[Mapping[str, str]] | None = None,
) -> TrialRecord:
    """Returns the record of one Tune result (``.metrics``, ``.config``, ``.error``), its stop reason decided by what
    stopped it: ``asha_stops`` (trial id -> epoch, from the scheduler), the loop's ``EARLY_STOP_KEY``, an error, the
    time budget (a trial Tune stopped before its last report said done). ``objectives`` (``[{metric, mode}]``, the
    primary first; default: ``metric`` alone) fill ``values``."""
    from guitar_cls.tune.space import trial_overrides

    m = result.metrics or {}
    trial_id = str(m.get("trial_id") or _trial_id_from_path(getattr(result, "path", None)))
    epochs = epochs_run(m)
    if result.error:
        status, reason = "ERROR", "error"
    elif not m:
        status, reason = "NOT_STARTED", "budget"
    else:
        status = "TERMINATED" if m.get("done") else "CUT"
        if m.get(EARLY_STOP_KEY):  # the loop stopped itself before ASHA saw that epoch's result
            reason = "early_stop"
        elif asha_stops and trial_id in asha_stops:
            reason = "asha"
        elif epochs >= max_epochs:
            reason = "completed"
        else:
            reason = "budget" if status == "CUT" else "stopped"
    record = TrialRecord(
        trial_id=trial_id,
        status=status,
        stop_reason=reason,
        epochs=epochs,
        best=_number(m.get(best_key(metric))),
        last=_number(m.get(metric)),
        latency_ms=_number(m.get(LATENCY)),
        checkpoint_path=m.get("checkpoint_path") or None,
        params=dict(trial_overrides(result.config or {})),
        worker_nodes=node_list(m.get(WORKER_NODES)),
    )
    for o in objectives or [{"metric": metric}]:
        key = o["metric"]
        record.values[key] = record.best if key == metric else _number(m.get(key))
    return record


def epochs_run(metrics: Mapping[str, Any]) -> int:
    """Returns how many epochs a trial's last result says it ran: its ``epoch`` + 1 when reported, else Tune's
    ``training_iteration``. They differ for a trial Tune ran again after a failure (a lost node): the new run counts
    iterations from 1 while Train resumed its epochs from the last checkpoint."""
    if metrics.get("epoch") is not None:
        return int(metrics["epoch"]) + 1
    return int(metrics.get("training_iteration", 0) or 0)


def _trial_id_from_path(path: str | None) -> str:
    """Returns the trial id in a Tune trial folder name (``trial_driver_<id>_<n>_<params>...``), or ""."""
    found = re.search(r"_([0-9a-f]{8})_\d+(?:_|$)", Path(path).name) if path else None
    return found.group(1) if found else ""


def read_asha_stops(sweep_dir: Path) -> dict[str, int]:
    """Returns trial id -> epoch for every trial the ASHA scheduler stopped (``ASHA_STOPS``; {} when none)."""
    path = Path(sweep_dir) / ASHA_STOPS
    stops: dict[str, int] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                stops[str(entry["trial_id"])] = int(entry["epoch"])
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a killed driver
    return stops


def append_asha_stop(sweep_dir: Path, trial_id: str, epoch: int) -> None:
    """Appends one ASHA decision to ``ASHA_STOPS`` (flushed at once: a killed driver keeps what it decided)."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(sweep_dir) / ASHA_STOPS, "a") as f:
        f.write(json.dumps({"trial_id": trial_id, "epoch": int(epoch)}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def leaderboard(
    trials: Iterable[TrialRecord],
    metric: str = METRIC,
    mode: str = "max",
    objectives: Sequence[Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Returns one row per trial, best first by ``metric`` in ``mode`` (trials without a score last).

    Columns: ``trial_id``, ``status``, ``stop_reason``, ``best/<metric>``, ``last/<metric>``, ``epochs``,
    ``latency_ms``, ``checkpoint_path``, ``last/<m>`` of each other objective ``m`` (``objective_column``), then the
    params (typed values; NaN where a trial did not use one).
    """
    best, last = best_key(metric), last_key(metric)
    extra = [o["metric"] for o in objectives or () if objective_column(o["metric"], metric) not in (best, LATENCY)]
    rows = []
    for t in trials:
        row = {
            "trial_id": t.trial_id,
            "status": t.status,
            "stop_reason": t.stop_reason,
            best: np.nan if t.best is None else t.best,
            last: np.nan if t.last is None else t.last,
            "epochs": t.epochs,
            "latency_ms": np.nan if t.latency_ms is None else t.latency_ms,
            "checkpoint_path": t.checkpoint_path,
        }
        for m in extra:
            value = objective_value(t, m, metric)
            row[last_key(m)] = np.nan if value is None else value
        row.update({k: v for k, v in t.params.items() if k not in row})
        rows.append(row)
    columns = ["trial_id", "status", "stop_reason", best, last, "epochs", "latency_ms", "checkpoint_path"]
    columns += [last_key(m) for m in extra]
    board = pd.DataFrame(rows, columns=None if rows else columns)
    if board.empty:
        return board
    board = board.astype({"trial_id": str})
    board = board.sort_values(best, ascending=mode == "min", kind="stable", na_position="last")
    return board.reset_index(drop=True)


def pareto_front(
    board: pd.DataFrame,
    metric: str = METRIC,
    mode: str = "max",
    objectives: Sequence[Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Returns the trials of ``board`` that no other trial dominates (at least as good on every objective, better on
    one), fastest first when latency is an objective, else best first on the first objective.

    ``objectives`` (``[{metric, mode}]``, the primary first; columns by ``objective_column``) default to ``metric``
    in ``mode`` and latency (lower), the accuracy/latency view of a single-objective sweep. Failed trials (``ERROR``:
    no model to deploy) and trials missing a value of any objective are left out.
    """
    objectives = list(objectives or [{"metric": metric, "mode": mode}, {"metric": LATENCY, "mode": "min"}])
    primary = objectives[0]["metric"]
    columns = [objective_column(o["metric"], primary) for o in objectives]
    ok = board.dropna(subset=columns)
    if "status" in ok:
        ok = ok[ok["status"] != "ERROR"]
    signs = np.array([1.0 if o["mode"] == "max" else -1.0 for o in objectives])
    scores = ok[columns].to_numpy(float).reshape(len(ok), len(columns)) * signs  # (N, K), higher is better on each
    keep = [
        i for i in range(len(ok)) if not ((scores >= scores[i]).all(axis=1) & (scores > scores[i]).any(axis=1)).any()
    ]
    front = ok.iloc[keep]
    if LATENCY in columns:
        return front.sort_values(LATENCY, kind="stable")
    return front.sort_values(columns[0], ascending=objectives[0]["mode"] == "min", kind="stable")


def select_champion(
    trials: Iterable[TrialRecord], metric: str, mode: str, policy: Mapping[str, Any] | None = None
) -> tuple[TrialRecord | None, str]:
    """Returns the trial the champion policy picks among those with a score and a checkpoint (no error), and why.

    ``policy`` (``{kind, value}``, default ``best``): ``best`` on ``metric``; ``fastest_within``: the lowest latency
    among trials whose best score is within ``value`` of the top one (ties: the better score); ``max_latency_ms``: the
    best score among trials at most ``value`` ms (ties: the faster). A latency policy that no trial meets falls back
    to the fastest trial (none with a latency: the best), and says so.
    """
    kind, value = (policy or BEST_POLICY)["kind"], (policy or BEST_POLICY).get("value")
    ranked = [t for t in trials if t.status != "ERROR" and t.best is not None and t.checkpoint_path]
    if not ranked:
        return None, "no trial reported a score and a checkpoint"
    sign = 1.0 if mode == "max" else -1.0  # sign * score: higher is better
    best = max(ranked, key=lambda t: sign * t.best)
    timed = [t for t in ranked if t.latency_ms is not None]
    if kind == "best":
        return best, f"best {metric}"
    if kind == "fastest_within":
        near = [t for t in timed if sign * (best.best - t.best) <= value + 1e-12]
        if not near:
            return best, f"best {metric} (no trial within {value:g} of it has a latency)"
        pick = min(near, key=lambda t: (t.latency_ms, -sign * t.best))
        return pick, f"fastest trial within {value:g} of the best {metric} ({best.best:.4f}, trial {best.trial_id})"
    if kind == "max_latency_ms":
        under = [t for t in timed if t.latency_ms <= value]
        if under:
            pick = max(under, key=lambda t: (sign * t.best, -t.latency_ms))
            return pick, f"best {metric} at most {value:g} ms"
        if not timed:
            return best, f"best {metric} (no trial has a latency to hold to {value:g} ms)"
        pick = min(timed, key=lambda t: (t.latency_ms, -sign * t.best))
        return pick, f"no trial at most {value:g} ms: the fastest ({pick.latency_ms:.2f} ms)"
    raise ValueError(f"unsupported champion policy: {kind}")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def front_objectives(metric: str, mode: str, objectives: list[dict[str, str]]) -> list[dict[str, str]]:
    """Returns the objectives of a sweep's Pareto front: its own when it has several, else the metric and latency
    (the accuracy/latency view)."""
    if len(objectives) > 1:
        return list(objectives)
    return [{"metric": metric, "mode": mode}, {"metric": LATENCY, "mode": "min"}]


@dataclass
class SweepRecord:
    """A sweep's record: what ``trials.json`` and ``summary.json`` hold, read and written only here.

    ``legacy`` is True for a sweep written before ``trials.json`` (its trials have no ``stop_reason``).
    """

    name: str
    metric: str
    mode: str
    max_epochs: int
    trials: list[TrialRecord]
    summary: dict[str, Any] = field(default_factory=dict)
    legacy: bool = False
    objectives: list[dict[str, str]] = field(default_factory=list)  # [{metric, mode}], the primary first
    champion: dict[str, Any] = field(default_factory=lambda: dict(BEST_POLICY))  # {kind, value}

    def __post_init__(self) -> None:
        if not self.objectives:
            self.objectives = [{"metric": self.metric, "mode": self.mode}]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def front_objectives(self) -> list[dict[str, str]]:
        """Returns the objectives of the Pareto front (see ``front_objectives``)."""
        return front_objectives(self.metric, self.mode, self.objectives)

    def pareto_front(self) -> pd.DataFrame:
        """Returns the leaderboard rows on the Pareto front of ``front_objectives`` (see ``pareto_front``)."""
        return pareto_front(self.leaderboard(), self.metric, self.mode, self.front_objectives())

    @property
    def best_key(self) -> str:
        return best_key(self.metric)

    @property
    def last_key(self) -> str:
        return last_key(self.metric)

    @property
    def test_metric(self) -> str:
        """Returns the test-split metric that matches the sweep's validation metric (``val/macro_f1`` ->
        ``macro_f1``): the one the champion is chosen by."""
        return self.metric.split("/", 1)[1] if self.metric.startswith("val/") else self.metric

    def leaderboard(self) -> pd.DataFrame:
        """Returns the trials as a table, best first by the sweep's metric and mode (see ``leaderboard``)."""
        return leaderboard(self.trials, self.metric, self.mode, self.objectives)

    def best_trial(self) -> TrialRecord | None:
        """Returns the best trial that reported a score and a checkpoint (no error), or None."""
        return select_champion(self.trials, self.metric, self.mode)[0]

    def champion_trial(self) -> tuple[TrialRecord | None, str]:
        """Returns the trial the record's champion policy picks and why (see ``select_champion``)."""
        return select_champion(self.trials, self.metric, self.mode, self.champion)

    def param_keys(self) -> list[str]:
        """Returns every param key any trial carries, in first-seen order."""
        keys: dict[str, None] = {}
        for t in self.trials:
            keys.update(dict.fromkeys(t.params))
        return list(keys)

    def write(self, sweep_dir: str | Path) -> None:
        """Writes ``trials.json``, ``leaderboard.csv`` and ``summary.json`` (each through a temporary file)."""
        sweep_dir = Path(sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        record = {
            "name": self.name,
            "metric": self.metric,
            "mode": self.mode,
            "objectives": self.objectives,
            "champion": self.champion,
            "max_epochs": self.max_epochs,
            "trials": [asdict(t) for t in self.trials],
        }
        _write_text(sweep_dir / TRIALS_FILE, json.dumps(record, indent=2, default=_json_default))
        board = self.leaderboard()
        for c in board.columns:  # the people's table: lists printed as JSON (never read back)
            if board[c].map(lambda v: isinstance(v, (list, dict))).any():
                board[c] = board[c].map(lambda v: json.dumps(v) if isinstance(v, (list, dict)) else v)
        tmp = sweep_dir / f".{LEADERBOARD_CSV}.tmp-{os.getpid()}"
        board.to_csv(tmp, index=False)
        os.replace(tmp, sweep_dir / LEADERBOARD_CSV)
        if self.summary:
            _write_text(sweep_dir / SUMMARY_FILE, json.dumps(self.summary, indent=2, default=_json_default))

    @classmethod
    def read(cls, sweep_dir: str | Path) -> SweepRecord:
        """Returns the record in ``sweep_dir`` (a legacy ``leaderboard.csv`` alone is read too, see ``legacy``).

        Raises:
            FileNotFoundError: neither ``trials.json`` nor ``leaderboard.csv`` is there.
        """
        sweep_dir = Path(sweep_dir)
        summary_path = sweep_dir / SUMMARY_FILE
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        path = sweep_dir / TRIALS_FILE
        if path.is_file():
            data = json.loads(path.read_text())
            trials = [TrialRecord(**t) for t in data["trials"]]
            return cls(
                data["name"], data["metric"], data["mode"], int(data["max_epochs"]), trials, summary,
                objectives=list(data.get("objectives") or []), champion=dict(data.get("champion") or BEST_POLICY),
            )  # fmt: skip
        if (sweep_dir / LEADERBOARD_CSV).is_file():
            trials = read_legacy_board(sweep_dir / LEADERBOARD_CSV)
            epochs = [int(t.params.get("training.epochs", t.epochs)) for t in trials] or [0]
            return cls(sweep_dir.name, METRIC, "max", max(epochs), trials, summary, legacy=True)
        raise FileNotFoundError(f"{path} not found")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


LEGACY_COLUMNS = ("trial_id", "status", best_key(METRIC), last_key(METRIC), "epochs", "latency_ms", "checkpoint_path")


def read_legacy_board(path: Path) -> list[TrialRecord]:
    """Returns the trials of a ``leaderboard.csv`` written before ``trials.json`` (balanced accuracy, JSON-encoded
    list params, no stop reason: ``stop_reason`` is None).

    Raises:
        ValueError: a required column is missing.
    """
    from guitar_cls.tune.space import decode_choice

    board = pd.read_csv(path, dtype={"trial_id": str})  # ids like "00123456" stay strings
    missing = [c for c in ("trial_id", "status", best_key(METRIC), "epochs", "latency_ms") if c not in board.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    params = [c for c in board.columns if c not in LEGACY_COLUMNS]
    trials = []
    for _, row in board.iterrows():
        values = {}
        for k in params:
            v = row[k]
            if isinstance(v, float) and math.isnan(v):
                continue
            values[k] = decode_choice(v.item() if isinstance(v, np.generic) else v)
        ckpt = row.get("checkpoint_path")
        trials.append(
            TrialRecord(
                trial_id=str(row["trial_id"]),
                status=str(row["status"]),
                stop_reason=None,
                epochs=int(row["epochs"]) if pd.notna(row["epochs"]) else 0,
                best=_number(row[best_key(METRIC)]),
                last=_number(row.get(last_key(METRIC))),
                latency_ms=_number(row["latency_ms"]),
                checkpoint_path=str(ckpt) if isinstance(ckpt, str) and ckpt else None,
                params=values,
            )
        )
    return trials


__all__ = [
    "ASHA_STOPS",
    "BEST",
    "BEST_POLICY",
    "CHECKPOINTS_DIR",
    "LATENCY",
    "LEADERBOARD_CSV",
    "PARENT_RUN_FILE",
    "RECORD_FILES",
    "SPLITS_FILE",
    "STOPPED_EARLY",
    "STOP_REASONS",
    "SUMMARY_FILE",
    "SWEEP_START",
    "TRIALS_FILE",
    "WORKER_NODES",
    "SweepRecord",
    "TrialRecord",
    "append_asha_stop",
    "best_key",
    "epochs_run",
    "fetch_checkpoint",
    "last_key",
    "leaderboard",
    "objective_column",
    "objective_value",
    "pareto_front",
    "read_asha_stops",
    "read_legacy_board",
    "select_champion",
    "trial_from_result",
]


def read_curves(experiment_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Returns trial id -> its per-epoch results (one row per ``training_iteration``, the last report wins), read
    from the Tune experiment folder: a local path or a URI in object storage (``s3://bucket/prefix/<sweep>``).

    ``training_iteration`` is set to ``epochs_run`` of each row (``epoch`` + 1 where reported): a trial that Tune ran
    again after a failure counts iterations from 1 anew while its epochs go on from the checkpoint it resumed.
    Unreadable lines (a trial killed mid-write) are skipped.
    """
    curves: dict[str, pd.DataFrame] = {}
    for path in storage.child_files(experiment_dir, "result.json"):
        rows = []
        for line in storage.read_text(path).splitlines():
            if not line.strip():
                continue
            try:
                rows.append({k: v for k, v in json.loads(line).items() if not isinstance(v, (dict, list))})
            except json.JSONDecodeError:
                log.warning("%s: skipping an unreadable line", path)
        rows = [
            {**r, "training_iteration": epochs_run(r)} for r in rows if "trial_id" in r and "training_iteration" in r
        ]
        if not rows:
            continue
        df = pd.DataFrame(rows).drop_duplicates("training_iteration", keep="last").sort_values("training_iteration")
        curves[str(rows[-1]["trial_id"])] = df.reset_index(drop=True)
    return curves
