"""End-to-end: the jobs run for real (local Ray with the dashboard, sqlite MLflow, real WAV files)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("RAY_ADDRESS", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_TRAIN_V2_ENABLED"] = "1"
    env["RAY_AUTH_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _sets(tmp: Path, demo: Path) -> list[str]:
    return [
        "--set",
        f"logging.output_dir={tmp / 'outputs'}",
        "--set",
        f"data.demo_dir={demo}",
        "--set",
        f"data.cache_dir={tmp / 'cache'}",
    ]


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"no JSON line in output:\n{stdout[-3000:]}")


def _run(cmd: list[str], tmp: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(tmp), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stderr[-6000:]}\n{proc.stdout[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def smoke_demo(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-smoke")


def test_train_smoke_job_prints_test_metrics_and_a_loadable_checkpoint(tmp_path, smoke_demo):
    proc = _run([sys.executable, "jobs/train.py", "--smoke-test", *_sets(tmp_path, smoke_demo)], tmp_path, 600)
    line = _last_json(proc.stdout)
    assert 0.0 <= line["test/balanced_accuracy"] <= 1.0
    assert set(line) >= {"checkpoint", "test/f1/harmonic", "test/f1/dead_note", "test/f1/general_note"}
    from guitar_cls.train.checkpoint import load_model

    model, frontend, cfg = load_model(line["checkpoint"])
    assert cfg.model.params["base_width"] == 8 and frontend.in_channels == 1


def _finished_trials(storage: Path, name: str) -> list[Path]:
    """Returns the result.json of every trial Tune's saved experiment state lists as TERMINATED."""
    done = []
    for state_file in (storage / name).glob("experiment_state-*.json"):
        try:
            trials = [json.loads(t[0]) for t in json.loads(state_file.read_text())["trial_data"]]
        except (OSError, ValueError, KeyError):  # being rewritten right now
            continue
        for t in trials:
            if t.get("status") == "TERMINATED":
                done.append(storage / name / t["relative_logdir"] / "result.json")
    return done


def test_sweep_interrupted_then_resumed_keeps_finished_trials_and_registers_a_champion(tmp_path, smoke_demo):
    cmd = [sys.executable, "jobs/sweep.py", "--smoke-test", "--name", "smoke-resume", *_sets(tmp_path, smoke_demo)]
    storage = tmp_path / "outputs" / "ray_results"
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 420
    try:
        while time.time() < deadline and proc.poll() is None and not _finished_trials(storage, "smoke-resume"):
            time.sleep(1)
        assert proc.poll() is None, f"sweep ended before it could be interrupted:\n{proc.stdout.read()[-4000:]}"
        first = _finished_trials(storage, "smoke-resume")
        assert first, "no trial finished in time"
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C to the driver: Tune saves the experiment state and stops
        proc.wait(timeout=120)
        assert proc.returncode == 130, proc.stdout.read()[-4000:]  # interrupted: nothing registered
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    finished_before = {p.parent.name: p.read_text() for p in first}
    assert all(text.count("\n") == 2 for text in finished_before.values())  # 2 epochs each

    resumed = _run([*cmd, "--resume"], tmp_path, 600)
    summary = _last_json(resumed.stdout)
    assert summary["trials"] == 2 and summary["errors"] == 0
    for trial_dir, text in finished_before.items():  # finished trials are kept, not run again
        assert (storage / "smoke-resume" / trial_dir / "result.json").read_text() == text
    reg = summary["registration"]
    assert reg["champion"] is True and reg["version"] == "1"
    import test_sweep  # what the MLflow UI and optuna-dashboard show of it (issue 14), checked on this sweep's store

    test_sweep.check_sweep_is_browsable(tmp_path / "outputs", "smoke-resume")
    test_sweep.check_ui_servers(tmp_path / "outputs", "smoke-resume")

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}")
    wav = sorted(smoke_demo.rglob("*.wav"))[0]
    # the served model reads files only under the folder its operator allows
    model = mlflow.pyfunc.load_model(
        "models:/guitar-note-classifier@champion", model_config={"audio_root": str(wav.parent)}
    )
    out = model.predict(__import__("pandas").DataFrame({"path": [str(wav)], "onset_sec": [0.1], "offset_sec": [0.9]}))
    assert out.shape[0] == 1 and out["label"][0] in ("harmonic", "dead_note", "general_note")
    probs = out[["prob_harmonic", "prob_dead_note", "prob_general_note"]].to_numpy()
    assert abs(probs.sum() - 1) < 1e-4


def _kill_cluster(marker: str) -> None:
    """Kills the processes whose command lines name the cluster's temp dir, then removes the dir."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(3)
    shutil.rmtree(marker, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_registered_champion(outputs: Path, name: str) -> None:
    """Checks that sweep ``name`` (under ``outputs``) registered version 1 as champion, and that its
    ``test_balanced_accuracy`` tag is the pyfunc model's score on the sweep's test split, recomputed here on the raw
    audio (not merely some number). Used by the job-submission test in tests/test_cluster.py."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{outputs / 'mlflow.db'}"
    version = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version_by_alias(
        "guitar-note-classifier", "champion"
    )
    assert str(version.version) == "1"
    # the tag is the registered model's balanced accuracy on the sweep's test split, recomputed here through the
    # pyfunc model on the raw audio (not merely some number)
    import mlflow
    import pandas as pd
    from sklearn.metrics import balanced_accuracy_score

    from guitar_cls.data.schema import read_metadata

    sweep_dir = outputs / "sweeps" / name
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["registration"]["version"] == "1" and summary["registration"]["champion"] is True
    test = pd.read_csv(sweep_dir / "splits.csv").query("split == 'test'")[["source_audio", "event_index"]]
    meta = (
        read_metadata(summary["metadata"]).astype({"source_audio": str}).merge(test, on=["source_audio", "event_index"])
    )
    root = Path(summary["audio_root"])
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model(
        "models:/guitar-note-classifier/1", model_config={"audio_root": str(root.resolve())}
    )
    frame = pd.DataFrame(
        {
            "path": [str(root / p) for p in meta["source_audio"]],
            "onset_sec": meta["onset_sec"].to_numpy(float),
            "offset_sec": meta["offset_sec"].to_numpy(float),
        }
    )
    # on one thread, as the job computed the tag (Ray gives a job's entrypoint OMP_NUM_THREADS=1): a smoke model's
    # probabilities are near ties, and another thread count sums in another order and can flip them
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        labels = model.predict(frame)["label"].to_numpy()
    finally:
        torch.set_num_threads(threads)
    expected = balanced_accuracy_score(meta["label_category"].to_numpy(str), labels)
    assert len(meta) > 0 and float(version.tags["test_balanced_accuracy"]) == pytest.approx(expected, abs=1e-6)
