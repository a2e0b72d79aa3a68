"""The sweep: featurize once, then Tune trials (each a Ray Train driver) searched by Optuna and pruned by ASHA;
MLflow logging from the driver; the best trial registered as the ``champion`` pyfunc model.

A sweep name is used once: a second run of the same name needs ``--resume`` (which continues the recorded sweep
and refuses data or splits that changed since it started, see ``sweep.json`` in the sweep folder) or a new
``--name``. Both checks come before any Ray or data work.

Everything the sweep leaves in its folder is written through ``tune.record`` (the sweep folder contract); the space's
``metric`` and ``mode`` (its primary objective) choose each trial's best checkpoint, the leaderboard order and ASHA's
pruning; all its ``objectives`` go to Optuna and the record; its ``champion`` policy picks the trial registered,
after a refit of its configuration for ``budget.refit_epochs`` when the space asks for one (``_refit``; with
``budget.refit_members`` > 1 several training seeds, the mean of their probabilities registered).

Over 500 lines because the driver's steps (start-up checks, Tune, the refit, testing and registration, the Optuna
export) share the ``_Setup`` and the tracker; each step is its own function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

from guitar_cls import storage
from guitar_cls.config import Config, config_from_dict, load_config
from guitar_cls.train.checkpoint import read_checkpoint
from guitar_cls.train.loop import best_key
from guitar_cls.train.resources import DRIVER_RESOURCES, ResourcePlan, plan_resources
from guitar_cls.train.run import PreparedData, absolute_paths, init_ray, prepare_data, run_trainer, test_metrics
from guitar_cls.tune.record import (
    LEADERBOARD_CSV,
    RECORD_FILES,
    SPLITS_FILE,
    SWEEP_START,
    SweepRecord,
    TrialRecord,
    fetch_checkpoint,
    leaderboard,
    pareto_front,
    read_asha_stops,
    trial_from_result,
)
from guitar_cls.tune.space import (
    SearchSpace,
    check_sweep_name,
    load_space,
    make_scheduler,
    make_searcher,
    trial_config,
    trial_overrides,
)

log = logging.getLogger(__name__)


class SweepInterrupted(RuntimeError):
    """The sweep stopped before its trials finished (e.g. Ctrl-C); ``--resume`` continues it."""


class SweepNameInUse(ValueError):
    """A sweep of this name exists and ``--resume`` was not given."""


class SweepDataChanged(ValueError):
    """``--resume`` of a sweep whose data or splits settings changed since it started."""


def _name_used_by(sweep_dir: Path, experiment_path: str) -> list[str]:
    """Returns what shows that a sweep of this name ran: its records in ``sweep_dir`` and its Tune experiment."""
    found = [str(sweep_dir / f) for f in RECORD_FILES if (sweep_dir / f).exists()]
    if storage.is_dir(experiment_path):
        found.append(experiment_path)
    return found


def _check_resume_data(base: Config, sweep_dir: Path, name: str) -> None:
    """Raises SweepDataChanged when the data (metadata fingerprint) or splits settings differ from the recorded
    first run's (``sweep.json``, else the MLflow parent run's ``data_hash`` tag)."""
    from guitar_cls.data.pipeline import metadata_fingerprint
    from guitar_cls.data.source import load_tables, resolve_tables
    from guitar_cls.tracking import DATA_TAG, recorded_parent_tag

    try:
        record = json.loads((sweep_dir / SWEEP_START).read_text())
    except (OSError, ValueError):
        record = {}
    recorded = record.get("data_fingerprint") or recorded_parent_tag(base, sweep_dir, DATA_TAG)
    if not recorded:
        log.warning("sweep %s recorded no data fingerprint: resuming without checking the data", name)
        return
    data = load_tables(resolve_tables(base.data))  # its problems are reported by prepare_data
    now = metadata_fingerprint(data.metadata)
    changed = []
    if now != recorded:
        changed.append(f"data fingerprint {recorded[:12]}... -> {now[:12]}...")
    splits = dataclasses.asdict(base.splits)
    if "splits" in record and record["splits"] != splits:
        changed.append(f"splits settings {record['splits']} -> {splits}")
    if changed:
        raise SweepDataChanged(
            f"--resume: sweep {name!r} started on other data ({'; '.join(changed)}): its trials are not comparable "
            f"with new ones; start another sweep with --name NEW_NAME"
        )


@contextlib.contextmanager
def _sigint_watch() -> Iterator[Callable[[], bool]]:
    """Yields a function telling whether Tune's Ctrl-C handler fired during the block.

    ``Tuner.fit`` installs its own SIGINT handler, which on the first Ctrl-C asks the run to stop, saves the
    experiment and puts back the handler it found; so finding our sentinel installed again afterwards means the
    sweep was interrupted (trial states alone do not say: Tune marks the stopped trials TERMINATED).
    """

    def sentinel(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    watch = threading.current_thread() is threading.main_thread() and not int(
        os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0")
    )
    previous = signal.getsignal(signal.SIGINT) if watch else None
    if watch:
        signal.signal(signal.SIGINT, sentinel)
    fired = {"value": False}
    try:
        yield lambda: fired["value"]
    finally:
        if watch:
            fired["value"] = signal.getsignal(signal.SIGINT) is sentinel
            signal.signal(signal.SIGINT, previous)


class StorageReportCallback(TuneReportCallback):
    """``TuneReportCallback`` whose ``checkpoint_path`` is a location of its own: Ray reports a checkpoint's path
    inside its filesystem (``bucket/prefix/train-.../checkpoint_...`` for ``s3://bucket/prefix``); this puts the
    storage URI's scheme back, so the sweep record can find the checkpoint again (a local path stays as it is)."""

    def __init__(self, storage_path: str) -> None:
        super().__init__()
        self.storage_path = storage_path

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if checkpoint is not None:
            located = storage.uri(checkpoint.path, self.storage_path)
            metrics = [{**metrics[0], CHECKPOINT_PATH_KEY: located}, *metrics[1:]]
        super().after_report(run_context, metrics, None)  # the checkpoint is in storage already: only its location


def trial_driver(params: dict[str, Any], ctx: dict[str, Any]) -> None:
    """One Tune trial: builds the trial's config, measures its CPU latency, runs a TorchTrainer to completion."""
    from guitar_cls.inference import config_latency_ms
    from guitar_cls.train.ray_train import make_trainer

    cfg = trial_config(ctx["base"], ctx["space"], params)
    trial_id = tune.get_context().get_trial_id()
    latency = config_latency_ms(cfg)
    loop_config = {
        "cfg": cfg.to_dict(),
        "cache_path": ctx["cache_path"],
        "rows": ctx["rows"],
        "report_extra": {"latency_ms": latency},
        "metric": ctx["space"].metric,
        "mode": ctx["space"].mode,
        **ctx.get("loop_extra", {}),
    }
    trainer = make_trainer(
        cfg,
        loop_config,
        name=f"train-{trial_id}",
        storage_path=ctx["storage_path"],
        cpus_per_worker=ctx["cpus_per_worker"],
        threads_per_worker=ctx["threads_per_worker"],
        callbacks=[StorageReportCallback(ctx["storage_path"])],
    )
    trainer.fit()


SHORT_KEYS = {"learning_rate": "lr", "weight_decay": "wd", "label_smoothing": "ls", "batch_size": "bs"}


def trial_run_name(space: SearchSpace, base_family: str, trial_id: str, trial_params: Mapping[str, Any]) -> str:
    """Returns a trial's MLflow run name: model family, the searched params it used (last key part, a few shortened)
    and the Tune trial id, e.g. ``resnet lr=0.0021 dropout=0.24 a1b2c_00001``."""
    values = dict(trial_overrides(trial_params))
    parts = [str(values.get("model.name") or space.fixed.get("model.name") or base_family)]
    for key in space.params:
        if key == "model.name" or key not in values:
            continue
        value = values[key]
        if isinstance(value, float):
            text = f"{value:.2g}"
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = str(value)
        short = key.rsplit(".", 1)[-1]
        parts.append(f"{SHORT_KEYS.get(short, short)}={text}")
    return " ".join([*parts, trial_id])[:250]  # MLflow's run name limit


def pyfunc_test_score(model_uri: str, data: PreparedData, metric: str = "balanced_accuracy") -> float:
    """Returns ``metric`` (a key of ``classification_metrics``) of an MLflow pyfunc model on the test split, fed raw
    WAV paths."""
    import mlflow

    from guitar_cls.data.schema import LABEL_TO_INDEX
    from guitar_cls.predict import PROB_COLUMNS
    from guitar_cls.train.metrics import classification_metrics

    rows = data.rows("test")
    meta = data.metadata.loc[rows]
    frame = pd.DataFrame(
        {
            "path": [str(data.audio_root / p) for p in meta["source_audio"]],
            "onset_sec": meta["onset_sec"].to_numpy(float),
            "offset_sec": meta["offset_sec"].to_numpy(float),
        }
    )
    # The served model reads files only under the folder its operator allows: here the one holding these files.
    folders = [os.path.dirname(os.path.realpath(f)) for f in frame["path"]]
    config = {"audio_root": os.path.commonpath(folders) if folders else str(data.audio_root)}
    pred = mlflow.pyfunc.load_model(model_uri, model_config=config).predict(frame)
    y_true = meta["label_category"].map(LABEL_TO_INDEX).to_numpy()
    return float(classification_metrics(y_true, pred[list(PROB_COLUMNS)].to_numpy(float))[metric])


@dataclass
class _Setup:
    """What ``run_sweep`` decided before starting Tune."""

    space: SearchSpace
    name: str
    base: Config
    sweep_dir: Path
    experiment_path: str
    resumed: bool


def _setup(
    space_path: str | Path,
    overrides: list[str | tuple[str, Any]] | None,
    name: str | None,
    resume: bool,
    num_samples: int | None,
    time_budget_s: float | None,
    refit_epochs: int | None = None,
    refit_members: int | None = None,
) -> _Setup:
    """Returns the checked space, name, base config and folders; raises before any Ray or data work (see run_sweep)."""
    space: SearchSpace = load_space(space_path).with_budget(num_samples, time_budget_s, refit_epochs, refit_members)
    name = check_sweep_name(name, "--name") if name else space.name
    base = absolute_paths(load_config(None, [*space.shared_overrides(), *(overrides or [])]))
    sweep_dir = Path(base.logging.output_dir) / "sweeps" / name
    experiment_path = storage.join(base.logging.storage_path, name)
    used = _name_used_by(sweep_dir, experiment_path)
    if used and not resume:
        raise SweepNameInUse(
            f"sweep name {name!r} is already used ({', '.join(used)}): pass --resume to continue that sweep, or "
            f"--name NEW_NAME to start another one"
        )
    if used:
        _check_resume_data(base, sweep_dir, name)
    return _Setup(space, name, base, sweep_dir, experiment_path, bool(used))


def _make_tuner(setup: _Setup, data: PreparedData, tracker: Any, loop_extra: dict[str, Any], resume: bool) -> Any:
    """Returns the Tuner: restored from the experiment folder with ``resume``, else built from the space."""
    space, base = setup.space, setup.base
    plan = plan_resources(base.training.num_workers)
    ctx = {
        "base": base.to_dict(),
        "space": space,
        "cache_path": str(data.cache.path),
        "rows": data.loop_rows(),
        "storage_path": base.logging.storage_path,
        "cpus_per_worker": plan.cpus_per_worker,
        "threads_per_worker": plan.threads_per_worker,
        "loop_extra": loop_extra,
    }
    trainable = tune.with_resources(tune.with_parameters(trial_driver, ctx=ctx), DRIVER_RESOURCES)
    if resume and tune.Tuner.can_restore(setup.experiment_path):
        log.info("resuming sweep %s from %s", setup.name, setup.experiment_path)
        return tune.Tuner.restore(
            setup.experiment_path, trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    if resume:
        log.warning("nothing to resume at %s: starting the sweep afresh", setup.experiment_path)
    max_concurrent = space.budget.max_concurrent_trials or plan.max_concurrent
    search = make_searcher(space, max_concurrent=max_concurrent)
    return tune.Tuner(
        trainable,
        param_space=search.param_space,
        tune_config=tune.TuneConfig(
            search_alg=search.search_alg,
            scheduler=make_scheduler(space, record_dir=setup.sweep_dir),
            metric=space.metric,
            mode=space.mode,
            num_samples=space.budget.num_samples,
            max_concurrent_trials=max_concurrent,
            time_budget_s=space.budget.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=setup.name,
            storage_path=base.logging.storage_path,
            callbacks=[tracker.callback(functools.partial(trial_run_name, space, base.model.name))],
            # a trial whose driver died with its node runs again (on a surviving node); its Train run resumes from
            # the last checkpoint in storage (same name) and its MLflow run continues (MlflowTrialCallback)
            failure_config=tune.FailureConfig(max_failures=base.training.max_failures),
        ),
    )


REFIT_DIR = "refit"  # in the sweep folder: the refit run's checkpoint folder, per trial id


def _refit(setup: _Setup, data: PreparedData, tracker: Any, best: TrialRecord, checkpoint: Path) -> dict[str, Any]:
    """Trains the picked trial's configuration again for ``budget.refit_epochs`` on the sweep's splits, once per
    ``budget.refit_members`` (training seeds ``training.seed + i``), and returns what it gave: its value of the sweep's
    metric beside the trial's, whether it is ``used`` (better on that metric: validation picks, the test split stays
    untouched) and its checkpoint(s). With several members the value is that of the mean of their probabilities on
    the validation split (``checkpoints`` lists them all; ``members`` each one's own figures)."""
    space, budget = setup.space, setup.space.budget
    cfg = config_from_dict(read_checkpoint(checkpoint)["config"])  # the trial's own configuration
    training = dataclasses.replace(
        cfg.training, epochs=budget.refit_epochs, early_stopping_patience=budget.refit_patience
    )
    cfg = dataclasses.replace(cfg, training=training)
    log.info("sweep %s: refitting trial %s for %d epochs (patience %d), %d model(s)", setup.name, best.trial_id,
             budget.refit_epochs, budget.refit_patience, budget.refit_members)  # fmt: skip
    members = []
    for i in range(budget.refit_members):
        seed = cfg.training.seed + i
        member_cfg = dataclasses.replace(cfg, training=dataclasses.replace(training, seed=seed))
        name = f"{setup.name}-refit-{best.trial_id}" + (f"-seed{seed}" if i else "")
        out_dir = setup.sweep_dir / REFIT_DIR / best.trial_id
        out_dir = out_dir / f"seed-{seed}" if i else out_dir  # the first member where a single refit goes
        path, result, wall = run_trainer(member_cfg, data, name, out_dir, {"metric": space.metric, "mode": space.mode})
        members.append({"seed": seed, space.metric: float(result.metrics[best_key(space.metric)]),
                        "epochs_run": int(result.metrics["epoch"]) + 1, "checkpoint": str(path),
                        "wall_s": round(wall, 1)})  # fmt: skip
    if len(members) == 1:
        value = members[0][space.metric]
    else:
        # the space checked that its metric is val/<a key of classification_metrics> (space.ENSEMBLE_METRICS)
        scores = test_metrics([Path(m["checkpoint"]) for m in members], data.snippet_set("val"))
        value = float(scores[space.metric.split("/", 1)[1]])
    used = value > best.best if space.mode == "max" else value < best.best
    info = {
        "trial_id": best.trial_id,
        "epochs": budget.refit_epochs,
        "epochs_run": members[0]["epochs_run"],
        space.metric: value,
        f"trial_{space.metric}": best.best,
        "used": bool(used),
        "checkpoint": members[0]["checkpoint"],
        "wall_s": round(sum(m["wall_s"] for m in members), 1),
    }
    if len(members) > 1:
        info |= {"checkpoints": [m["checkpoint"] for m in members], "members": members}
    tracker.log_metrics({f"refit/{best_key(space.metric)}": value, "refit/epochs_run": float(info["epochs_run"])})
    log.info("sweep %s: refit %s %.4f against the trial's %.4f: %s", setup.name, space.metric, value, best.best,
             "the refit is tested and registered" if used else "the trial's checkpoint stays")  # fmt: skip
    return info


def _try_refit(setup: _Setup, data: PreparedData, tracker: Any, best: TrialRecord, checkpoint: Path) -> dict[str, Any]:
    """``_refit``, but a refit that fails leaves the sweep's result as it was: the trial's checkpoint is tested and
    registered and ``{"used": False, "error": ...}`` says why (the refit is an extra; the search must not be lost)."""
    try:
        return _refit(setup, data, tracker, best, checkpoint)
    except Exception as e:  # noqa: BLE001 - any failure of the extra training (Ray Train, storage, a bad metric)
        log.warning("sweep %s: the refit of trial %s failed (%s: %s); the trial's own checkpoint is registered",
                    setup.name, best.trial_id, type(e).__name__, e)  # fmt: skip
        return {"trial_id": best.trial_id, "epochs": setup.space.budget.refit_epochs, "used": False, "error": str(e)}


def _finish(
    setup: _Setup,
    record: SweepRecord,
    data: PreparedData,
    tracker: Any,
    *,
    register: bool,
    promote: bool,
) -> dict[str, Any]:
    """Writes the Optuna study, tests the trial the space's champion policy picks (its best checkpoint), registers it
    (with the policy and its validation score and latency as version tags) and returns the summary fields they add:
    ``best_trial`` is the picked trial, ``champion`` its policy, score, latency and why."""
    out: dict[str, Any] = {"optuna_storage": _export_study(setup, tracker)}
    best, why = record.champion_trial()
    if best is None:
        tracker.finish("FAILED")
        raise RuntimeError(f"sweep {setup.name}: no trial reported a result; see {setup.experiment_path}")
    policy = setup.space.champion.describe()
    picked = {"trial_id": best.trial_id, "policy": policy, record.metric: best.best, "latency_ms": best.latency_ms}
    log.info(
        "sweep %s: champion policy %r picks trial %s: %s %.4f, latency %s ms (%s)", setup.name, policy,
        best.trial_id, record.metric, best.best, "?" if best.latency_ms is None else f"{best.latency_ms:.2f}", why,
    )  # fmt: skip
    checkpoint = fetch_checkpoint(best, setup.sweep_dir)  # a local file (fetched once from object storage)
    checkpoints = [checkpoint]  # the registered model: one checkpoint, or the refit's members averaged
    refit_epochs = setup.space.budget.refit_epochs
    if refit_epochs is not None and refit_epochs > setup.space.budget.max_epochs:
        out["refit"] = _try_refit(setup, data, tracker, best, checkpoint)
        if out["refit"]["used"]:
            checkpoint = Path(out["refit"]["checkpoint"])
            checkpoints = [Path(c) for c in out["refit"].get("checkpoints", [checkpoint])]
    test = test_metrics(checkpoints, data.snippet_set("test"))
    tracker.log_metrics(test, prefix="best_trial/test/")
    tracker.log_metrics({"best_trial/" + record.best_key: float(best.best)})
    if best.latency_ms is not None:
        tracker.log_metrics({"best_trial/latency_ms": best.latency_ms})
    out |= {"best_trial": best.trial_id, "champion": {**picked, "reason": why}, "checkpoint": str(checkpoint)}
    if len(checkpoints) > 1:
        out["checkpoints"] = [str(c) for c in checkpoints]
    out["test"] = test
    selection = {"policy": policy, record.metric: best.best, "latency_ms": best.latency_ms}
    if out.get("refit", {}).get("used"):  # the registered weights are the refit's: its validation score
        selection |= {record.metric: out["refit"][record.metric], "refit_epochs": refit_epochs}
        selection |= {"refit_members": len(checkpoints)} if len(checkpoints) > 1 else {}
    if register:
        out["registration"] = tracker.register(
            checkpoint,
            lambda uri: pyfunc_test_score(uri, data, record.test_metric),
            splits_csv=setup.sweep_dir / SPLITS_FILE,
            promote=promote,
            metric=record.test_metric,
            mode=record.mode,
            test_metrics=test,
            log_model=_member_mean_logger(out["refit"]) if len(checkpoints) > 1 else None,
            selection=selection,
        )
    return out


def _member_mean_logger(refit: dict[str, Any]) -> Callable[..., Any]:
    """Returns ``SweepTracker.register``'s ``log_model`` for the refit's members: one ``pyfunc.GuitarNoteEnsemble``
    of equal weights, each member's training seed kept in its spec."""
    from guitar_cls.pyfunc import log_ensemble_model

    members = refit["members"]

    def log_model(_checkpoint: Path, **kw: Any) -> Any:
        return log_ensemble_model(
            [m["checkpoint"] for m in members], [1.0] * len(members), "mean",
            members=[{"trial_id": refit["trial_id"], "seed": m["seed"]} for m in members], **kw,
        )  # fmt: skip

    return log_model


def _export_study(setup: _Setup, tracker: Any) -> str | None:
    """Writes the sweep record as an Optuna study into the output folder's store (``tune.optuna_export``) and returns
    its URL, or None when it could not be written (logged: the sweep record stays the truth)."""
    import optuna
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    from guitar_cls.tune.optuna_export import export_sweep, optuna_storage

    storage = optuna_storage(setup.base.logging.output_dir)
    attrs = {
        "sweep": setup.name,
        "mlflow_experiment_id": tracker.experiment_id,
        "mlflow_parent_run_id": tracker.run_id,
        "data_hash": tracker.tags.get("data_hash", ""),
    }
    try:
        run_ids = tracker.trial_run_ids()
        export_sweep(
            setup.sweep_dir,
            storage,
            setup.space,
            experiment_dir=setup.experiment_path,
            run_ids=run_ids,
            attrs=attrs,
            tracked_curves=tracker.metric_curves(run_ids, setup.space.metric),
        )
    except (OSError, ValueError, optuna.exceptions.OptunaError, sqlalchemy.exc.SQLAlchemyError, MlflowException) as e:
        log.warning("sweep %s: could not write the Optuna study into %s: %s", setup.name, storage, e)
        return None
    log.info("sweep %s written to Optuna: optuna-dashboard %s", setup.name, storage)
    return storage


def run_sweep(
    space_path: str | Path,
    *,
    overrides: list[str | tuple[str, Any]] | None = None,
    name: str | None = None,
    resume: bool = False,
    register: bool = True,
    loop_extra: dict[str, Any] | None = None,
    num_samples: int | None = None,
    time_budget_s: float | None = None,
    promote: bool = False,
    refit_epochs: int | None = None,
    refit_members: int | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) the sweep described by ``space_path`` and returns its summary.

    ``num_samples``, ``time_budget_s``, ``refit_epochs`` (0: no refit) and ``refit_members`` replace the space file's
    budget when given.
    The summary holds the leaderboard, the best trial's test metrics (the refit's when it is used), the refit and the
    registration outcome (``promote``: the best model takes the ``champion`` alias even from a champion trained on
    other data or splits).

    Raises:
        SweepNameInUse: the name was used before and ``resume`` is False.
        SweepDataChanged: ``resume`` of a sweep whose data or splits settings changed.
    """
    setup = _setup(space_path, overrides, name, resume, num_samples, time_budget_s, refit_epochs, refit_members)
    space, sweep_dir = setup.space, setup.sweep_dir
    init_ray()
    data = prepare_data(setup.base, sweep_dir)
    from guitar_cls.tracking import SweepTracker

    space_file = str(Path(space_path).resolve())
    tags = {"space_file": space_file, "data_hash": data.fingerprint, "sweep": setup.name}
    tags |= {"metadata": str(data.metadata_path), "audio_root": str(data.audio_root)}
    tracker = SweepTracker(setup.base, sweep_dir, name=setup.name, tags=tags)
    tracker.log_datasets(data.metadata, data.loop_rows(), source=data.metadata_path)
    if not (sweep_dir / SWEEP_START).exists():
        start = {"name": setup.name, "data_fingerprint": data.fingerprint, "splits": asdict(setup.base.splits)}
        (sweep_dir / SWEEP_START).write_text(json.dumps(start, indent=2))
    tuner = _make_tuner(setup, data, tracker, loop_extra or {}, resume)
    t0 = time.perf_counter()
    with _sigint_watch() as interrupted:
        results = tuner.fit()
    if interrupted():  # Ctrl-C: Tune saved its state and returned early; register nothing
        tracker.finish("KILLED")
        raise SweepInterrupted(f"sweep {setup.name} interrupted; rerun with --resume --name {setup.name} to continue")
    stops = read_asha_stops(sweep_dir)
    objectives = [dataclasses.asdict(o) for o in space.objectives]
    trials = [trial_from_result(r, metric=space.metric, max_epochs=space.budget.max_epochs, asha_stops=stops,
                                objectives=objectives) for r in results]  # fmt: skip
    summary: dict[str, Any] = {
        "sweep": setup.name,
        "space_file": space_file,
        "metric": space.metric,
        "mode": space.mode,
        "objectives": objectives,
        "champion_policy": space.champion.describe(),
        **data.describe(),
        "storage_path": setup.base.logging.storage_path,
        "wall_s": round(time.perf_counter() - t0, 1),
        "trials": len(trials),
        "errors": sum(t.status == "ERROR" for t in trials),
    }
    record = SweepRecord(
        setup.name, space.metric, space.mode, space.budget.max_epochs, trials, summary,
        objectives=objectives, champion=space.champion.to_dict(),
    )  # fmt: skip
    record.write(sweep_dir)
    tracker.log_artifact(sweep_dir / LEADERBOARD_CSV)
    summary.update(_finish(setup, record, data, tracker, register=register, promote=promote))
    tracker.finish()
    record.write(sweep_dir)
    return {**summary, "leaderboard": record.leaderboard()}


__all__ = [
    "ResourcePlan",
    "StorageReportCallback",
    "SweepDataChanged",
    "SweepInterrupted",
    "SweepNameInUse",
    "leaderboard",
    "pareto_front",
    "plan_resources",
    "run_sweep",
    "trial_run_name",
]
