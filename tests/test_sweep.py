"""Sweep start-up checks (issue 10.7): a used name needs --resume or a new --name; --resume refuses changed data.
Both are decided before any Ray or data work. Trial run names (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from procs import stop_group

from guitar_cls.data.pipeline import _free_port
from guitar_cls.tune import sweep
from guitar_cls.tune.record import SWEEP_START
from guitar_cls.tune.space import load_space, space_from_dict
from guitar_cls.tune.sweep import SweepDataChanged, SweepNameInUse, run_sweep, trial_run_name

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


class Started(Exception):
    """Raised where the sweep would start Ray: the start-up checks passed."""


@pytest.fixture()
def no_work(monkeypatch):
    def boom(*a, **k):
        raise Started

    monkeypatch.setattr(sweep, "init_ray", boom)
    monkeypatch.setattr(sweep, "prepare_data", boom)


def _overrides(tmp_path: Path, demo: Path) -> list[tuple[str, object]]:
    return [
        ("logging.output_dir", str(tmp_path / "outputs")),
        ("data.metadata", str(demo)),
        ("data.audio_root", str(demo.parent)),
        ("data.cache_dir", str(tmp_path / "cache")),
    ]


@pytest.mark.parametrize("left", ["mlflow_parent_run_id", "summary.json", "tune experiment"])
def test_a_used_name_without_resume_is_an_error_naming_resume_and_name(tmp_path, tiny_demo, no_work, left) -> None:
    overrides = _overrides(tmp_path, tiny_demo)
    if left == "tune experiment":
        (tmp_path / "outputs" / "ray_results" / "taken").mkdir(parents=True)
    else:
        (tmp_path / "outputs" / "sweeps" / "taken").mkdir(parents=True)
        (tmp_path / "outputs" / "sweeps" / "taken" / left).write_text("x")
    with pytest.raises(SweepNameInUse, match=r"'taken' is already used.*--resume.*--name"):
        run_sweep(SMOKE, overrides=overrides, name="taken")
    with pytest.raises(Started):  # a fresh name starts
        run_sweep(SMOKE, overrides=overrides, name="fresh")


def test_resume_refuses_changed_data_or_splits(tmp_path, tiny_demo, no_work) -> None:
    from guitar_cls.data.pipeline import metadata_fingerprint
    from guitar_cls.data.schema import read_metadata

    overrides = _overrides(tmp_path, tiny_demo)
    sweep_dir = tmp_path / "outputs" / "sweeps" / "again"
    sweep_dir.mkdir(parents=True)
    record = {"name": "again", "data_fingerprint": "0" * 64}
    (sweep_dir / SWEEP_START).write_text(json.dumps(record))
    with pytest.raises(SweepDataChanged, match=r"--resume.*'again'.*data fingerprint 000000000000.*--name"):
        run_sweep(SMOKE, overrides=overrides, name="again", resume=True)

    record["data_fingerprint"] = metadata_fingerprint(read_metadata(tiny_demo))
    (sweep_dir / SWEEP_START).write_text(json.dumps(record))
    with pytest.raises(Started):  # the same data resumes
        run_sweep(SMOKE, overrides=overrides, name="again", resume=True)
    with pytest.raises(SweepDataChanged, match="splits settings"):
        record["splits"] = {"train": 0.5, "val": 0.25, "test": 0.25, "seed": 7, "group_by": "source_audio"}
        (sweep_dir / SWEEP_START).write_text(json.dumps(record))
        run_sweep(SMOKE, overrides=overrides, name="again", resume=True)


def test_trial_run_names_show_the_family_and_the_searched_params() -> None:
    smoke = load_space(SMOKE)  # the family is fixed by the space
    params = {"training.learning_rate": 0.0021234, "model.params.dropout": 0.2456}
    name = trial_run_name(smoke, "efficientnet_b0", "a1b2c_00001", params)
    assert name == "resnet lr=0.0021 dropout=0.25 a1b2c_00001"
    space = space_from_dict(
        {
            "metric": "val/macro_f1",
            "mode": "max",
            "search": {"algorithm": "random"},
            "budget": {"num_samples": 2, "max_epochs": 1},
            "params": {
                "model.name": {"choice": ["resnet", "mobilenet_v3_small"]},
                "model.params.blocks": {"choice": [[1, 1], [2, 2]], "when": {"model.name": ["resnet"]}},
                "training.batch_size": {"int": [16, 64]},
            },
        }
    )
    searched = {"model": {"name": "mobilenet_v3_small"}, "training/batch_size": 32}  # Ray nests some keys
    assert trial_run_name(space, "resnet", "x_00002", searched) == "mobilenet_v3_small bs=32 x_00002"
    searched = {"model.name": "resnet", "model.params.blocks": "[1, 1]", "training.batch_size": 16}
    assert trial_run_name(space, "resnet", "x_00003", searched) == "resnet blocks=[1,1] bs=16 x_00003"


# ------------------------------------------------------------------------------------------------ after a real sweep
# Called by the smoke sweeps of test_jobs.py (their run is the expensive part: no sweep of its own here).


def check_sweep_is_browsable(output_dir: Path, name: str) -> None:
    """Asserts what a finished sweep ``name`` under ``output_dir`` shows in MLflow and Optuna (issue 14): a training
    experiment, datasets on the parent and trial runs, readable trial run names, a signature, an input example and a
    description on the registered version, and an Optuna study of the sweep's trials with per-epoch values."""
    import mlflow
    import optuna
    from mlflow.tracking import MlflowClient

    from guitar_cls.tracking import EXPERIMENT_KIND_TAG, TRAINING_KIND
    from guitar_cls.tune.record import PARENT_RUN_FILE, SweepRecord

    sweep_dir = output_dir / "sweeps" / name
    record = SweepRecord.read(sweep_dir)
    uri = f"sqlite:///{output_dir / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    parent = client.get_run((sweep_dir / PARENT_RUN_FILE).read_text().strip())
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND

    def contexts(run) -> set[str]:
        return {t.value for d in run.inputs.dataset_inputs for t in d.tags if t.key == "mlflow.data.context"}

    assert contexts(parent) == {"train", "val", "test"}
    assert {d.dataset.digest for d in parent.inputs.dataset_inputs} == {parent.data.tags["data_hash"][:36]}
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == len(record.trials) > 0
    for run in children:
        assert contexts(run) == {"train", "val"}
        assert run.info.run_name.startswith("resnet lr=") and run.data.tags["trial_id"] in run.info.run_name

    registration = json.loads((sweep_dir / "summary.json").read_text())["registration"]
    version = client.get_model_version(registration["model"], registration["version"])
    # the logged model behind the version, read from its folder (no global MLflow URI to set and restore)
    logged = client.get_logged_model(version.source.removeprefix("models:/"))
    info = mlflow.models.Model.load(Path(logged.artifact_location.removeprefix("file://")) / "MLmodel")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert {c.name for c in info.signature.outputs.inputs} >= {"label", "prob_harmonic"}
    description = version.description
    assert f"`{name}`" in description and parent.data.tags["data_hash"] in description

    study = optuna.load_study(storage=f"sqlite:///{output_dir / 'optuna.db'}", study_name=name)
    assert len(study.trials) == len(record.trials)
    run_ids = {run.info.run_id for run in children}
    epochs = {t.trial_id: t.epochs for t in record.trials}
    for trial in study.trials:
        assert trial.user_attrs["mlflow_run_id"] in run_ids
        assert sorted(trial.intermediate_values) == list(range(1, epochs[trial.user_attrs["tune_trial_id"]] + 1))
    assert study.best_value == record.best_trial().best


def _serve(cmd: list[str], url: str, timeout: float = 120):
    """Starts ``cmd`` (a server on 127.0.0.1) and returns the process once ``url`` answers."""
    import subprocess
    import time
    import urllib.request

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{cmd} exited {proc.returncode}: {proc.stderr.read()[-3000:]!r}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return proc
        except OSError:
            time.sleep(1)
    stop_group(proc, grace_s=20)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _json(url: str, body: dict | None = None) -> dict:
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def check_ui_servers(output_dir: Path, name: str) -> None:
    """Asserts that ``mlflow ui`` and ``optuna-dashboard`` on 127.0.0.1 serve the sweep as their pages load it.

    Playwright's Chromium is a browser download of its own, which this workplace cannot fetch (pip alone gives no
    browser), so the MLflow runs page is checked through the REST calls it makes (``ajax-api`` experiments/get and
    runs/search): the nested trial runs and their datasets; the Optuna dashboard through its ``/api/studies``.
    """
    import sys
    import urllib.request

    from guitar_cls.tune.record import PARENT_RUN_FILE

    bin_dir = Path(sys.executable).parent
    db = output_dir / "mlflow.db"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    cmd = [str(bin_dir / "mlflow"), "ui", "--backend-store-uri", f"sqlite:///{db}", "--host", "127.0.0.1"]
    proc = _serve([*cmd, "--port", str(port), "--workers", "1"], f"{base}/health")
    try:
        with urllib.request.urlopen(f"{base}/", timeout=30) as resp:  # the single-page app itself
            assert resp.status == 200 and b"<html" in resp.read().lower()
        parent_id = (output_dir / "sweeps" / name / PARENT_RUN_FILE).read_text().strip()
        parent = _json(f"{base}/ajax-api/2.0/mlflow/runs/get?run_id={parent_id}")["run"]
        experiment_id = parent["info"]["experiment_id"]
        experiment = _json(f"{base}/ajax-api/2.0/mlflow/experiments/get?experiment_id={experiment_id}")["experiment"]
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
        runs = _json(
            f"{base}/ajax-api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment_id], "max_results": 100, "order_by": ["attributes.start_time DESC"]},
        )["runs"]
        by_id = {r["info"]["run_id"]: r for r in runs}
        nested = [r for r in runs if {"key": "mlflow.parentRunId", "value": parent_id} in r["data"]["tags"]]
        assert parent_id in by_id and nested
        for run in [by_id[parent_id], *nested]:
            datasets = run["inputs"]["dataset_inputs"]
            assert datasets and all(d["dataset"]["name"].endswith(("-train", "-val", "-test")) for d in datasets)
    finally:
        stop_group(proc, grace_s=20)

    port = _free_port()
    cmd = [str(bin_dir / "optuna-dashboard"), f"sqlite:///{output_dir / 'optuna.db'}", "--host", "127.0.0.1"]
    proc = _serve([*cmd, "--port", str(port), "--quiet"], f"http://127.0.0.1:{port}/api/meta")
    try:
        studies = _json(f"http://127.0.0.1:{port}/api/studies")["study_summaries"]
        study = next(s for s in studies if s["study_name"] == name)
        detail = _json(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}")
        assert detail["trials"] and detail["has_intermediate_values"]
    finally:
        stop_group(proc, grace_s=20)


def test_the_resource_plan_fits_workers_on_nodes_not_on_the_cluster_total() -> None:
    """Trial drivers reserve no CPU, so a trial fits on one node; a worker never asks for more CPUs than a node has."""
    from guitar_cls.train.resources import DRIVER_RESOURCES, ResourcePlan, plan_resources

    assert DRIVER_RESOURCES["CPU"] == 0 and DRIVER_RESOURCES["memory"] > 0
    two_nodes = [{"CPU": 1.0, "memory": 4e9}, {"CPU": 1.0, "memory": 4e9}]  # tests/test_cluster.py's cluster
    assert plan_resources(1, two_nodes) == ResourcePlan(False, 1, 1, 2)  # one trial per node
    assert plan_resources(2, two_nodes) == ResourcePlan(False, 1, 1, 1)  # one DDP rank per node
    assert plan_resources(1, [{"CPU": 2.0}]) == ResourcePlan(False, 2, 2, 1)  # a 2-CPU laptop
    assert plan_resources(1, [{"CPU": 16.0}]) == ResourcePlan(False, 4, 4, 4)
    gpu = [{"CPU": 8.0}, {"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}]  # deploy/: CPU head, 1-GPU workers
    assert plan_resources(1, gpu) == ResourcePlan(True, 8, 8, 2)
    assert plan_resources(2, gpu) == ResourcePlan(True, 8, 8, 1)


def test_a_failed_refit_keeps_the_trial_and_a_refit_trains_the_trials_own_config(tmp_path, monkeypatch) -> None:
    """The refit trains the picked trial's checkpointed configuration for ``refit_epochs``; when that training fails,
    the sweep keeps the trial's checkpoint (tested and registered) instead of losing the search."""
    from test_predict import tiny_checkpoint

    from guitar_cls.config import load_config
    from guitar_cls.tune.record import TrialRecord

    space = load_space(SMOKE).with_budget(refit_epochs=5)
    setup = sweep._Setup(space, "smoke", load_config(None), tmp_path / "sweeps" / "smoke", str(tmp_path), False)
    checkpoint = tiny_checkpoint(tmp_path / "trial" / "best.pt")
    best = TrialRecord("t1", "TERMINATED", "completed", 2, 0.6, 0.6, None, str(checkpoint.parent))
    asked = {}

    def failing(cfg, data, name, out_dir, loop_extra):
        asked.update(cfg=cfg, name=name, out_dir=out_dir, loop_extra=loop_extra)
        raise RuntimeError("worker died")

    monkeypatch.setattr(sweep, "run_trainer", failing)
    out = sweep._try_refit(setup, None, None, best, checkpoint)
    assert out == {"trial_id": "t1", "epochs": 5, "used": False, "error": "worker died"}
    assert asked["cfg"].training.epochs == 5 and asked["cfg"].training.early_stopping_patience == 10
    assert asked["cfg"].model.params == {"base_width": 4, "blocks": [1, 1, 1, 1]}  # the trial's own model
    assert asked["name"] == "smoke-refit-t1" and asked["out_dir"] == setup.sweep_dir / "refit" / "t1"
    assert asked["loop_extra"] == {"metric": "val/balanced_accuracy", "mode": "max"}


def test_a_refit_of_three_members_trains_three_seeds_and_scores_the_mean_of_their_probabilities(tmp_path, monkeypatch):
    """``budget.refit_members: 3``: the trial's configuration trains three times, training seeds 42 / 43 / 44, the
    first where a single refit goes; its validation value is that of the mean of the three models' probabilities,
    not any one member's, and ``used`` compares that value with the trial's."""
    import numpy as np
    from test_loop import _toy_set
    from test_predict import tiny_checkpoint

    from guitar_cls.config import load_config
    from guitar_cls.ensemble import combine
    from guitar_cls.inference import predict_proba
    from guitar_cls.train.checkpoint import load_model
    from guitar_cls.train.metrics import classification_metrics
    from guitar_cls.tune.record import TrialRecord

    space = load_space(SMOKE).with_budget(refit_epochs=5, refit_members=3)
    setup = sweep._Setup(space, "smoke", load_config(None), tmp_path / "sweeps" / "smoke", str(tmp_path), False)
    trial = tiny_checkpoint(tmp_path / "trial" / "best.pt")
    val = _toy_set(12, seed=3)
    asked = []

    class Result:
        def __init__(self, value):
            self.metrics = {"best/val/balanced_accuracy": value, "epoch": 4}

    def trainer(cfg, data, name, out_dir, loop_extra):  # a different model per seed, as training would give
        asked.append((cfg.training.seed, cfg.training.epochs, name, out_dir))
        path = tiny_checkpoint(out_dir / "checkpoint" / "best.pt", seed=cfg.training.seed)
        return path, Result(0.1 * len(asked)), 1.0

    class Data:
        def snippet_set(self, split):
            assert split == "val"  # validation picks; the test split stays untouched
            return val

    class Tracker:
        def log_metrics(self, metrics):
            self.logged = metrics

    monkeypatch.setattr(sweep, "run_trainer", trainer)
    best = TrialRecord("t1", "TERMINATED", "completed", 2, 0.0, 0.0, None, str(trial.parent))
    out = sweep._refit(setup, Data(), Tracker(), best, trial)
    refit_dir = setup.sweep_dir / "refit" / "t1"
    assert asked == [
        (42, 5, "smoke-refit-t1", refit_dir),
        (43, 5, "smoke-refit-t1-seed43", refit_dir / "seed-43"),
        (44, 5, "smoke-refit-t1-seed44", refit_dir / "seed-44"),
    ]
    paths = [
        refit_dir / "checkpoint" / "best.pt",
        *(refit_dir / f"seed-{s}" / "checkpoint" / "best.pt" for s in (43, 44)),
    ]
    assert out["checkpoints"] == [str(p) for p in paths] and out["checkpoint"] == str(paths[0])
    assert [m["seed"] for m in out["members"]] == [42, 43, 44]
    assert [m["val/balanced_accuracy"] for m in out["members"]] == pytest.approx([0.1, 0.2, 0.3])
    probs = []
    for path in paths:
        model, frontend, _ = load_model(path)
        probs.append(predict_proba(model, frontend, val, batch_size=32))
    assert not np.allclose(probs[0], probs[1])  # three different models
    mean = classification_metrics(val.labels, combine(np.stack(probs), np.ones(3)))["balanced_accuracy"]
    assert out["val/balanced_accuracy"] == pytest.approx(mean)
    assert out["used"] == (mean > 0.0) and out["trial_val/balanced_accuracy"] == 0.0


def test_refit_members_need_a_metric_the_mean_of_probabilities_gives(tmp_path) -> None:
    """Several refit members are scored by the mean of their probabilities: a space ranked by a metric that mean
    cannot give (the validation loss) is refused when it is loaded, naming the key."""
    from guitar_cls.tune.space import SpaceError

    text = SMOKE.read_text()
    assert load_space(SMOKE).with_budget(refit_members=2).budget.refit_members == 2
    bad = tmp_path / "loss.yaml"
    bad.write_text(text.replace("metric: val/balanced_accuracy", "metric: val/loss").replace("mode: max", "mode: min"))
    space = load_space(bad)
    with pytest.raises(SpaceError, match=r"budget.refit_members \(--refit-members\): 2 members .* not val/loss"):
        space.with_budget(refit_members=2)
    bad.write_text(bad.read_text().replace("budget:\n", "budget:\n  refit_members: 3\n"))
    with pytest.raises(SpaceError, match=r"loss.yaml: budget.refit_members: 3 members"):
        load_space(bad)
    with pytest.raises(SpaceError, match=r"budget.refit_members \(--refit-members\): at most 10"):
        load_space(SMOKE).with_budget(refit_members=11)
