"""A sweep's trials as an Optuna study in an RDB store, for ``optuna-dashboard sqlite:///outputs/optuna.db``.

The study is written from the sweep record (``record.SweepRecord``: typed params, best score, stop reason), the
space's distributions (``Param.distribution``) and Tune's per-epoch results; Ray's OptunaSearch keeps its own study
in memory only. One study per sweep name, written anew after every run of the sweep (``--resume`` included), so it
always mirrors the whole record:

- params: the searched params a trial used, in their distribution's form (a list choice as its JSON text);
- value: the trial's best value of the space's metric (the score the sweep ranks by); direction from the mode. A
  multi-objective sweep (``record.objectives``) makes a multi-objective study: one direction and one value per
  objective (``record.objective_value``: the primary's best, the latency, others' last report), so the dashboard
  draws the Pareto front;
- intermediate values: the metric at every epoch (step = Tune's ``training_iteration``; single objective only,
  Optuna keeps none for multi-objective trials);
- state: ``COMPLETE`` for a trial that ran out its epochs or stopped itself (early stopping), ``PRUNED`` for one
  stopped from outside (ASHA, the time budget, an unrecorded cause), ``FAIL`` for an error; trials that never
  started are left out;
- user attrs: ``mlflow_run_id`` (the trial's nested run), ``tune_trial_id``, ``stop_reason``, ``epochs``,
  ``latency_ms``; study user attrs from the caller (sweep, MLflow parent run...).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from guitar_cls.storage import is_dir
from guitar_cls.tune.record import SweepRecord, TrialRecord, objective_value, read_curves
from guitar_cls.tune.space import SearchSpace

log = logging.getLogger(__name__)

OPTUNA_DB = "optuna.db"  # in the output folder, beside mlflow.db

STATES = {
    "completed": TrialState.COMPLETE,
    "early_stop": TrialState.COMPLETE,
    "asha": TrialState.PRUNED,
    "budget": TrialState.PRUNED,
    "stopped": TrialState.PRUNED,
    "error": TrialState.FAIL,
}


def optuna_storage(output_dir: str | Path) -> str:
    """Returns the absolute sqlite URL of the output folder's Optuna store (``OPTUNA_DB``)."""
    return "sqlite:///" + str(Path(output_dir).resolve() / OPTUNA_DB)


def param_value(dist: BaseDistribution, value: Any) -> Any:
    """Returns a recorded param value in ``dist``'s external form (lists and mappings as the JSON text the space's
    choices use), or None when it is not a value of ``dist``."""
    if isinstance(dist, CategoricalDistribution):
        encoded = json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple, dict)) else value
        for choice in dist.choices:
            if choice == encoded and isinstance(choice, bool) == isinstance(encoded, bool):
                return choice
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    value = int(value) if isinstance(dist, IntDistribution) else float(value)
    return value if dist._contains(dist.to_internal_repr(value)) else None


def trial_state(trial: TrialRecord, values: list[float | None] | None = None) -> TrialState | None:
    """Returns the Optuna state of a recorded trial, or None for one that never started (or has no stop reason).

    ``values``: the trial's objective values (default: its best score alone); a missing one fails a finished trial.
    """
    if trial.status == "NOT_STARTED":
        return None
    state = STATES.get(trial.stop_reason or "")
    if state is TrialState.COMPLETE and any(v is None for v in (values if values is not None else [trial.best])):
        return TrialState.FAIL  # ran, but never reported an objective
    return state


def frozen_trial(
    trial: TrialRecord,
    distributions: Mapping[str, BaseDistribution],
    *,
    curve: Mapping[int, float] | None = None,
    run_id: str | None = None,
    objectives: list[str] | None = None,
) -> FrozenTrial | None:
    """Returns the Optuna trial of a recorded one (see the module docstring), or None when it never started.

    ``objectives``: the metrics of a multi-objective study, the primary first (values by ``objective_value``).
    """
    values = [objective_value(trial, m, objectives[0]) for m in objectives] if objectives else None
    state = trial_state(trial, values)
    if state is None:
        return None
    params, dists = {}, {}
    for key, dist in distributions.items():
        if key not in trial.params:
            continue  # a conditional param this trial did not use
        value = param_value(dist, trial.params[key])
        if value is None:
            log.warning("trial %s: %s=%r is outside the space's %s; left out", trial.trial_id, key, trial.params[key],
                        dist)  # fmt: skip
            continue
        params[key], dists[key] = value, dist
    attrs = {
        "mlflow_run_id": run_id,
        "tune_trial_id": trial.trial_id,
        "stop_reason": trial.stop_reason,
        "epochs": trial.epochs,
        "latency_ms": trial.latency_ms,
    }
    intermediate = {int(k): float(v) for k, v in (curve or {}).items() if v is not None and math.isfinite(v)}
    complete = state is TrialState.COMPLETE
    return optuna.trial.create_trial(
        state=state,
        value=trial.best if complete and values is None else None,
        values=values if complete and values is not None else None,
        params=params,
        distributions=dists,
        user_attrs=attrs,
        intermediate_values=intermediate,
    )


def write_study(
    record: SweepRecord,
    storage: str,
    distributions: Mapping[str, BaseDistribution],
    *,
    curves: Mapping[str, Mapping[int, float]] | None = None,
    run_ids: Mapping[str, str] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> optuna.Study:
    """Returns the study named after the sweep in ``storage``, replaced by one holding the record's trials.

    Args:
        distributions: param key -> the space's distribution (``Param.distribution``).
        curves: Tune trial id -> epoch -> the metric's value (``metric_curves``).
        run_ids: Tune trial id -> its MLflow run id.
        attrs: study user attrs (JSON values).
    """
    curves, run_ids = curves or {}, run_ids or {}
    try:
        optuna.delete_study(study_name=record.name, storage=storage)
    except KeyError:
        pass  # a sweep's first export
    goals = record.objectives if record.multi_objective else [{"metric": record.metric, "mode": record.mode}]
    metrics = [o["metric"] for o in goals]
    directions = ["maximize" if o["mode"] == "max" else "minimize" for o in goals]
    study = optuna.create_study(storage=storage, study_name=record.name, directions=directions)
    with warnings.catch_warnings():  # experimental since Optuna 3.2; the dashboard labels its axes with it
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(metrics)
    extra = {"objectives": record.objectives} if record.multi_objective else {}
    for key, value in {"metric": record.metric, "max_epochs": record.max_epochs, **extra, **(attrs or {})}.items():
        study.set_user_attr(key, value)
    objectives = metrics if record.multi_objective else None
    trials = [
        frozen_trial(
            t,
            distributions,
            curve=None if objectives else curves.get(t.trial_id),
            run_id=run_ids.get(t.trial_id),
            objectives=objectives,
        )
        for t in record.trials
    ]
    study.add_trials([t for t in trials if t is not None])
    return study


def metric_curves(experiment_dir: str | Path, metric: str) -> dict[str, dict[int, float]]:
    """Returns Tune trial id -> ``training_iteration`` -> ``metric`` from the experiment's ``result.json`` files."""

    out = {}
    for trial_id, df in read_curves(experiment_dir).items():
        if metric in df:
            rows = df.dropna(subset=[metric])
            out[trial_id] = dict(zip(rows["training_iteration"].astype(int), rows[metric].astype(float)))
    return out


def export_sweep(
    sweep_dir: str | Path,
    storage: str,
    space: SearchSpace,
    *,
    experiment_dir: str | Path | None = None,
    run_ids: Mapping[str, str] | None = None,
    attrs: Mapping[str, Any] | None = None,
    tracked_curves: Mapping[str, Mapping[int, float]] | None = None,
) -> optuna.Study:
    """Returns the sweep in ``sweep_dir`` written as an Optuna study into ``storage`` (see ``write_study``), with
    intermediate values from the Tune experiment folder (a local folder or a URI in object storage) when it exists.

    ``tracked_curves`` (trial id -> ``epoch + 1`` -> metric, e.g. ``SweepTracker.metric_curves``) fills the epochs
    the experiment folder lacks: Tune restarts a trial interrupted mid-run on ``--resume``, and its ``result.json``
    then holds only the epochs after the checkpoint it resumed from. Tune's values win where both have an epoch.
    """
    record = SweepRecord.read(sweep_dir)
    curves: dict[str, dict[int, float]] = {}
    if experiment_dir is not None and is_dir(experiment_dir):
        curves = metric_curves(experiment_dir, record.metric)
    elif not tracked_curves:
        log.warning("no Tune experiment folder %s: the Optuna study has no intermediate values", experiment_dir)
    for trial_id, tracked in (tracked_curves or {}).items():
        curves[trial_id] = {**tracked, **curves.get(trial_id, {})}
    distributions = {key: p.distribution() for key, p in space.params.items()}
    return write_study(record, storage, distributions, curves=curves, run_ids=run_ids, attrs=attrs)
