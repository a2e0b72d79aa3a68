"""Sweep ensembles: Caruana's greedy selection on hand-made probabilities, the mean/logit combination, and the job end
to end on a fake finished sweep (3 tiny random-weight checkpoints, the tiny demo set, a sqlite MLflow store): a
registered pyfunc version that predicts on a WAV path, taking ``champion`` only by the registry's rule."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from test_predict import tiny_checkpoint

from guitar_cls.ensemble import combine, greedy_weights
from guitar_cls.predict import PROB_COLUMNS, Classifier, EnsembleClassifier, MemberMean

# Three rows, true classes 0, 1, 2. A is right on rows 0 and 2, B on rows 1 and 2, C on none. A + B averaged is wrong
# on row 0 (B is too sure of class 1 there); 2 A + B is right everywhere.
Y = np.array([0, 1, 2])
A = [[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.0, 0.0, 1.0]]
B = [[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
C = [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def test_greedy_selection_picks_with_replacement_and_leaves_out_a_useless_member() -> None:
    weights = greedy_weights(np.array([A, B, C]), Y, rounds=6)
    np.testing.assert_allclose(weights, [2 / 3, 1 / 3, 0.0])
    probs = combine(np.array([A, B, C]), weights)
    assert (probs.argmax(axis=1) == Y).all()  # the selection is perfect where every single member is not


def test_greedy_selection_keeps_the_shortest_best_prefix() -> None:
    same = np.array([A, A, A])  # nothing beats the first pick: one member, the best-ranked one
    np.testing.assert_allclose(greedy_weights(same, Y, rounds=6), [1.0, 0.0, 0.0])
    lower_is_better = greedy_weights(np.array([C, A]), Y, metric="accuracy", mode="min", rounds=6)
    np.testing.assert_allclose(lower_is_better, [1.0, 0.0])  # mode min: C, the worst, is "best"


def test_mean_and_logit_combination() -> None:
    p = np.array([A, B])
    np.testing.assert_allclose(combine(p, [3, 1], "mean"), 0.75 * np.array(A) + 0.25 * np.array(B))
    np.testing.assert_allclose(combine(p, [1, 0], "logit"), np.array(A), atol=1e-6)  # weight 0: no effect
    geo = np.array(A) ** 0.5 * np.array(B) ** 0.5
    logit = combine(p, [1, 1], "logit")
    assert np.isfinite(logit).all()  # exact zeros are floored, not -inf
    np.testing.assert_allclose(logit.sum(axis=1), 1.0)
    np.testing.assert_allclose(logit[2], [0.0, 0.0, 1.0], atol=1e-6)
    assert logit[1].argmax() == geo[1].argmax() == 1
    with pytest.raises(ValueError, match="unsupported ensemble rule"):
        combine(p, [1, 1], "median")
    with pytest.raises(ValueError, match="non-negative"):
        combine(p, [1, -1], "mean")


@pytest.fixture()
def fake_sweep(tmp_path: Path, tiny_demo: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A finished sweep of 3 trials (tiny random-weight checkpoints) on the tiny demo set whose best trial is the
    registered champion (v1), as ``run_sweep`` leaves it."""
    from guitar_cls.config import load_config
    from guitar_cls.data.schema import read_metadata
    from guitar_cls.data.splits import make_splits, save_splits
    from guitar_cls.ensemble import sweep_events
    from guitar_cls.pyfunc import score_model
    from guitar_cls.tracking import DATA_TAG, SweepTracker
    from guitar_cls.tune.record import SPLITS_FILE, SweepRecord, TrialRecord

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # the tracker points MLflow's process-wide URIs at this store: tests/conftest.py puts them back after the test
    out = tmp_path / "outputs"
    sweep_dir = out / "sweeps" / "ens"
    trials = []
    for i, (tid, best) in enumerate([("t0", 0.9), ("t1", 0.8), ("t2", 0.7)]):
        folder = out / "ray_results" / f"train-{tid}" / "checkpoint_000000"
        tiny_checkpoint(folder / "best.pt", seed=10 + i)
        trials.append(TrialRecord(tid, "TERMINATED", "completed", 1, best, best, 1.0, str(folder), {}))
    df = read_metadata(tiny_demo)
    sweep_dir.mkdir(parents=True)
    save_splits(df, make_splits(df, seed=2), sweep_dir / SPLITS_FILE)
    summary = {"metadata": str(tiny_demo), "audio_root": str(tiny_demo.parent)}
    record = SweepRecord("ens", "val/balanced_accuracy", "max", 1, trials, summary)
    record.write(sweep_dir)
    events = sweep_events(sweep_dir, summary)
    cfg = load_config(None, [("logging.output_dir", str(out))])
    tracker = SweepTracker(cfg, sweep_dir, name="ens", tags={DATA_TAG: events.fingerprint, "sweep": "ens"})
    champion = tracker.register(
        trials[0].checkpoint,
        lambda uri: score_model(uri, events.test, events.y_test),
        sweep_dir / SPLITS_FILE,
        metric=record.test_metric,
    )
    tracker.finish()
    assert champion["version"] == "1" and champion["champion"]
    yield {"out": out, "sweep_dir": sweep_dir, "tracker": tracker, "cfg": cfg, "demo": tiny_demo.parent}


@pytest.mark.slow
def test_job_registers_an_ensemble_that_predicts_on_a_wav_path(fake_sweep: dict, capsys) -> None:
    import importlib.util

    from guitar_cls.tracking import CHAMPION, DATA_TAG, SPLITS_TAG

    spec = importlib.util.spec_from_file_location("ensemble_job", Path(__file__).parents[1] / "jobs" / "ensemble.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    job.main(["--sweep", "ens", "--top", "3", "--method", "mean", "--output-dir", str(fake_sweep["out"])])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((fake_sweep["sweep_dir"] / "ensemble.json").read_text())
    assert line["ensemble"] == "top-3 mean" and line["version"] == saved["registration"]["version"] == "2"
    best = saved["best_member_test"]["balanced_accuracy"]
    assert line["best_member_test_balanced_accuracy"] == best  # printed beside the ensemble's
    assert saved["gain"] == pytest.approx(saved["test"]["balanced_accuracy"] - best)
    assert saved["latency_ms"] > 0 and saved["best_member_latency_ms"] > 0
    assert [m["trial_id"] for m in saved["members"]] == ["t0", "t1", "t2"]

    # the same rule as any version: same lineage, so compared with v1 on the same test rows, not worse -> champion
    tracker, reg = fake_sweep["tracker"], saved["registration"]
    client, name = tracker.client, reg["model"]
    v1, v2 = client.get_model_version(name, "1"), client.get_model_version(name, "2")
    assert {k: v2.tags[k] for k in (DATA_TAG, SPLITS_TAG)} == {k: v1.tags[k] for k in (DATA_TAG, SPLITS_TAG)}
    assert reg["reason"].startswith("champion v1 scores")
    assert reg["champion"] == (reg["test_balanced_accuracy"] >= reg["previous_champion_balanced_accuracy"])
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == ("2" if reg["champion"] else "1")
    assert v2.description.startswith("Ensemble top-3 mean of the sweep's trials t0")

    # logged into a nested run "ensemble top-3 mean" of the sweep's parent run
    run = client.get_run(v2.run_id)
    assert run.info.run_name == "ensemble top-3 mean" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == tracker.run_id
    assert run.data.metrics["test/balanced_accuracy"] == pytest.approx(saved["test"]["balanced_accuracy"])

    # the sweep report's section, read from ensemble.json
    from types import SimpleNamespace

    from guitar_cls.report.markdown import ensemble_section

    text = "\n".join(ensemble_section(SimpleNamespace(sweep_dir=fake_sweep["sweep_dir"])))
    assert text.startswith("## Ensemble") and f"{saved['gain']:+.4f} over the best member" in text
    assert f"v2; champion: {'yes' if reg['champion'] else 'no'}" in text
    assert ensemble_section(SimpleNamespace(sweep_dir=fake_sweep["out"])) == []  # no ensemble: no section

    # raw audio in through mlflow.pyfunc: a WAV path, the same columns as a single model, the members' mean
    wav = sorted(fake_sweep["demo"].rglob("*.wav"))[0]
    model = mlflow.pyfunc.load_model(f"models:/{name}/2", model_config={"audio_root": str(fake_sweep["demo"])})
    pred = model.predict(pd.DataFrame({"path": [str(wav)], "onset_sec": [0.5], "offset_sec": [1.0]}))
    assert list(pred.columns) == [*PROB_COLUMNS, "label"]
    members = np.stack([Classifier.load(m["checkpoint"]).classify_files([wav], [0.5], [1.0]) for m in saved["members"]])
    np.testing.assert_allclose(pred[list(PROB_COLUMNS)].to_numpy(), members.mean(axis=0), atol=1e-5)

    # and like one model through Classifier.load (evaluate, predict, review): combined, and (one front end) one network
    clf = Classifier.load(f"models:/{name}/2")
    assert isinstance(clf, EnsembleClassifier) and len(clf.members) == len(saved["members"])
    np.testing.assert_allclose(clf.classify_files([wav], [0.5], [1.0]), members.mean(axis=0), atol=1e-5)
    assert isinstance(clf.model, MemberMean) and len(clf.model.members) == len(saved["members"])


def test_members_of_one_front_end_are_one_network_that_exports_and_others_are_not(tmp_path: Path) -> None:
    """An ensemble whose members share their data and feature settings (a sweep's refit seeds) is one network: the
    softmax of ``MemberMean`` is ``combine`` of the members' probabilities, by either rule and with unequal weights,
    and it exports to ONNX with the front end inside. Members of other feature settings have no single network."""
    import torch

    from guitar_cls.config import config_from_dict
    from guitar_cls.export import example_waves, export_model

    a, b = (Classifier.load(tiny_checkpoint(tmp_path / f"{i}.pt", seed=i)) for i in (1, 2))
    wave, lengths = example_waves(a.cfg, (0.3, 1.0, 2.0))
    with torch.no_grad():
        feats, frames = a.frontend(wave, lengths)
        probs = np.stack([torch.softmax(m.model(feats, frames), dim=-1).numpy() for m in (a, b)])
        assert np.abs(probs[0] - probs[1]).max() > 0.1  # two different models
        for rule in ("mean", "logit"):
            ens = EnsembleClassifier([a, b], [2.0, 1.0], rule)
            assert isinstance(ens.model, MemberMean) and ens.frontend is a.frontend
            got = torch.softmax(ens.model(feats, frames), dim=-1).numpy()
            np.testing.assert_allclose(got, combine(probs, [2.0, 1.0], rule), atol=1e-5)
    ens = EnsembleClassifier([a, b], [1.0, 1.0], "mean")
    for snippet in (False, True):  # the batch graph and the one-snippet graph (latency's onnx_ms)
        out = export_model(ens, tmp_path / f"ens-{snippet}.onnx", include_frontend=True, snippet=snippet)
        assert out["max_abs_diff_probabilities"] < 1e-4 and out["variant"] == ("snippet" if snippet else "waveform")

    cfg = config_from_dict({"model": {"name": "resnet", "params": {"base_width": 4, "blocks": [1, 1, 1, 1]}},
                            "features": {"n_mels": 64}})  # fmt: skip
    other = EnsembleClassifier([a, Classifier.from_config(cfg)], [1.0, 1.0], "mean")
    with pytest.raises(TypeError, match="different data or feature settings has no single model"):
        _ = other.model
