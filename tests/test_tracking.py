"""SweepTracker: a gone parent run is replaced (issue 10.7); the champion alias moves only between models of the same
data and splits, by compare-and-set (issue 10.6); what the MLflow UI shows (issue 14): a training experiment, datasets
per split, readable trial runs, a signature and an input example on the registered model and a version description.
A sqlite MLflow store in tmp_path; no Ray, no training."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from guitar_cls import pyfunc, tracking
from guitar_cls.config import load_config
from guitar_cls.tracking import CHAMPION, PARENT_RUN_FILE, SweepTracker

MODEL = "guitar-note-classifier"


@pytest.fixture()
def cfg(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return load_config(None, [("logging.output_dir", str(tmp_path / "outputs"))])


def _tracker(cfg, sweep_dir: Path, data_hash: str = "d" * 64) -> SweepTracker:
    return SweepTracker(cfg, sweep_dir, name=sweep_dir.name, tags={"data_hash": data_hash, "sweep": sweep_dir.name})


@pytest.mark.parametrize("how", ["deleted", "unknown id"])
def test_a_gone_parent_run_starts_a_new_one(cfg, tmp_path, how) -> None:
    sweep_dir = tmp_path / "outputs" / "sweeps" / "s"
    first = _tracker(cfg, sweep_dir)
    if how == "deleted":
        first.client.delete_run(first.run_id)
    else:
        (sweep_dir / PARENT_RUN_FILE).write_text("0123456789abcdef0123456789abcdef")
    second = _tracker(cfg, sweep_dir)
    assert second.run_id != first.run_id
    assert (sweep_dir / PARENT_RUN_FILE).read_text() == second.run_id
    assert second.client.get_run(second.run_id).info.status == "RUNNING"
    again = _tracker(cfg, sweep_dir)  # a live parent run is continued
    assert again.run_id == second.run_id


@pytest.fixture()
def fake_models(monkeypatch):
    """log_pyfunc_model registering an empty model version (no checkpoint, no torch model)."""

    def log_pyfunc_model(checkpoint, name, registered_model_name, splits_csv=None, input_example=None):
        run_id = mlflow.active_run().info.run_id
        client = MlflowClient()
        if not client.search_registered_models(f"name = '{registered_model_name}'"):
            client.create_registered_model(registered_model_name)
        mv = client.create_model_version(registered_model_name, f"runs:/{run_id}/{name}", run_id=run_id)
        return SimpleNamespace(registered_model_version=mv.version, model_uri=f"runs:/{run_id}/{name}")

    monkeypatch.setattr(pyfunc, "log_pyfunc_model", log_pyfunc_model)
    monkeypatch.setattr(tracking, "checkpoint_sample_rate", lambda checkpoint: 22050)


def _splits(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _scores(by_version: dict[str, float], calls: list[str]):
    def evaluate(uri: str) -> float:
        calls.append(uri)
        version = uri.rsplit("/", 1)[1]
        return by_version[version]

    return evaluate


def test_champion_moves_only_between_models_of_the_same_data_and_splits(cfg, tmp_path, fake_models) -> None:
    splits = _splits(tmp_path / "a" / "splits.csv", "row,split\n0,test\n")
    first = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "a").register(
        Path("unused"), _scores({"1": 0.6}, []), splits_csv=splits
    )
    assert first["champion"] and first["version"] == "1" and first["reason"] == "no champion yet"

    # same data and splits: compared on the same test rows; a better model takes the alias
    calls: list[str] = []
    same = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "b").register(
        Path("unused"), _scores({"2": 0.7, "1": 0.6}, calls), splits_csv=splits
    )
    assert same["champion"] and same["previous_champion_balanced_accuracy"] == 0.6
    assert calls == [f"models:/{MODEL}/2", f"models:/{MODEL}/1"]

    # other data: the champion (v2) may have trained on these test rows, so it is not scored and stays
    calls = []
    other = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "c", data_hash="e" * 64).register(
        Path("unused"), _scores({"3": 0.9}, calls), splits_csv=splits
    )
    assert not other["champion"] and calls == [f"models:/{MODEL}/3"]
    assert "data_hash" in other["reason"] and "--promote" in other["reason"]
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "2"
    # other splits file: the same
    other_splits = _splits(tmp_path / "d" / "splits.csv", "row,split\n1,test\n")
    res = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "d").register(
        Path("unused"), _scores({"4": 0.9}, []), splits_csv=other_splits
    )
    assert not res["champion"] and "splits_sha256" in res["reason"]
    # --promote moves it anyway
    res = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "e", data_hash="e" * 64).register(
        Path("unused"), _scores({"5": 0.5}, []), splits_csv=splits, promote=True
    )
    assert res["champion"] and str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "5"
    tags = client.get_model_version(MODEL, "5").tags
    assert tags["data_hash"] == "e" * 64 and tags["splits_sha256"] == tracking.file_sha256(splits)


def test_a_champion_moved_during_the_comparison_is_compared_again(cfg, tmp_path, fake_models) -> None:
    splits = _splits(tmp_path / "splits.csv", "row,split\n0,test\n")
    for sweep_name, score in (("a", 0.5), ("b", 0.4)):  # v1 champion, v2 registered but not champion
        _tracker(cfg, tmp_path / "outputs" / "sweeps" / sweep_name).register(
            Path("unused"), _scores({"1": 0.5, "2": score}, []), splits_csv=splits
        )
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "1"
    client.set_model_version_tag(MODEL, "2", "test_balanced_accuracy", "0.95")
    calls: list[str] = []
    scores = {"3": 0.8, "1": 0.5, "2": 0.95}

    def evaluate(uri: str) -> float:
        calls.append(uri)
        if uri.endswith("/1"):  # another sweep finishes while we score the champion: v2 becomes champion
            client.set_registered_model_alias(MODEL, CHAMPION, "2")
        return scores[uri.rsplit("/", 1)[1]]

    res = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "c").register(Path("unused"), evaluate, splits_csv=splits)
    assert calls == [f"models:/{MODEL}/3", f"models:/{MODEL}/1", f"models:/{MODEL}/2"]
    assert not res["champion"] and res["previous_champion_balanced_accuracy"] == 0.95
    assert str(client.get_model_version_by_alias(MODEL, CHAMPION).version) == "2"  # the better model stays champion


def test_the_experiment_is_a_model_training_experiment(cfg) -> None:
    experiment_id = tracking.configure_mlflow(cfg)
    client = MlflowClient()
    assert client.get_experiment(experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    client.delete_experiment_tag(experiment_id, tracking.EXPERIMENT_KIND_TAG)  # a store from before the tag
    assert tracking.configure_mlflow(cfg) == experiment_id
    assert client.get_experiment(experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"


def _metadata(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    df = pd.DataFrame(
        {
            "source_audio": [f"r{i // 2}.wav" for i in range(6)],
            "onset_sec": [0.1 * i for i in range(6)],
            "label_category": ["harmonic", "dead_note", "general_note"] * 2,
        }
    )
    path = tmp_path / "metadata.csv"
    df.to_csv(path, index=False)
    return df, path


def _inputs(run) -> dict[str, tuple[str, str, int]]:
    """Returns context -> (dataset name, digest, rows) of a run's dataset inputs."""
    import json

    out = {}
    for d in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in d.tags}
        out[tags["mlflow.data.context"]] = (d.dataset.name, d.dataset.digest, json.loads(d.dataset.profile)["num_rows"])
    return out


def test_runs_carry_each_split_as_a_dataset_and_trials_get_readable_names(cfg, tmp_path) -> None:
    df, path = _metadata(tmp_path)
    fingerprint = "f" * 64
    tracker = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "s", data_hash=fingerprint)
    rows = {"train": [0, 1, 2, 3], "val": [4], "test": [5]}
    tracker.log_datasets(df, rows, source=path)
    parent = tracker.client.get_run(tracker.run_id)
    digest = fingerprint[: tracking.DIGEST_CHARS]
    assert _inputs(parent) == {
        "train": ("metadata-train", digest, 4),
        "val": ("metadata-val", digest, 1),
        "test": ("metadata-test", digest, 1),
    }
    assert {t.key: t.value for t in parent.inputs.dataset_inputs[0].tags}["data_hash"] == fingerprint

    callback = tracker.callback(lambda trial_id, config: f"resnet lr={config['lr']} {trial_id}")
    trial = SimpleNamespace(trial_id="abc_00001", config={"lr": 0.002}, last_result={"val/balanced_accuracy": 0.5})
    callback.on_trial_result(1, [], trial, {"val/balanced_accuracy": 0.5, "epoch": 1})
    callback.on_trial_complete(1, [], trial)
    assert tracker.trial_run_ids() == {"abc_00001": callback._runs["abc_00001"]}
    run = tracker.client.get_run(callback._runs["abc_00001"])
    assert run.info.run_name == "resnet lr=0.002 abc_00001"
    assert run.data.tags["mlflow.parentRunId"] == tracker.run_id
    assert set(_inputs(run)) == {"train", "val"}  # the test split scores only the registered champion

    resumed = tracker.callback()  # a resumed sweep continues the run; its inputs are not logged twice
    resumed.on_trial_result(2, [], trial, {"val/balanced_accuracy": 0.6, "epoch": 2})
    assert resumed._runs["abc_00001"] == callback._runs["abc_00001"]
    assert len(tracker.client.get_run(resumed._runs["abc_00001"]).inputs.dataset_inputs) == 2
    resumed.on_trial_result(1, [], trial, {"val/balanced_accuracy": 0.65, "epoch": 2})  # the epoch again, rerun
    curves = tracker.metric_curves(tracker.trial_run_ids(), "val/balanced_accuracy")
    assert curves == {"abc_00001": {2: 0.5, 3: 0.65}}  # epoch + 1, every epoch the run holds, the latest value wins


def test_the_registered_model_has_a_signature_an_input_example_and_a_description(cfg, tmp_path, caplog) -> None:
    from test_predict import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "run" / "checkpoint" / "best.pt", seed=1)
    splits = _splits(tmp_path / "run" / "splits.csv", "source_audio,event_index,split\na.wav,0,test\n")
    tracker = _tracker(cfg, tmp_path / "outputs" / "sweeps" / "sig", data_hash="a" * 64)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        res = tracker.register(
            ckpt.parent,
            lambda uri: 0.75,
            splits_csv=splits,
            test_metrics={"balanced_accuracy": 0.7, "macro_f1": 0.65, "support/harmonic": 3},
        )
    texts = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if "input example" in t.lower()], texts  # neither missing nor failing validation

    version = MlflowClient().get_model_version(MODEL, res["version"])
    info = mlflow.models.get_model_info(f"models:/{MODEL}/{res['version']}")
    inputs = {c.name: c for c in info.signature.inputs.inputs}
    assert set(inputs) == {"path", "onset_sec", "offset_sec", "audio", "sample_rate"}
    assert {c.name: c.type.name for c in info.signature.outputs.inputs} == {
        "prob_harmonic": "double",
        "prob_dead_note": "double",
        "prob_general_note": "double",
        "label": "string",
    }
    assert info.saved_input_example_info is not None
    example = mlflow.models.Model.load(info.model_uri).load_input_example(
        mlflow.artifacts.download_artifacts(info.model_uri)
    )
    assert list(example.columns) == ["audio", "sample_rate"] and example["sample_rate"][0] == 22050
    assert len(example["audio"][0]) == int(tracking.EXAMPLE_SECONDS * 22050)

    text = version.description
    assert "`sig`" in text and "test balanced_accuracy" in text and "0.7500" in text
    assert "macro_f1 0.6500" in text and "support/" not in text
    assert "a" * 64 in text and tracking.file_sha256(splits) in text
    assert "champion: yes (no champion yet)" in text and "--promote" in text


def test_a_job_finds_the_champion_in_the_default_store_without_a_tracking_uri(cfg, tmp_path, monkeypatch) -> None:
    """After the README's first command a job given ``models:/…@champion`` (no $MLFLOW_TRACKING_URI) loads the model
    that sweep registered in ``<cwd>/outputs/mlflow.db``, not MLflow's own default store; a URI set in the process or
    in $MLFLOW_TRACKING_URI is left as it is."""
    from test_predict import tiny_checkpoint

    from guitar_cls.predict import Classifier

    ckpt = tiny_checkpoint(tmp_path / "run" / "checkpoint" / "best.pt", seed=1)
    splits = _splits(tmp_path / "run" / "splits.csv", "source_audio,event_index,split\na.wav,0,test\n")
    _tracker(cfg, tmp_path / "outputs" / "sweeps" / "s").register(ckpt.parent, lambda uri: 0.75, splits_csv=splits)

    # a fresh job process: nothing set, started in the folder the sweep ran in
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setattr(mlflow.tracking._model_registry.utils, "_registry_uri", None)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # mlflow.set_tracking_uri exports the first
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    clf = Classifier.load(f"models:/{MODEL}@{CHAMPION}")
    store = f"sqlite:///{(tmp_path / 'outputs' / 'mlflow.db').resolve()}"
    assert mlflow.get_tracking_uri() == store and mlflow.get_registry_uri() == store
    assert not (tmp_path / "mlflow.db").exists()  # MLflow's own default would have been created here
    assert clf.model.stages[0][0].conv1.out_channels == 4  # the tiny checkpoint's resnet (base width 4)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'other.db'}")  # set in the process: kept
    assert tracking.use_default_store() == f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'env.db'}")  # named by the environment: kept
    assert tracking.use_default_store() == f"sqlite:///{tmp_path / 'env.db'}"
