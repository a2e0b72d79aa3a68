"""A sweep against a real MLflow tracking server (issue 15.3): ``mlflow server`` on 127.0.0.1 with a sqlite backend and
the artifact proxy; the smoke sweep logs to it over http, the champion registers there and loads back through it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from guitar_cls.data.pipeline import _free_port

ROOT = Path(__file__).resolve().parents[1]
MODEL = "guitar-note-classifier"
pytestmark = pytest.mark.slow


def _stop(proc: subprocess.Popen) -> None:
    """Ends ``proc`` and its children (its own process group): TERM, then KILL after 5 s (a throwaway store)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture()
def mlflow_server(tmp_path):
    """Yields the URL of an ``mlflow server`` on 127.0.0.1 (sqlite store, artifacts proxied into a tmp folder) and
    the folder its artifacts land in; the server's process group is ended afterwards, whatever the test did."""
    port = _free_port()
    artifacts = tmp_path / "server-artifacts"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / 'server.db'}",
        "--serve-artifacts",  # clients read and write artifacts through the server, never its folder
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, f"mlflow server exited {proc.returncode}:\n{_tail(tmp_path / 'server.log')}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                assert time.time() < deadline, f"{url}/health did not answer:\n{_tail(tmp_path / 'server.log')}"
                time.sleep(0.5)
        yield url, artifacts
    finally:
        _stop(proc)
        log.close()


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


def test_a_sweep_logs_to_a_tracking_server_and_its_champion_loads_through_the_proxy(
    tmp_path, tiny_demo, mlflow_server, monkeypatch
):
    import mlflow
    import pandas as pd
    from mlflow.tracking import MlflowClient
    from test_jobs import _last_json, _run

    url, artifacts = mlflow_server
    out = tmp_path / "outputs"
    cmd = [sys.executable, "jobs/sweep.py", "--space", "search_spaces/smoke.yaml", "--name", "smoke-server"]
    cmd += ["--num-samples", "1", "--data", str(tiny_demo), "--audio-root", str(tiny_demo.parent)]
    for key, value in {"mlflow_uri": url, "output_dir": out}.items():
        cmd += ["--set", f"logging.{key}={value}"]
    cmd += ["--set", f"data.cache_dir={tmp_path / 'cache'}"]
    summary = _last_json(_run(cmd, tmp_path, 600).stdout)
    assert summary["errors"] == 0 and summary["registration"]["champion"] is True

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == summary["registration"]["version"] and champion.tags["test_balanced_accuracy"]
    assert client.get_run(champion.run_id).data.tags["sweep"] == "smoke-server"
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert logged.artifact_location.startswith("mlflow-artifacts:")  # proxied: the client never saw the folder
    assert list(artifacts.rglob("MLmodel")) and not (out / "mlartifacts").exists() and not (out / "mlflow.db").exists()

    # ``models:/`` resolves against MLflow's process-wide URIs: point them at the server for this test only (what
    # mlflow.set_tracking_uri writes, module globals and the environment, is restored by monkeypatch)
    monkeypatch.setattr(mlflow.tracking._tracking_service.utils, "_tracking_uri", url)
    monkeypatch.setattr(mlflow.tracking._model_registry.utils, "_registry_uri", url)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    wav = sorted(tiny_demo.parent.rglob("*.wav"))[0]
    # downloads the model's files through the server's artifact proxy
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion", model_config={"audio_root": str(wav.parent)})
    pred = model.predict(pd.DataFrame({"path": [str(wav)], "onset_sec": [0.1], "offset_sec": [0.9]}))
    assert pred.shape[0] == 1 and pred["label"][0] in ("harmonic", "dead_note", "general_note")
    probs = pred[["prob_harmonic", "prob_dead_note", "prob_general_note"]].to_numpy()
    assert abs(probs.sum() - 1) < 1e-4
