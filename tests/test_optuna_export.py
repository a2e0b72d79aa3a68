"""A sweep record written as an Optuna RDB study (issue 14.3): params with the space's distributions, values, per-epoch
intermediate values, ASHA-stopped trials pruned, MLflow run ids; one study per sweep, replaced when written again."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from guitar_cls.tune.optuna_export import (
    OPTUNA_DB,
    export_sweep,
    optuna_storage,
    param_value,
    trial_state,
    write_study,
)
from guitar_cls.tune.record import SweepRecord, TrialRecord
from guitar_cls.tune.space import space_from_dict

METRIC = "val/balanced_accuracy"
SPACE = {
    "name": "toy",
    "metric": METRIC,
    "mode": "max",
    "search": {"algorithm": "random", "seed": 0},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "budget": {"num_samples": 5, "max_epochs": 3},
    "params": {
        "training.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
        "model.params.blocks": {"choice": [[1, 1, 1, 1], [2, 2, 2, 2]]},
        "training.batch_size": {"int": [16, 64]},
    },
}


def _trial(trial_id: str, reason: str, best: float | None, epochs: int, **params) -> TrialRecord:
    status = {"error": "ERROR", "budget": "CUT"}.get(reason, "TERMINATED")
    return TrialRecord(
        trial_id=trial_id,
        status=status,
        stop_reason=reason,
        epochs=epochs,
        best=best,
        last=best,
        latency_ms=1.5,
        checkpoint_path=None,
        params={
            "training.learning_rate": 1e-3,
            "model.params.blocks": [1, 1, 1, 1],
            "training.batch_size": 32,
            "training.epochs": 3,  # a constant every trial carries: no distribution, not an Optuna param
            **params,
        },
    )


@pytest.fixture()
def record() -> SweepRecord:
    trials = [
        _trial("t_00000", "completed", 0.8, 3, **{"model.params.blocks": [2, 2, 2, 2]}),
        _trial("t_00001", "asha", 0.4, 1, **{"training.learning_rate": 5e-3}),
        _trial("t_00002", "early_stop", 0.7, 2),
        _trial("t_00003", "error", None, 0),
        TrialRecord("t_00004", "NOT_STARTED", "budget", 0, None, None, None, None, {}),
    ]
    return SweepRecord("toy", METRIC, "max", 3, trials)


CURVES = {"t_00000": {1: 0.5, 2: 0.7, 3: 0.8}, "t_00001": {1: 0.4}, "t_00002": {1: 0.6, 2: 0.7}}


def test_the_study_holds_the_record_with_distributions_values_curves_and_states(tmp_path, record) -> None:
    space = space_from_dict(SPACE)
    dists = {k: p.distribution() for k, p in space.params.items()}
    storage = optuna_storage(tmp_path)
    assert storage == f"sqlite:///{tmp_path.resolve() / OPTUNA_DB}"
    write_study(record, storage, dists, curves=CURVES, run_ids={"t_00000": "run0"}, attrs={"sweep": "toy"})

    study = optuna.load_study(storage=storage, study_name="toy")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.metric_names == [METRIC] and study.user_attrs["sweep"] == "toy"
    trials = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert set(trials) == {"t_00000", "t_00001", "t_00002", "t_00003"}  # never started: left out
    done, pruned, early, failed = (trials[f"t_0000{i}"] for i in range(4))
    assert done.state == TrialState.COMPLETE and done.value == 0.8 and done.intermediate_values == CURVES["t_00000"]
    assert done.params == {
        "training.learning_rate": 1e-3,
        "model.params.blocks": "[2, 2, 2, 2]",  # the space's choice form
        "training.batch_size": 32,
    }
    assert done.distributions == dists and done.user_attrs["mlflow_run_id"] == "run0"
    assert pruned.state == TrialState.PRUNED and pruned.value is None and pruned.intermediate_values == {1: 0.4}
    assert pruned.user_attrs["stop_reason"] == "asha" and pruned.user_attrs["mlflow_run_id"] is None
    assert early.state == TrialState.COMPLETE and early.value == 0.7
    assert failed.state == TrialState.FAIL and failed.intermediate_values == {}
    assert study.best_trial.user_attrs["tune_trial_id"] == "t_00000"

    # written again (a resumed sweep): replaced, not appended
    record.trials.append(_trial("t_00005", "completed", 0.9, 3))
    write_study(record, storage, dists, curves=CURVES)
    again = optuna.load_study(storage=storage, study_name="toy")
    assert len(again.trials) == 5 and again.best_trial.user_attrs["tune_trial_id"] == "t_00005"


def test_a_minimizing_sweep_is_a_minimizing_study_beside_others(tmp_path, record) -> None:
    storage = optuna_storage(tmp_path)
    write_study(record, storage, {})
    record.name, record.mode = "other", "min"
    write_study(record, storage, {})
    summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert set(summaries) == {"toy", "other"}
    assert summaries["other"].direction == optuna.study.StudyDirection.MINIMIZE


@pytest.mark.parametrize(
    ("dist", "value", "expected"),
    [
        (CategoricalDistribution(["[1, 1]", "[2, 2]"]), [2, 2], "[2, 2]"),
        (CategoricalDistribution(["[1, 1]"]), [3, 3], None),
        (CategoricalDistribution([True, False]), 1, None),  # 1 is no choice of a boolean param
        (CategoricalDistribution(["resnet", "efficientnet_b0"]), "resnet", "resnet"),
        (FloatDistribution(1e-4, 1e-2, log=True), 1e-3, 1e-3),
        (FloatDistribution(0.1, 0.3), 0.5, None),
        (IntDistribution(16, 64), 32, 32),
        (IntDistribution(16, 64, step=16), 40, None),
        (FloatDistribution(0.0, 1.0), "0.5", None),
    ],
)
def test_param_value_keeps_only_values_of_the_distribution(dist, value, expected) -> None:
    assert param_value(dist, value) == expected


def test_stop_reasons_map_to_states() -> None:
    assert trial_state(_trial("a", "budget", 0.5, 1)) == TrialState.PRUNED
    assert trial_state(_trial("a", "stopped", 0.5, 1)) == TrialState.PRUNED
    assert trial_state(_trial("a", "completed", None, 3)) == TrialState.FAIL  # ran but never reported the metric


def test_export_sweep_reads_the_record_and_tunes_results(tmp_path, record) -> None:
    sweep_dir = tmp_path / "sweeps" / "toy"
    record.write(sweep_dir)
    experiment = tmp_path / "ray_results" / "toy"
    for trial_id, curve in CURVES.items():
        folder = experiment / f"trial_driver_{trial_id}"
        folder.mkdir(parents=True)
        lines = [
            json.dumps({"trial_id": trial_id, "training_iteration": step, METRIC: value, "config": {"x": 1}})
            for step, value in curve.items()
        ]
        (folder / "result.json").write_text("\n".join(lines) + "\n")
    storage = optuna_storage(tmp_path)
    export_sweep(sweep_dir, storage, space_from_dict(SPACE), experiment_dir=experiment, run_ids={"t_00002": "r2"})
    trials = {t.user_attrs["tune_trial_id"]: t for t in optuna.load_study(storage=storage, study_name="toy").trials}
    assert {k: trials[k].intermediate_values for k in CURVES} == CURVES
    assert trials["t_00002"].user_attrs["mlflow_run_id"] == "r2"

    export_sweep(sweep_dir, storage, space_from_dict(SPACE), experiment_dir=Path(tmp_path / "gone"))
    assert all(not t.intermediate_values for t in optuna.load_study(storage=storage, study_name="toy").trials)


def test_epochs_missing_from_tune_results_come_from_the_tracked_curves(tmp_path, record) -> None:
    """A trial Tune restarted on --resume keeps only its later epochs in result.json; MLflow has them all."""
    sweep_dir = tmp_path / "sweeps" / "toy"
    record.write(sweep_dir)
    experiment = tmp_path / "ray_results" / "toy"
    folder = experiment / "trial_driver_t_00001"
    folder.mkdir(parents=True)
    lines = [{"trial_id": "t_00001", "training_iteration": 1, "epoch": 2, METRIC: 0.7}]  # restarted at epoch 2
    (folder / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    tracked = {"t_00001": {1: 0.4, 2: 0.5, 3: 0.65}, "t_00002": {1: 0.3}}  # epoch + 1 -> value, as MLflow holds them
    storage = optuna_storage(tmp_path)
    export_sweep(sweep_dir, storage, space_from_dict(SPACE), experiment_dir=experiment, tracked_curves=tracked)
    trials = {t.user_attrs["tune_trial_id"]: t for t in optuna.load_study(storage=storage, study_name="toy").trials}
    assert trials["t_00001"].intermediate_values == {1: 0.4, 2: 0.5, 3: 0.7}  # Tune's value wins where both have it
    assert trials["t_00002"].intermediate_values == {1: 0.3}
