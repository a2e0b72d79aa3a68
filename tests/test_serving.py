"""The pyfunc model: logged, registered and loaded from MLflow it answers as the Classifier does; served over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from test_predict import SR, note, tiny_checkpoint

from guitar_cls.data.schema import LABELS
from guitar_cls.predict import PROB_COLUMNS, Classifier
from guitar_cls.pyfunc import log_pyfunc_model

MODEL = "guitar-note-classifier"


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Logs a tiny checkpoint (with its run's splits.csv) into a temp sqlite store, registers it as @champion."""
    root = tmp_path_factory.mktemp("serving")
    ckpt = tiny_checkpoint(root / "runs" / "r1" / "checkpoint" / "best.pt", seed=3)
    (root / "runs" / "r1" / "splits.csv").write_text("source_audio,event_index,split\na.wav,0,test\n")
    wav = root / "note.wav"
    sf.write(wav, note(0.9, f0=147.0), SR)
    uri = f"sqlite:///{root / 'mlflow.db'}"  # root is absolute: sqlite://// + path
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment("serving-test")
        with mlflow.start_run():
            info = log_pyfunc_model(ckpt.parent, registered_model_name=MODEL)
        mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", info.registered_model_version)
        yield {"uri": uri, "root": root, "ckpt": ckpt, "wav": wav, "info": info}
    finally:
        mlflow.set_tracking_uri(previous)


def test_pyfunc_matches_classifier_on_paths_and_arrays(registered: dict) -> None:
    clf = Classifier.load(registered["ckpt"])
    wav = registered["wav"]
    wave, sr = sf.read(wav, dtype="float32")
    expected_file = clf.classify_files([wav])
    expected_event = clf.classify_files([wav], [0.2], [0.7])
    expected_wave = clf.classify_waves([(wave[:4000], sr)])

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    frame = pd.DataFrame(
        {
            "path": [str(wav), None, str(wav)],
            "onset_sec": [None, None, 0.2],
            "offset_sec": [None, None, 0.7],
            "audio": [None, wave[:4000].tolist(), None],
            "sample_rate": [None, sr, None],
        }
    )
    out = model.predict(frame)
    assert list(out.columns) == [*PROB_COLUMNS, "label"]
    got = out[list(PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(got, np.concatenate([expected_file, expected_wave, expected_event]), atol=1e-5)
    assert list(out["label"]) == [LABELS[i] for i in got.argmax(axis=1)]
    # each input form alone validates against the signature (int sample rate, no optional columns)
    alone = model.predict(pd.DataFrame({"audio": [wave[:4000].tolist()], "sample_rate": [sr]}))
    np.testing.assert_allclose(alone[list(PROB_COLUMNS)].to_numpy(), expected_wave, atol=1e-5)
    paths = model.predict(pd.DataFrame({"path": [str(wav)]}))
    np.testing.assert_allclose(paths[list(PROB_COLUMNS)].to_numpy(), expected_file, atol=1e-5)
    with pytest.raises(Exception, match="sample_rate"):
        model.predict(pd.DataFrame({"audio": [wave[:4000].tolist()]}))


def test_classifier_loads_registered_model_with_its_splits(registered: dict) -> None:
    clf = Classifier.load(f"models:/{MODEL}@champion")
    direct = Classifier.load(registered["ckpt"])
    np.testing.assert_allclose(clf.classify_files([registered["wav"]]), direct.classify_files([registered["wav"]]))
    assert clf.splits is not None and list(clf.splits["split"]) == ["test"]


@pytest.mark.slow
def test_model_loads_without_guitar_cls_installed(registered: dict, tmp_path: Path) -> None:
    """The model folder ships the package (code_paths) and pins the stack (requirements.txt)."""
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}@champion", dst_path=str(tmp_path / "m")))
    reqs = (local / "requirements.txt").read_text().split()
    for name in ("torch", "torchaudio", "librosa", "soundfile", "mlflow"):
        assert any(r.startswith(f"{name}==") for r in reqs), reqs
    assert (local / "code" / "guitar_cls" / "predict.py").is_file()
    script = textwrap.dedent(f"""
        import sys
        sys.meta_path[:] = [f for f in sys.meta_path if "guitar_cls" not in getattr(f, "__module__", "")
                            and "guitar_cls" not in repr(f)]
        sys.path[:] = [p for p in sys.path if p not in ("", {str(Path.cwd())!r})]
        try:
            import guitar_cls
            raise SystemExit("guitar_cls is importable: " + guitar_cls.__file__)
        except ImportError:
            pass
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({str(local)!r})
        out = model.predict(pd.DataFrame({{"path": [{str(registered["wav"])!r}]}}))
        import guitar_cls
        assert guitar_cls.__file__.startswith({str(local)!r}), guitar_cls.__file__
        print(out[["prob_harmonic", "prob_dead_note", "prob_general_note"]].to_numpy().tolist())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    probs = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    expected = Classifier.load(registered["ckpt"]).classify_files([registered["wav"]])
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_audio(registered: dict) -> None:
    port = _free_port()
    # --env-manager local runs the scoring server (uvicorn) from this interpreter's environment
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": registered["uri"]}
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{MODEL}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    log = open(registered["root"] / "serve.log", "w+")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"server exited: {(registered['root'] / 'serve.log').read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(base + "/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.time() < deadline, "server did not answer /ping within 120 s"
            time.sleep(0.5)
        wave, sr = sf.read(registered["wav"], dtype="float32")
        body = {
            "dataframe_split": {
                "columns": ["path", "audio", "sample_rate"],
                "data": [[None, wave.tolist(), sr], [str(registered["wav"]), None, None]],
            }
        }
        rows = _post(base + "/invocations", body)["predictions"]
        assert len(rows) == 2
        probs = np.array([[row[c] for c in PROB_COLUMNS] for row in rows])
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        clf = Classifier.load(registered["ckpt"])
        expected = np.concatenate([clf.classify_waves([(wave, sr)]), clf.classify_files([registered["wav"]])])
        np.testing.assert_allclose(probs, expected, atol=1e-5)
        assert [row["label"] for row in rows] == [LABELS[i] for i in expected.argmax(axis=1)]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
