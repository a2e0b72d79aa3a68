"""Search spaces: shipped files load, bad files fail before any trial naming file and key, define-by-run sampling
respects conditions, list choices round-trip, and trial configs are valid Configs."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from guitar_cls.config import Config
from guitar_cls.tune.space import (
    DefineByRun,
    SearchSpace,
    SpaceError,
    load_space,
    make_scheduler,
    make_searcher,
    trial_config,
    trial_overrides,
)

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
SHIPPED = sorted(SPACES.glob("*.yaml"))

MINIMAL: dict[str, Any] = {
    "metric": "val/balanced_accuracy",
    "mode": "max",
    "budget": {"num_samples": 4, "max_epochs": 6},
    "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 3},
    "params": {
        "model.name": {"choice": ["resnet", "mobilenet_v3_small"]},
        "model.params.blocks": {"choice": [[1, 1, 1, 1], [2, 2, 2, 2]], "when": {"model.name": "resnet"}},
        "model.params.width_mult": {"uniform": [0.5, 1.0], "when": {"model.name": ["mobilenet_v3_small"]}},
        "training.learning_rate": {"loguniform": [1e-4, 3e-3]},
        "training.batch_size": {"int": [16, 64], "step": 16},
    },
}

optuna.logging.set_verbosity(optuna.logging.WARNING)


def write(tmp_path: Path, data: dict[str, Any], name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def with_changes(**changes: Any) -> dict[str, Any]:
    """Returns a deep copy of MINIMAL with top-level sections replaced (``None`` removes one)."""
    data = yaml.safe_load(yaml.safe_dump(MINIMAL, sort_keys=False))
    for k, v in changes.items():
        if v is None:
            data.pop(k, None)
        else:
            data[k] = v
    return data


def sample(space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Returns the params of ``n`` trials asked from a TPE study over the space's define-by-run function."""
    fn = DefineByRun(space.params.values(), space.constants())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            sampler=optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed, n_startup_trials=3),
            direction="maximize",
        )
    out = []
    for i in range(n):
        trial = study.ask()
        fn(trial)
        study.tell(trial, float(i % 3))
        out.append(dict(trial.params))
    return out


# ---------------------------------------------------------------------------------------------------- shipped files


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_space_loads_and_builds(path: Path) -> None:
    space = load_space(path)
    assert space.name == path.stem
    assert space.metric.startswith("val/")
    plan = make_searcher(space)
    assert plan.search_alg is not None
    make_scheduler(space)
    for params in sample(space, 8):
        cfg = trial_config({}, space, {**params, **space.constants()})
        assert isinstance(cfg, Config)
        assert cfg.training.epochs == space.budget.max_epochs


def test_shipped_spaces_are_the_four() -> None:
    assert {p.stem for p in SHIPPED} >= {"arch", "augment", "features", "smoke"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_model_params_are_accepted_by_their_builders(path: Path) -> None:
    """Every family a shipped space can pick is registered, and every model kwarg a trial can get is a parameter of
    that family's builder."""
    from guitar_cls.models import list_models, model_params

    space = load_space(path)
    names = space.params["model.name"].choices if "model.name" in space.params else (space.fixed["model.name"],)
    for name in names:
        assert name in list_models(), f"{path.name}: unknown model family {name!r}"
        accepted = set(model_params(name))
        kwargs = {k.split(".")[-1] for k in space.fixed if k.startswith("model.params.")}
        kwargs |= {
            p.key.split(".")[-1]
            for p in space.params.values()
            if p.key.startswith("model.params.") and p.is_active({"model.name": name})
        }
        assert kwargs <= accepted, f"{path.name}: {name} does not accept {sorted(kwargs - accepted)}"


def test_arch_space_is_cheap_enough_for_two_cores() -> None:
    space = load_space(SPACES / "arch.yaml")
    assert space.budget.num_samples <= 9 and space.budget.max_epochs <= 12
    assert space.budget.time_budget_s is not None and space.budget.time_budget_s <= 1200
    families = [pt["model.name"] for pt in space.search.points_to_evaluate]
    assert sorted(families) == ["efficientnet_b0", "mobilenet_v3_small", "resnet"]


def test_smoke_space_is_tiny() -> None:
    space = load_space(SPACES / "smoke.yaml")
    assert space.budget.num_samples == 2 and space.budget.max_epochs == 2
    assert space.data["demo_recordings"] == 12
    cfg = trial_config({}, space, {})
    assert cfg.data.demo_recordings == 12 and cfg.model.params["base_width"] == 8


# ---------------------------------------------------------------------------------------------------- bad files


BAD = {
    "unknown top-level key": (with_changes(budgett={"num_samples": 1}), "budgett"),
    "unknown distribution key": (
        with_changes(params={"training.learning_rate": {"loguniform": [1e-4, 1e-3], "lgo": True}}),
        "params.training.learning_rate.lgo",
    ),
    "two distributions": (
        with_changes(params={"training.learning_rate": {"loguniform": [1e-4, 1e-3], "uniform": [0.1, 0.2]}}),
        "params.training.learning_rate",
    ),
    "lo >= hi": (
        with_changes(params={"model.params.dropout": {"uniform": [0.5, 0.1]}}),
        "params.model.params.dropout.uniform",
    ),
    "loguniform <= 0": (
        with_changes(params={"training.learning_rate": {"loguniform": [0.0, 1e-3]}}),
        "params.training.learning_rate.loguniform",
    ),
    "int step not dividing": (
        with_changes(params={"training.batch_size": {"int": [16, 60], "step": 16}}),
        "params.training.batch_size.step",
    ),
    "not a config key": (
        with_changes(params={"training.lr": {"loguniform": [1e-4, 1e-3]}}),
        "params.training.lr",
    ),
    "choice value of the wrong type": (
        with_changes(params={"training.batch_size": {"choice": [16, "big"]}}),
        "params.training.batch_size",
    ),
    "choice value outside the config's set": (
        with_changes(params={"training.optimizer": {"choice": ["adamw", "lbfgs"]}}),
        "params.training.optimizer",
    ),
    "uniform on an int key": (
        with_changes(params={"training.batch_size": {"uniform": [16, 64]}}),
        "params.training.batch_size",
    ),
    "range outside the config's": (
        with_changes(
            params={
                "model.params.dropout": {"uniform": [0.1, 0.5]},
                "training.label_smoothing": {"uniform": [0.0, 0.9]},
            }
        ),
        "params.training.label_smoothing",
    ),
    "fixed key unknown": (with_changes(fixed={"training.patience": 3}), "fixed.training.patience"),
    "fixed value invalid": (with_changes(fixed={"training.loss": "hinge"}), "fixed.training.loss"),
    "fixed epochs": (with_changes(fixed={"training.epochs": 3}), "fixed.training.epochs"),
    "param also fixed": (
        with_changes(fixed={"training.learning_rate": 1e-3}),
        "params.training.learning_rate",
    ),
    "data key unknown": (with_changes(data={"demo_recs": 12}), "data.demo_recs"),
    "data param": (
        with_changes(params={"data.sample_rate": {"choice": [16000, 22050]}}),
        "params.data.sample_rate",
    ),
    "slash in key": (
        with_changes(params={"training/learning_rate": {"loguniform": [1e-4, 1e-3]}}),
        "params.training/learning_rate",
    ),
    "when refers to a later param": (
        with_changes(
            params={
                "model.params.blocks": {"choice": [[1, 1, 1, 1]], "when": {"model.name": "resnet"}},
                "model.name": {"choice": ["resnet", "efficientnet_b0"]},
            }
        ),
        "params.model.params.blocks.when.model.name",
    ),
    "when refers to an unknown param": (
        with_changes(params={"model.params.blocks": {"choice": [[1, 1, 1, 1]], "when": {"model.nam": "resnet"}}}),
        "params.model.params.blocks.when.model.nam",
    ),
    "when value not a choice": (
        with_changes(
            params={
                "model.name": {"choice": ["resnet", "efficientnet_b0"]},
                "model.params.blocks": {"choice": [[1, 1, 1, 1]], "when": {"model.name": "resnet18"}},
            }
        ),
        "params.model.params.blocks.when.model.name",
    ),
    "unknown algorithm": (with_changes(search={"algorithm": "bohb"}), "search.algorithm"),
    "unknown scheduler": (with_changes(scheduler={"type": "pbt"}), "scheduler.type"),
    "fifo with asha keys": (with_changes(scheduler={"type": "fifo", "grace_period": 2}), "scheduler.grace_period"),
    "grace beyond max epochs": (
        with_changes(scheduler={"type": "asha", "grace_period": 7}),
        "scheduler.grace_period",
    ),
    "metric not namespaced": (with_changes(metric="balanced_accuracy"), "metric"),
    "bad mode": (with_changes(mode="maximize"), "mode"),
    "missing budget": (with_changes(budget=None), "budget"),
    "missing max_epochs": (with_changes(budget={"num_samples": 3}), "budget.max_epochs"),
    "point with unknown key": (
        with_changes(search={"points_to_evaluate": [{"training.lr": 1e-3}]}),
        "search.points_to_evaluate[0].training.lr",
    ),
    "point outside a range": (
        with_changes(search={"points_to_evaluate": [{"training.learning_rate": 1e-2}]}),
        "search.points_to_evaluate[0].training.learning_rate",
    ),
    "point off the int step": (
        with_changes(search={"points_to_evaluate": [{"training.batch_size": 24}]}),
        "search.points_to_evaluate[0].training.batch_size",
    ),
    "point with a choice not offered": (
        with_changes(search={"points_to_evaluate": [{"model.name": "resnet", "model.params.blocks": [3, 3, 3, 3]}]}),
        "search.points_to_evaluate[0].model.params.blocks",
    ),
    "point breaking a condition": (
        with_changes(search={"points_to_evaluate": [{"model.name": "resnet", "model.params.width_mult": 0.5}]}),
        "search.points_to_evaluate[0].model.params.width_mult",
    ),
    "grid with conditions": (with_changes(search={"algorithm": "grid"}), "params.model.params.blocks.when"),
    "unknown model family": (
        with_changes(params={**MINIMAL["params"], "model.name": {"choice": ["resnet", "mobilenet_v3_smal"]}}),
        "params.model.name.choice",
    ),
    "unknown fixed model family": (
        with_changes(fixed={"model.name": "resnet18"}, params={"training.learning_rate": {"loguniform": [1e-4, 1e-3]}}),
        "fixed.model.name",
    ),
    "model kwarg the family lacks": (
        with_changes(params={**MINIMAL["params"], "model.params.widht_mult": {"uniform": [0.5, 1.0]}}),
        "params.model.params.widht_mult",
    ),
    "name escaping outputs": (with_changes(name="../../x"), "name"),
    "absolute name": (with_changes(name="/tmp/x"), "name"),
    "dot-dot name": (with_changes(name=".."), "name"),
    "zero samples": (with_changes(budget={"num_samples": 0, "max_epochs": 6}), "budget.num_samples"),
    "zero time budget": (
        with_changes(budget={"num_samples": 2, "max_epochs": 6, "time_budget_s": 0}),
        "budget.time_budget_s",
    ),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_space_names_file_and_key(tmp_path: Path, case: str) -> None:
    data, key = BAD[case]
    path = write(tmp_path, data, "bad.yaml")
    with pytest.raises(SpaceError) as err:
        load_space(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert f": {key}:" in msg, msg


DUPLICATED = """\
metric: val/balanced_accuracy
mode: max
budget: {num_samples: 4, max_epochs: 6}
params:
  model.name: {choice: [resnet, mobilenet_v3_small]}
  model.params.width_mult: {uniform: [0.5, 1.0], when: {model.name: mobilenet_v3_small}}
  training.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}
  model.params.width_mult: {uniform: [0.25, 0.5], when: {model.name: mobilenet_v3_small}}
"""


def test_duplicate_keys_are_refused_naming_file_key_and_lines(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently: one per-family conditional would be lost (issue 10.9)."""
    path = tmp_path / "dup.yaml"
    path.write_text(DUPLICATED)
    with pytest.raises(SpaceError, match=rf"^{path}: params.model.params.width_mult: duplicate key on line 8 "):
        load_space(path)
    path.write_text(DUPLICATED.replace("mode: max\n", "mode: max\nmode: min\n"))
    with pytest.raises(SpaceError, match=rf"^{path}: mode: duplicate key on line 3 \(first on line 2\)"):
        load_space(path)
    nested = "points_to_evaluate:\n    - {training.learning_rate: 1.0e-4, training.learning_rate: 2.0e-4}\n"
    path.write_text(DUPLICATED.replace("params:\n", f"search:\n  {nested}params:\n"))
    with pytest.raises(SpaceError, match=r"search.points_to_evaluate\[0\].training.learning_rate: duplicate key"):
        load_space(path)
    # a YAML merge key is overriding by design, not a duplicate
    merged = DUPLICATED.replace(
        "  training.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}\n",
        "  training.learning_rate: &lr {loguniform: [1.0e-4, 1.0e-3]}\n"
        "  training.weight_decay: {<<: *lr, loguniform: [1.0e-5, 1.0e-3]}\n",
    ).replace("  model.params.width_mult: {uniform: [0.25, 0.5]", "  model.params.dropout: {uniform: [0.1, 0.3]")
    path.write_text(merged)
    space = load_space(path)
    assert space.params["training.weight_decay"].low == 1e-5 and "model.params.dropout" in space.params


def test_name_from_a_file_name_must_be_a_plain_folder_name(tmp_path: Path) -> None:
    path = write(tmp_path, with_changes(), "my space.yaml")
    with pytest.raises(SpaceError, match=r"my space.yaml: name \(from the file name\): 'my space' is not a plain"):
        load_space(path)


@pytest.mark.parametrize(
    ("num_samples", "time_budget_s", "key"),
    [
        (0, None, "budget.num_samples"),
        (-1, None, "budget.num_samples"),
        (None, 0, "budget.time_budget_s"),
        (None, -5.0, "budget.time_budget_s"),
    ],
)
def test_budget_overrides_are_checked_before_any_trial(
    tmp_path: Path, num_samples: int | None, time_budget_s: float | None, key: str
) -> None:
    """``--num-samples 0/-1`` and ``--time-budget 0`` used to reach Tune unchecked (issue 10.9)."""
    from guitar_cls.tune.sweep import run_sweep

    path = write(tmp_path, MINIMAL, "mini.yaml")
    space = load_space(path)
    with pytest.raises(SpaceError, match=rf"^{path}: {key} \(--"):
        space.with_budget(num_samples, time_budget_s)
    with pytest.raises(SpaceError, match=rf"^{path}: {key} \(--"):  # fails before Ray or any data work
        run_sweep(path, num_samples=num_samples, time_budget_s=time_budget_s, name="never-run")
    assert space.with_budget(3, 60).budget.num_samples == 3 and space.budget.num_samples == 4


def test_refit_is_read_checked_and_turned_off_by_zero(tmp_path: Path) -> None:
    assert load_space(write(tmp_path, MINIMAL, "mini.yaml")).budget.refit_epochs is None
    budget = MINIMAL["budget"]
    refit = with_changes(budget={**budget, "refit_epochs": 30, "refit_patience": 5})
    space = load_space(write(tmp_path, refit, "refit.yaml"))
    assert (space.budget.refit_epochs, space.budget.refit_patience) == (30, 5)
    assert space.with_budget(refit_epochs=0).budget.refit_epochs is None  # --refit-epochs 0: off
    assert space.with_budget(refit_epochs=40).budget.refit_epochs == 40 and space.budget.refit_epochs == 30
    with pytest.raises(SpaceError, match=r"budget.refit_epochs \(--refit-epochs\): must be at least 0"):
        space.with_budget(refit_epochs=-1)
    for bad in ({"refit_epochs": 0}, {"refit_patience": 0}, {"refit_epochs": "long"}):
        with pytest.raises(SpaceError, match=f"budget.{next(iter(bad))}"):
            load_space(write(tmp_path, with_changes(budget={**budget, **bad}), "bad.yaml"))
    assert load_space(SPACES / "arch.yaml").budget.refit_epochs == 30


def test_run_sweep_refuses_a_name_outside_outputs(tmp_path: Path) -> None:
    from guitar_cls.tune.sweep import run_sweep

    with pytest.raises(SpaceError, match=r"--name: '../escape' is not a plain folder name"):
        run_sweep(write(tmp_path, MINIMAL, "mini.yaml"), name="../escape")


def test_space_error_is_a_value_error_and_covers_missing_and_broken_files(tmp_path: Path) -> None:
    assert issubclass(SpaceError, ValueError)
    with pytest.raises(SpaceError, match="not found"):
        load_space(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("params: {a: [1, 2\n")
    with pytest.raises(SpaceError, match="broken.yaml"):
        load_space(broken)


def test_minimal_space_loads_with_defaults(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, MINIMAL, "mini.yaml"))
    assert space.name == "mini"
    assert space.search.algorithm == "tpe" and space.search.seed == 0
    assert list(space.params) == list(MINIMAL["params"])  # file order is kept (conditions refer backwards)
    assert space.params["model.params.blocks"].when == {"model.name": ("resnet",)}
    assert space.constants() == {"training.epochs": 6}


# ---------------------------------------------------------------------------------------------------- define-by-run


def load_minimal(tmp_path: Path, **changes: Any) -> SearchSpace:
    return load_space(write(tmp_path, with_changes(**changes)))


def test_define_by_run_respects_conditions(tmp_path: Path) -> None:
    space = load_minimal(tmp_path)
    trials = sample(space, 30)
    seen = {t["model.name"] for t in trials}
    assert seen == {"resnet", "mobilenet_v3_small"}
    for t in trials:
        if t["model.name"] == "resnet":
            assert "model.params.blocks" in t and "model.params.width_mult" not in t
        else:
            assert "model.params.width_mult" in t and "model.params.blocks" not in t
        assert t["training.batch_size"] in (16, 32, 48, 64)
        assert 1e-4 <= t["training.learning_rate"] <= 3e-3


def test_define_by_run_returns_constants_and_list_choices_round_trip(tmp_path: Path) -> None:
    space = load_minimal(tmp_path)
    fn = DefineByRun(space.params.values(), space.constants())
    trial = optuna.trial.FixedTrial(
        {
            "model.name": "resnet",
            "model.params.blocks": "[2, 2, 2, 2]",
            "training.learning_rate": 1e-3,
            "training.batch_size": 32,
        }
    )
    assert fn(trial) == {"training.epochs": 6}
    # Optuna only holds the JSON string; the override list gets the list back.
    overrides = dict(trial_overrides({**trial.params, **fn(trial)}))
    assert overrides["model.params.blocks"] == [2, 2, 2, 2]
    assert overrides["training.epochs"] == 6
    cfg = trial_config({}, space, {**trial.params, "training.epochs": 6})
    assert cfg.model.params == {"blocks": [2, 2, 2, 2]}


def test_define_by_run_without_constants_returns_none(tmp_path: Path) -> None:
    space = load_minimal(tmp_path)
    fn = DefineByRun(space.params.values())
    params = {"model.name": "mobilenet_v3_small", "model.params.width_mult": 0.6, "training.learning_rate": 1e-3}
    assert fn(optuna.trial.FixedTrial({**params, "training.batch_size": 16})) is None


def test_define_by_run_pickles(tmp_path: Path) -> None:
    space = load_minimal(tmp_path)
    fn = DefineByRun(space.params.values(), space.constants())
    clone = pickle.loads(pickle.dumps(fn))
    assert sample_with(clone, seed=3) == sample_with(fn, seed=3)


def sample_with(fn: DefineByRun, seed: int) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(5):
        trial = study.ask()
        fn(trial)
        study.tell(trial, 0.0)
        out.append(trial.params)
    return out


def test_searcher_pickles_and_runs_points_first(tmp_path: Path) -> None:
    point = {"model.name": "resnet", "model.params.blocks": [1, 1, 1, 1], "training.learning_rate": 5e-4}
    space = load_minimal(tmp_path, search={"algorithm": "tpe", "seed": 1, "points_to_evaluate": [point]})
    plan = make_searcher(space)
    assert plan.param_space == {}
    searcher = pickle.loads(pickle.dumps(plan.search_alg))
    first = searcher.suggest("t0")
    assert first["model.name"] == "resnet"
    assert first["model.params.blocks"] == "[1, 1, 1, 1]"  # encoded for Optuna's categorical
    assert first["training.learning_rate"] == 5e-4
    assert first["training.epochs"] == 6
    assert "model.params.width_mult" not in first
    cfg = trial_config({}, space, first)
    assert cfg.model.params["blocks"] == [1, 1, 1, 1] and cfg.training.learning_rate == 5e-4


def test_random_searcher_is_seeded(tmp_path: Path) -> None:
    space = load_minimal(tmp_path, search={"algorithm": "random", "seed": 7})
    a, b = make_searcher(space).search_alg, make_searcher(space).search_alg
    assert [a.suggest(f"t{i}") for i in range(4)] == [b.suggest(f"t{i}") for i in range(4)]


def test_grid_plan_covers_every_choice(tmp_path: Path) -> None:
    params = {
        "model.params.blocks": {"choice": [[1, 1, 1, 1], [2, 2, 2, 2]]},
        "augmentation.mixup.enabled": {"choice": [True, False]},
        "training.learning_rate": {"loguniform": [1e-4, 1e-3]},
    }
    space = load_minimal(tmp_path, search={"algorithm": "grid"}, params=params)
    plan = make_searcher(space)
    assert plan.param_space["model.params.blocks"] == {"grid_search": ["[1, 1, 1, 1]", "[2, 2, 2, 2]"]}
    assert plan.param_space["augmentation.mixup.enabled"] == {"grid_search": [True, False]}
    assert plan.param_space["training.epochs"] == 6
    assert hasattr(plan.param_space["training.learning_rate"], "sample")  # a Tune domain, sampled per grid point
    # Tune ignores TuneConfig.max_concurrent_trials for a BasicVariantGenerator: the limit must be on the generator.
    assert plan.search_alg.max_concurrent == 0
    assert make_searcher(space, max_concurrent=1).search_alg.max_concurrent == 1


def test_scheduler_has_no_metric(tmp_path: Path) -> None:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    asha = make_scheduler(load_minimal(tmp_path))
    assert isinstance(asha, ASHAScheduler)
    assert asha.metric is None and asha._time_attr == "training_iteration"
    assert [milestone for milestone, _ in asha._brackets[0]._rungs] == [6, 2]  # grace 2, rf 3, max_t 6
    fifo = make_scheduler(load_minimal(tmp_path, scheduler={"type": "fifo"}))
    assert isinstance(fifo, FIFOScheduler)


# ---------------------------------------------------------------------------------------------------- trial configs


def test_trial_overrides_flattens_nested_and_decodes() -> None:
    got = trial_overrides(
        {"model": {"params": {"blocks": "[1, 2, 1, 1]"}}, "training.learning_rate": 1e-3, "model.name": "resnet"}
    )
    assert got == [("model.params.blocks", [1, 2, 1, 1]), ("training.learning_rate", 1e-3), ("model.name", "resnet")]


def test_trial_config_layers_base_data_fixed_params_and_epochs(tmp_path: Path) -> None:
    space = load_minimal(
        tmp_path,
        data={"demo_recordings": 12},
        fixed={"training.early_stopping_patience": 4, "model.params.dropout": 0.2},
    )
    base = {"training": {"batch_size": 8, "weight_decay": 0.01, "epochs": 50}, "model": {"name": "resnet"}}
    cfg = trial_config(
        base,
        space,
        {
            "model.name": "resnet",
            "model.params.blocks": "[2, 2, 2, 2]",
            "training.learning_rate": 2e-3,
            "training.batch_size": 48,
        },
    )
    assert cfg.data.demo_recordings == 12
    assert cfg.training.early_stopping_patience == 4
    assert cfg.training.weight_decay == 0.01  # from the base
    assert cfg.training.batch_size == 48  # the trial beats the base
    assert cfg.training.learning_rate == 2e-3
    assert cfg.training.epochs == 6  # the budget beats the base
    assert cfg.model.params == {"dropout": 0.2, "blocks": [2, 2, 2, 2]}


def test_trial_config_drops_base_model_params_of_another_family(tmp_path: Path) -> None:
    space = load_minimal(tmp_path)
    base = {"model": {"name": "resnet", "params": {"base_width": 64}}}
    cfg = trial_config(base, space, {"model.name": "mobilenet_v3_small", "model.params.width_mult": 0.5})
    assert cfg.model.params == {"width_mult": 0.5}
    kept = trial_config(base, space, {"model.name": "resnet", "model.params.blocks": "[1, 1, 1, 1]"})
    assert kept.model.params == {"base_width": 64, "blocks": [1, 1, 1, 1]}
