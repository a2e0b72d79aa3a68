"""Multi-objective sweeps and the champion policy (issue 13.1-2): objectives and policies parsed from the space with
errors naming the key, the searcher built with metric/mode lists and the sampler the space names, the Pareto front
and the policy's pick on a hand-built record, the Optuna export as a multi-objective study. No Tune run."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest

from guitar_cls.tune.optuna_export import optuna_storage, write_study
from guitar_cls.tune.record import SweepRecord, TrialRecord, pareto_front, select_champion
from guitar_cls.tune.space import ChampionPolicy, Objective, SpaceError, load_space, make_searcher, space_from_dict

METRIC = "val/balanced_accuracy"
TWO = [{"metric": METRIC, "mode": "max"}, {"metric": "latency_ms", "mode": "min"}]
SPACE = {
    "name": "mo",
    "objectives": TWO,
    "champion": {"fastest_within": 0.01},
    "search": {"algorithm": "nsga2", "seed": 3, "population_size": 4},
    "scheduler": {"type": "asha", "grace_period": 1, "reduction_factor": 2},
    "budget": {"num_samples": 4, "max_epochs": 2},
    "params": {"features.n_mels": {"choice": [32, 64]}, "training.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]}},
}
DEPLOY = Path(__file__).resolve().parents[1] / "search_spaces" / "deploy.yaml"


def spec(**changes) -> dict:
    out = copy.deepcopy(SPACE)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------------------------------------------- the space


def test_objectives_and_policy_are_parsed() -> None:
    space = space_from_dict(SPACE)
    assert space.objectives == (Objective(METRIC, "max"), Objective("latency_ms", "min")) and space.multi_objective
    assert (space.metric, space.mode) == (METRIC, "max")  # the primary: best epoch, ASHA, leaderboard
    assert space.champion == ChampionPolicy("fastest_within", 0.01)
    assert space.champion.describe() == "fastest_within: 0.01"
    single = space_from_dict(spec(objectives=None, champion=None, metric="val/macro_f1", mode="max"))
    assert single.objectives == (Objective("val/macro_f1", "max"),) and not single.multi_objective
    assert single.champion == ChampionPolicy("best")
    assert space_from_dict(spec(champion={"max_latency_ms": 2})).champion == ChampionPolicy("max_latency_ms", 2.0)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"metric": METRIC, "mode": "max"}, "metric"),  # both forms at once
        ({"objectives": []}, "objectives"),
        ({"objectives": [{"metric": "latency_ms", "mode": "min"}, TWO[0]]}, "objectives[0].metric"),  # primary
        ({"objectives": [TWO[0], {"metric": "latency", "mode": "min"}]}, "objectives[1].metric"),
        ({"objectives": [TWO[0], {"metric": "latency_ms", "mode": "down"}]}, "objectives[1].mode"),
        ({"objectives": [TWO[0], {"metric": "latency_ms", "mode": "min", "weight": 1}]}, "objectives[1].weight"),
        ({"objectives": [TWO[0], {"mode": "min"}]}, "objectives[1].metric"),
        ({"objectives": [TWO[0], TWO[0]]}, "objectives[1].metric"),
        ({"objectives": ["val/balanced_accuracy"]}, "objectives[0]"),
        ({"champion": "fastest"}, "champion"),
        ({"champion": {"fastest_within": 0.01, "max_latency_ms": 2}}, "champion"),
        ({"champion": {"slowest": 1}}, "champion.slowest"),
        ({"champion": {"fastest_within": -0.1}}, "champion.fastest_within"),
        ({"champion": {"fastest_within": "one point"}}, "champion.fastest_within"),
        ({"champion": {"max_latency_ms": 0}}, "champion.max_latency_ms"),
        ({"search": {"algorithm": "nsga2", "population_size": 1}}, "search.population_size"),
        ({"search": {"algorithm": "nsga2", "n_startup_trials": 3}}, "search.n_startup_trials"),
    ],
)
def test_bad_objectives_and_policies_name_the_key(changes: dict, key: str) -> None:
    with pytest.raises(SpaceError) as e:
        space_from_dict(spec(**changes), source="mo.yaml")
    assert e.value.key == key and str(e.value).startswith(f"mo.yaml: {key}: ")


def test_deploy_space_trades_accuracy_for_speed_on_two_cores() -> None:
    space = load_space(DEPLOY)
    assert [o.metric for o in space.objectives] == [METRIC, "latency_ms"]
    assert space.champion.kind == "fastest_within" and space.search.algorithm == "nsga2"
    assert space.budget.time_budget_s is not None and space.budget.time_budget_s <= 600
    assert space.budget.num_samples <= 9 and space.budget.max_epochs <= 12
    assert {"model.name", "features.n_mels", "features.hop_length"} <= set(space.params)
    assert len(space.params["model.name"].choices) >= 2


# ---------------------------------------------------------------------------------------------------- the searcher


@pytest.mark.parametrize(
    ("algorithm", "sampler"), [("nsga2", optuna.samplers.NSGAIISampler), ("tpe", optuna.samplers.TPESampler)]
)
def test_the_searcher_gets_both_objectives(algorithm: str, sampler: type) -> None:
    search = {"algorithm": algorithm, "seed": 3, **({"population_size": 4} if algorithm == "nsga2" else {})}
    searcher = make_searcher(space_from_dict(spec(search=search))).search_alg
    assert searcher.metric == [METRIC, "latency_ms"] and searcher.mode == ["max", "min"]
    assert isinstance(searcher._sampler, sampler)
    if algorithm == "nsga2":
        assert searcher._sampler._population_size == 4
    study = searcher._ot_study  # built at once: the define-by-run space is given
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]


@pytest.mark.parametrize("algorithm", ["nsga2", "tpe", "random"])
def test_the_searcher_pickles_as_tune_and_its_save_do(algorithm: str) -> None:
    # Tune pickles the searcher with the Tuner's state, OptunaSearch.save the sampler: Optuna 5.1's NSGA-II sampler
    # held a plain lock and the deploy sweep failed before its first trial ("cannot pickle '_thread.lock' object")
    import pickle

    from ray import cloudpickle

    search = {"algorithm": algorithm, "seed": 3, **({"population_size": 4} if algorithm == "nsga2" else {})}
    searcher = make_searcher(space_from_dict(spec(search=search))).search_alg
    cloudpickle.loads(cloudpickle.dumps(searcher))
    sampler = pickle.loads(pickle.dumps(searcher._sampler))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=10)  # 2+ generations
    assert len(study.trials) == 10 and study.best_trials


def test_a_single_objective_searcher_is_unchanged() -> None:
    searcher = make_searcher(space_from_dict(spec(objectives=None, metric=METRIC, mode="max"))).search_alg
    assert searcher.metric == METRIC and searcher.mode == "max"
    assert searcher._ot_study.direction == optuna.study.StudyDirection.MAXIMIZE


# ---------------------------------------------------------------------------------------------------- the record


def _trial(tid: str, best: float | None, latency: float | None, status: str = "TERMINATED") -> TrialRecord:
    reason = "error" if status == "ERROR" else "completed"
    return TrialRecord(tid, status, reason, 2, best, best, latency, f"/ckpt/{tid}", {},
                       values={METRIC: best, "latency_ms": latency})  # fmt: skip


def trials() -> list[TrialRecord]:
    return [
        _trial("top", 0.900, 9.0),  # the best score
        _trial("near", 0.895, 4.0),  # within 0.01, faster
        _trial("nearfast", 0.8905, 2.5),  # within 0.01 (0.0095), fastest of those
        _trial("dominated", 0.85, 5.0),  # "near" is better and faster
        _trial("fast", 0.70, 1.0),  # fastest of all: on the front, outside 0.01
        _trial("broken", 0.99, 0.5, status="ERROR"),  # errors never win
        _trial("untimed", 0.899, None),
    ]


def test_the_front_is_the_non_dominated_trials_fastest_first() -> None:
    record = SweepRecord("mo", METRIC, "max", 2, trials(), objectives=TWO)
    front = record.pareto_front()
    assert front["trial_id"].tolist() == ["fast", "nearfast", "near", "top"]  # errors and untimed trials left out
    # a third objective: a trial beaten on two may still be on the front
    third = [*TWO, {"metric": "val/macro_f1", "mode": "max"}]
    board = SweepRecord("mo", METRIC, "max", 2, trials(), objectives=third).leaderboard()
    board.loc[board["trial_id"] == "dominated", "last/val/macro_f1"] = 1.0
    front3 = pareto_front(board, objectives=third)
    assert "dominated" in set(front3["trial_id"]) and "untimed" not in set(front3["trial_id"])


def test_the_front_follows_each_objectives_mode() -> None:
    minimize = [{"metric": METRIC, "mode": "min"}, {"metric": "latency_ms", "mode": "min"}]
    board = SweepRecord("mo", METRIC, "min", 2, trials(), objectives=minimize).leaderboard()
    assert pareto_front(board, objectives=minimize)["trial_id"].tolist() == ["fast"]


@pytest.mark.parametrize(
    ("policy", "picked"),
    [
        (None, "top"),
        ({"kind": "best", "value": None}, "top"),
        ({"kind": "fastest_within", "value": 0.01}, "nearfast"),
        ({"kind": "fastest_within", "value": 0.005}, "near"),
        ({"kind": "fastest_within", "value": 0.0}, "top"),
        ({"kind": "fastest_within", "value": 0.5}, "fast"),
        ({"kind": "max_latency_ms", "value": 4.0}, "near"),  # the best at most 4 ms
        ({"kind": "max_latency_ms", "value": 100.0}, "top"),
        ({"kind": "max_latency_ms", "value": 1.0}, "fast"),
        ({"kind": "max_latency_ms", "value": 0.1}, "fast"),  # nobody meets it: the fastest, said so
    ],
)
def test_the_policy_picks_the_trial(policy: dict | None, picked: str) -> None:
    trial, why = select_champion(trials(), METRIC, "max", policy)
    assert trial.trial_id == picked
    if policy and policy["value"] == 0.1:
        assert "no trial at most 0.1 ms" in why


def test_the_policy_follows_a_minimized_metric() -> None:
    loss = [_trial("a", 0.30, 9.0), _trial("b", 0.305, 3.0), _trial("c", 0.32, 1.0)]
    assert select_champion(loss, "val/loss", "min", {"kind": "fastest_within", "value": 0.01})[0].trial_id == "b"
    assert select_champion(loss, "val/loss", "min", {"kind": "max_latency_ms", "value": 5})[0].trial_id == "b"


def test_the_record_keeps_objectives_policy_and_values(tmp_path: Path) -> None:
    policy = {"kind": "fastest_within", "value": 0.01}
    SweepRecord("mo", METRIC, "max", 2, trials(), objectives=TWO, champion=policy).write(tmp_path)
    back = SweepRecord.read(tmp_path)
    assert back.objectives == TWO and back.champion == policy
    assert back.trials[1].values == {METRIC: 0.895, "latency_ms": 4.0}
    assert back.champion_trial()[0].trial_id == "nearfast" and back.best_trial().trial_id == "top"


# ---------------------------------------------------------------------------------------------------- Optuna


def test_the_optuna_study_has_both_directions(tmp_path: Path) -> None:
    record = SweepRecord("mo", METRIC, "max", 2, trials(), objectives=TWO)
    storage = optuna_storage(tmp_path)
    write_study(record, storage, {})
    study = optuna.load_study(storage=storage, study_name="mo")
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    assert study.metric_names == [METRIC, "latency_ms"] and study.user_attrs["objectives"] == TWO
    by_id = {t.user_attrs["tune_trial_id"]: t for t in study.trials}
    assert by_id["near"].values == [0.895, 4.0]
    assert by_id["untimed"].state == optuna.trial.TrialState.FAIL  # no latency: not a point of the front
    assert {t.user_attrs["tune_trial_id"] for t in study.best_trials} == {"fast", "nearfast", "near", "top"}


# ---------------------------------------------------------------------------------------------------- the registry


def test_the_registered_version_carries_the_policy_and_both_numbers(monkeypatch, tmp_path: Path) -> None:
    """``SweepTracker.register`` with a stand-in registry client (no store, no model logged)."""
    import contextlib
    from types import SimpleNamespace

    import mlflow

    from guitar_cls import pyfunc, tracking
    from guitar_cls.config import Config

    tags: dict[tuple[str, str], str] = {}

    class Client:
        def set_model_version_tag(self, name, version, key, value):
            tags[(version, key)] = value

        def get_model_version_by_alias(self, name, alias):
            raise mlflow.exceptions.MlflowException("no alias")

        def log_metric(self, *a, **k):
            pass

        def update_model_version(self, *a, **k):
            pass

    logged = SimpleNamespace(registered_model_version=7, model_uri="models:/m-1")
    monkeypatch.setattr(pyfunc, "log_pyfunc_model", lambda *a, **k: logged)
    monkeypatch.setattr(tracking, "checkpoint_sample_rate", lambda checkpoint: 22050)
    monkeypatch.setattr(tracking.mlflow, "start_run", lambda **k: contextlib.nullcontext())
    tracker = object.__new__(tracking.SweepTracker)
    tracker.cfg, tracker.client, tracker.run_id, tracker.tags = Config(), Client(), "parent", {"sweep": "mo"}
    monkeypatch.setattr(tracker, "_set_champion_if", lambda *a: True)
    selection = {"policy": "fastest_within: 0.01", METRIC: 0.8905, "latency_ms": 2.5}
    out = tracker.register(tmp_path / "best.pt", lambda uri: 0.9, selection=selection)
    assert out["champion"] and out["version"] == "7"
    assert tags[("7", "champion_policy")] == "fastest_within: 0.01"
    assert tags[("7", f"selection/{METRIC}")] == "0.8905" and tags[("7", "selection/latency_ms")] == "2.5"
