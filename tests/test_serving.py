"""The pyfunc model: logged, registered and loaded from MLflow it answers as the Classifier does; served over HTTP;
reads files only under the operator's audio folder, with bounded work per request."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import mlflow_uris
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from procs import stop_group
from test_predict import SR, note, tiny_checkpoint

from guitar_cls.data.pipeline import _free_port
from guitar_cls.data.schema import LABELS
from guitar_cls.predict import PROB_COLUMNS, Classifier
from guitar_cls.pyfunc import AUDIO_ROOT_ENV, RequestError, log_pyfunc_model
from guitar_cls.tracking import checkpoint_sample_rate, input_example

MODEL = "guitar-note-classifier"
SECRET = "TOPSECRET-7f3a"  # in files a request must never get to see


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Logs a tiny checkpoint (with its run's splits.csv) into a temp sqlite store, registers it as @champion.

    ``audio`` is the folder the operator allows; beside it a secret file, inside it a symlink to that file, a FIFO
    and a text file posing as a WAV.
    """
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.delenv(AUDIO_ROOT_ENV, raising=False)
    root = tmp_path_factory.mktemp("serving")
    ckpt = tiny_checkpoint(root / "runs" / "r1" / "checkpoint" / "best.pt", seed=3)
    (root / "runs" / "r1" / "splits.csv").write_text("source_audio,event_index,split\na.wav,0,test\n")
    audio = root / "audio"
    audio.mkdir()
    wav = audio / "note.wav"
    sf.write(wav, note(0.9, f0=147.0), SR)
    (root / "secret.wav").write_text(SECRET)
    (audio / "link.wav").symlink_to(root / "secret.wav")
    (audio / "fake.wav").write_text(SECRET)
    os.mkfifo(audio / "fifo.wav")
    uri = f"sqlite:///{root / 'mlflow.db'}"  # root is absolute: sqlite://// + path
    with mlflow_uris.restored():  # this store for the module, then MLflow's URIs put back exactly
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        try:
            mlflow.set_experiment("serving-test")
            with mlflow.start_run():
                example = input_example(checkpoint_sample_rate(ckpt))  # as sweeps log it (MLflow warns without one)
                info = log_pyfunc_model(ckpt.parent, registered_model_name=MODEL, input_example=example)
            mlflow.MlflowClient().set_registered_model_alias(MODEL, "champion", info.registered_model_version)
            yield {"uri": uri, "root": root, "audio": audio, "ckpt": ckpt, "wav": wav, "info": info}
        finally:
            monkeypatch.undo()


def test_pyfunc_matches_classifier_on_paths_and_arrays(registered: dict) -> None:
    clf = Classifier.load(registered["ckpt"])
    wav = registered["wav"]
    wave, sr = sf.read(wav, dtype="float32")
    expected_file = clf.classify_files([wav])
    expected_event = clf.classify_files([wav], [0.2], [0.7])
    expected_wave = clf.classify_waves([(wave[:4000], sr)])

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion", model_config={"audio_root": str(registered["audio"])})
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
    env = {**os.environ, AUDIO_ROOT_ENV: str(registered["audio"])}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probs = np.array(json.loads(done.stdout.strip().splitlines()[-1]))
    expected = Classifier.load(registered["ckpt"]).classify_files([registered["wav"]])
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def _post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def _post_error(url: str, body: dict) -> tuple[int, str]:
    """Returns (HTTP status, body text) of a request the server is expected to refuse."""
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture(scope="module")
def server(registered: dict):
    """Yields the base URL of ``mlflow models serve`` of the champion on 127.0.0.1, files allowed under ``audio``."""
    port = _free_port()
    # --env-manager local runs the scoring server (uvicorn) from this interpreter's environment
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {
        **os.environ,
        "PATH": path,
        "MLFLOW_TRACKING_URI": registered["uri"],
        AUDIO_ROOT_ENV: str(registered["audio"]),
    }
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
        yield base
    finally:
        stop_group(proc, grace_s=15)
        log.close()


@pytest.mark.slow
def test_mlflow_models_serve_answers_audio(registered: dict, server: str) -> None:
    wave, sr = sf.read(registered["wav"], dtype="float32")
    body = {
        "dataframe_split": {
            "columns": ["path", "audio", "sample_rate"],
            "data": [[None, wave.tolist(), sr], [str(registered["wav"]), None, None], ["note.wav", None, None]],
        }
    }
    rows = _post(server + "/invocations", body)["predictions"]
    assert len(rows) == 3
    probs = np.array([[row[c] for c in PROB_COLUMNS] for row in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    clf = Classifier.load(registered["ckpt"])
    expected = np.concatenate([clf.classify_waves([(wave, sr)]), clf.classify_files([registered["wav"]] * 2)])
    np.testing.assert_allclose(probs, expected, atol=1e-5)
    assert [row["label"] for row in rows] == [LABELS[i] for i in expected.argmax(axis=1)]


@pytest.mark.slow
def test_mlflow_models_serve_refuses_files_outside_its_folder_and_unbounded_requests(
    registered: dict, server: str
) -> None:
    """Issue 10.4 and 10.5 over HTTP: the server opened any path (a FIFO hung a worker) and resampled any rate."""
    root, audio = registered["root"], registered["audio"]
    refused = {
        str(root / "secret.wav"): "outside the allowed audio folder",  # absolute, outside
        "../secret.wav": "outside the allowed audio folder",
        "link.wav": "outside the allowed audio folder",  # symlink escape
        "/etc/passwd": "outside the allowed audio folder",
        str(audio / "fifo.wav"): "not a regular file",  # used to block the worker
        "fake.wav": "unreadable audio file",  # the contents are never echoed
        "missing.wav": "no such audio file",
    }
    for path, reason in refused.items():
        t0 = time.perf_counter()
        status, text = _post_error(
            server + "/invocations", {"dataframe_split": {"columns": ["path"], "data": [[path]]}}
        )
        assert status == 400 and reason in text, (path, status, text[-2000:])
        assert SECRET not in text and "Errno" not in text and "root:" not in text, text[-2000:]
        assert time.perf_counter() - t0 < 30, path
    for rate in (22051, 96001):  # bounded resampling: answered at once
        t0 = time.perf_counter()
        body = {"dataframe_split": {"columns": ["audio", "sample_rate"], "data": [[[0.1, 0.2] * 2000, rate]]}}
        assert len(_post(server + "/invocations", body)["predictions"]) == 1
        assert time.perf_counter() - t0 < 10, rate
    for rate, reason in ((3999, "outside [4000, 192000] Hz"), (22050.5, "whole number of Hz")):
        body = {"dataframe_split": {"columns": ["audio", "sample_rate"], "data": [[[0.1, 0.2], rate]]}}
        status, text = _post_error(server + "/invocations", body)
        assert status == 400 and reason in text, text[-2000:]
    long = {"dataframe_split": {"columns": ["audio", "sample_rate"], "data": [[[0.1] * (61 * 4000), 4000]]}}
    status, text = _post_error(server + "/invocations", long)
    assert status == 400 and "61.0 s of audio; the limit is 60 s per row" in text, text[-2000:]
    # the server still answers after all of that
    ok = {"dataframe_split": {"columns": ["path"], "data": [["note.wav"]]}}
    assert len(_post(server + "/invocations", ok)["predictions"]) == 1


# ---------------------------------------------------------------------------------------------------- in process


def _model(registered: dict, **config: object) -> mlflow.pyfunc.PyFuncModel:
    return mlflow.pyfunc.load_model(f"models:/{MODEL}@champion", model_config=config or None)


def test_paths_are_refused_unless_the_operator_allows_a_folder(
    registered: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10.5: a served model opened any path a client sent."""
    wave, sr = sf.read(registered["wav"], dtype="float32")
    model = _model(registered)
    with pytest.raises(RequestError, match=f"row 0: file paths are not accepted .*{AUDIO_ROOT_ENV}"):
        model.predict(pd.DataFrame({"path": [str(registered["wav"])]}))
    assert len(model.predict(pd.DataFrame({"audio": [wave[:4000].tolist()], "sample_rate": [sr]}))) == 1
    monkeypatch.setenv(AUDIO_ROOT_ENV, str(registered["audio"]))
    by_env = _model(registered).predict(pd.DataFrame({"path": ["note.wav"]}))
    by_config = _model(registered, audio_root=str(registered["audio"])).predict(pd.DataFrame({"path": ["note.wav"]}))
    expected = Classifier.load(registered["ckpt"]).classify_files([registered["wav"]])
    np.testing.assert_allclose(by_env[list(PROB_COLUMNS)].to_numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(by_config[list(PROB_COLUMNS)].to_numpy(), expected, atol=1e-5)
    monkeypatch.setenv(AUDIO_ROOT_ENV, str(registered["root"] / "nope"))
    with pytest.raises(Exception, match="not an existing folder"):  # an operator error, at load
        _model(registered)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../secret.wav", "outside the allowed audio folder"),
        ("sub/../../secret.wav", "outside the allowed audio folder"),
        ("{root}/secret.wav", "outside the allowed audio folder"),
        ("link.wav", "outside the allowed audio folder"),
        ("fifo.wav", "not a regular file"),
        (".", "not a regular file"),
        ("fake.wav", "unreadable audio file"),
        ("missing.wav", "no such audio file in the allowed folder"),
        ("a\x00b.wav", "not a valid path"),
    ],
)
def test_path_rules_inside_the_allowed_folder(registered: dict, path: str, reason: str) -> None:
    model = _model(registered, audio_root=str(registered["audio"]))
    frame = pd.DataFrame({"path": [str(registered["wav"]), path.format(root=registered["root"])]})
    with pytest.raises(RequestError, match=f"^row 1: (.path. is )?{reason}") as err:
        model.predict(frame)
    assert SECRET not in str(err.value) and "Errno" not in str(err.value)
    chained = err.value.__cause__ or (None if err.value.__suppress_context__ else err.value.__context__)
    assert chained is None  # no system error travels with it (a served traceback would show it)


def test_paths_inside_the_folder_may_be_absolute_or_climb_back_in(registered: dict) -> None:
    model = _model(registered, audio_root=str(registered["audio"]))
    out = model.predict(pd.DataFrame({"path": [str(registered["wav"]), "x/../note.wav", "./note.wav"]}))
    probs = out[list(PROB_COLUMNS)].to_numpy()
    np.testing.assert_allclose(probs, probs[[0, 0, 0]], atol=1e-6)


def test_request_size_and_rate_limits(registered: dict) -> None:
    """Issue 10.4: 22051 Hz made torchaudio build a 22050 x 22051 kernel; request length was unbounded."""
    model = _model(registered, audio_root=str(registered["audio"]), max_audio_sec=0.5)
    for rate in (22051, 96001):
        t0 = time.perf_counter()
        model.predict(pd.DataFrame({"audio": [[0.1, 0.2] * 100], "sample_rate": [rate]}))
        assert time.perf_counter() - t0 < 1.0, rate
    bad = {
        "row 0: 0.6 s of audio; the limit is 0.5 s per row": ([0.1] * 4800, 8000),
        r"row 0: sample rate 200000 Hz is outside \[4000, 192000\] Hz": ([0.1, 0.2], 200000),
        "row 0: 'sample_rate' must be a whole number of Hz": ([0.1, 0.2], 8000.5),
    }
    for message, (samples, rate) in bad.items():
        with pytest.raises(RequestError, match=f"^{message}"):
            model.predict(pd.DataFrame({"audio": [samples], "sample_rate": [rate]}))
    # a file event longer than the limit (0.2-0.9 s of note.wav), and the whole 0.9 s file
    with pytest.raises(RequestError, match=r"^row 0: 0.7 s of audio; the limit is 0.5 s per row"):
        model.predict(pd.DataFrame({"path": ["note.wav"], "onset_sec": [0.2], "offset_sec": [0.9]}))
    with pytest.raises(RequestError, match=r"^row 0: 0.9 s of audio"):
        model.predict(pd.DataFrame({"path": ["note.wav"]}))
    assert len(model.predict(pd.DataFrame({"path": ["note.wav"], "onset_sec": [0.2], "offset_sec": [0.6]}))) == 1
