"""End-to-end: the jobs run for real (local Ray with the dashboard, sqlite MLflow, real WAV files)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
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


def _saved_trials(storage: Path, name: str, skip: frozenset[str] = frozenset()) -> dict[str, dict]:
    """Returns trial id -> trial data of every trial in Tune's saved experiment state (``{}`` while none is saved),
    leaving out the state files named in ``skip`` (each run of a sweep writes a file of its own)."""
    saved = {}
    for state_file in sorted((storage / name).glob("experiment_state-*.json")):
        if state_file.name in skip:
            continue
        try:
            trials = [json.loads(t[0]) for t in json.loads(state_file.read_text())["trial_data"]]
        except (OSError, ValueError, KeyError):  # being rewritten right now
            continue
        saved |= {t["trial_id"]: t for t in trials}
    return saved


def _finished_trials(storage: Path, name: str) -> list[Path]:
    """Returns the result.json of every trial Tune's saved experiment state lists as TERMINATED."""
    return [
        storage / name / t["relative_logdir"] / "result.json"
        for t in _saved_trials(storage, name).values()
        if t.get("status") == "TERMINATED"
    ]


def _epoch_logged(db: Path) -> set[str]:
    """Returns the trial ids whose MLflow run has a per-epoch result (``epoch``) logged in the sqlite store ``db``."""
    import sqlite3

    if not db.is_file():
        return set()
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "select distinct t.value from metrics m join tags t on t.run_uuid = m.run_uuid "
                "and t.key = 'trial_id' where m.key = 'epoch'"
            ).fetchall()
    except sqlite3.Error:  # the store is being created or written
        return set()
    return {r[0] for r in rows}


@dataclass
class InterruptedSweep:
    """The smoke sweep of ``run_interrupted_sweep``: what each interruption left and what the last resume printed."""

    outputs: Path  # logging.output_dir (mlflow.db, optuna.db, sweeps/<name>)
    demo: Path  # its demo data folder
    name: str
    storage: Path  # Tune's storage folder (<outputs>/ray_results)
    interrupted_rc: int  # the Ctrl-C'd driver's exit status
    interrupted_log: str
    finished_at_interrupt: dict[str, str]  # trial folder -> result.json text, of the trials saved finished at Ctrl-C
    killed_rc: int  # the SIGKILLed driver's exit status
    finished_at_kill: dict[str, str]  # the same, when the driver was killed
    running_at_kill: str  # the trial the killed run had saved as running (none of its epochs reported yet)
    summary: dict  # the last --resume's summary line


def _start_sweep(cmd: list[str], tmp: Path, log: Path) -> subprocess.Popen:
    """Starts the sweep driver in its own process group, its output into ``log`` (a pipe nobody reads can fill)."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=_env(tmp), stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # fmt: skip


def _wait_until(proc: subprocess.Popen, log: Path, what: str, ready, timeout: float = 420):
    """Polls ``ready()`` while the driver runs and returns its first true value; fails when the driver ended first or
    ``timeout`` passed."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        found = ready()
        if found:
            return found
        time.sleep(0.5)
    state = f"ended ({proc.returncode})" if proc.poll() is not None else f"still running after {timeout} s"
    raise AssertionError(f"sweep {state} before {what}:\n{log.read_text()[-4000:]}")


def run_interrupted_sweep(tmp: Path) -> InterruptedSweep:
    """Runs the smoke sweep (2 trials of 2 epochs, one at a time) through the two interruptions a user's sweep meets,
    one after the other, then to its end:

    1. Ctrl-C (SIGINT to the driver) once Tune's saved state lists a finished trial: Tune saves and stops, exit 130;
    2. ``--resume``, then SIGKILL to the driver's whole process group (no chance to save or clean up) once the state
       this run saved lists the next trial as running (before its first epoch: a trial killed after one restarts
       from its Train checkpoint, and Tune's result.json of it then lacks the epochs before the kill);
    3. ``--resume --refit-epochs 3 --refit-members 2`` to the end: the picked trial's configuration trains again for
       3 epochs, twice (training seeds 42 and 43), and the better on validation of the trial and the mean of the two
       is tested and registered as the champion.

    One chain serves the Ctrl-C test and the SIGKILL test through the module fixture ``interrupted_sweep``: one sweep
    started three times instead of a sweep of its own, started twice, for each (one sweep's start, data and trials
    fewer)."""
    name = "smoke-resume"
    demo = tmp / "demo"
    cmd = [sys.executable, "jobs/sweep.py", "--smoke-test", "--name", name, *_sets(tmp, demo)]
    storage = tmp / "outputs" / "ray_results"

    log = tmp / "interrupted.log"
    proc = _start_sweep(cmd, tmp, log)
    try:
        first = _wait_until(proc, log, "a trial finished", lambda: _finished_trials(storage, name))
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C to the driver: Tune saves the experiment state and stops
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    interrupted_rc, interrupted_log = proc.returncode, log.read_text()
    finished_at_interrupt = {p.parent.name: p.read_text() for p in first}
    earlier = frozenset(p.name for p in (storage / name).glob("experiment_state-*.json"))

    def next_trial_running() -> str | None:
        saved = _saved_trials(storage, name, skip=earlier)  # as this run saved them
        running = {i for i, t in saved.items() if t.get("status") == "RUNNING"}
        return next(iter(running - _epoch_logged(tmp / "outputs" / "mlflow.db")), None)

    log = tmp / "killed.log"
    proc = _start_sweep([*cmd, "--resume"], tmp, log)
    try:
        running = _wait_until(proc, log, "the next trial ran", next_trial_running)
        killed = _finished_trials(storage, name)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started, at once
        except ProcessLookupError:  # all of them ended already
            pass
        proc.wait()
    finished_at_kill = {p.parent.name: p.read_text() for p in killed}

    resumed = _run([*cmd, "--resume", "--refit-epochs", "3", "--refit-members", "2"], tmp, 600)
    return InterruptedSweep(
        outputs=tmp / "outputs",
        demo=demo,
        name=name,
        storage=storage,
        interrupted_rc=interrupted_rc,
        interrupted_log=interrupted_log,
        finished_at_interrupt=finished_at_interrupt,
        killed_rc=proc.returncode,
        finished_at_kill=finished_at_kill,
        running_at_kill=running,
        summary=_last_json(resumed.stdout),
    )


@pytest.fixture(scope="module")
def interrupted_sweep(tmp_path_factory: pytest.TempPathFactory) -> InterruptedSweep:
    """The smoke sweep Ctrl-C'd, resumed and SIGKILLed mid-trial, then resumed to its end, once for this file: the
    Ctrl-C test and the killed-driver test each check their part of it."""
    return run_interrupted_sweep(tmp_path_factory.mktemp("interrupted-sweep"))


def test_sweep_interrupted_then_resumed_keeps_finished_trials_and_registers_a_champion(interrupted_sweep):
    """Ctrl-C of a running sweep, then ``--resume`` (the chain of ``run_interrupted_sweep``; a SIGKILL of the resumed
    driver comes between): the trials saved as finished are kept as they were, the champion is registered only by the
    run that finishes, and the MLflow UI, optuna-dashboard and the registered pyfunc model show the sweep."""
    sweep = interrupted_sweep
    assert sweep.interrupted_rc == 130, sweep.interrupted_log[-4000:]  # interrupted: nothing registered
    assert sweep.finished_at_interrupt, "no trial finished in time"
    assert all(text.count("\n") == 2 for text in sweep.finished_at_interrupt.values())  # 2 epochs each

    summary = sweep.summary
    assert summary["trials"] == 2 and summary["errors"] == 0
    for trial_dir, text in sweep.finished_at_interrupt.items():  # finished trials are kept, not run again
        assert (sweep.storage / sweep.name / trial_dir / "result.json").read_text() == text
    reg = summary["registration"]
    assert reg["champion"] is True and reg["version"] == "1"
    check_refit(sweep.outputs / "sweeps" / sweep.name, summary)
    import test_sweep  # what the MLflow UI and optuna-dashboard show of it (issue 14), checked on this sweep's store

    test_sweep.check_sweep_is_browsable(sweep.outputs, sweep.name)
    test_sweep.check_ui_servers(sweep.outputs, sweep.name)

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{sweep.outputs / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{sweep.outputs / 'mlflow.db'}")
    wav = sorted(sweep.demo.rglob("*.wav"))[0]
    # the served model reads files only under the folder its operator allows
    model = mlflow.pyfunc.load_model(
        "models:/guitar-note-classifier@champion", model_config={"audio_root": str(wav.parent)}
    )
    out = model.predict(__import__("pandas").DataFrame({"path": [str(wav)], "onset_sec": [0.1], "offset_sec": [0.9]}))
    assert out.shape[0] == 1 and out["label"][0] in ("harmonic", "dead_note", "general_note")
    probs = out[["prob_harmonic", "prob_dead_note", "prob_general_note"]].to_numpy()
    assert abs(probs.sum() - 1) < 1e-4


def test_a_killed_sweep_driver_resumes_without_losing_trials_or_duplicating_runs(interrupted_sweep) -> None:
    """SIGKILL to the sweep driver's whole process group (no chance to save or clean up) while a trial runs, then
    ``--resume`` (the chain of ``run_interrupted_sweep``, after a Ctrl-C'd first run): the trials Tune had
    saved as finished are kept as they were, the killed trial runs again to its end, and every trial has exactly one
    MLflow run."""
    import mlflow

    from guitar_cls.tune.record import SweepRecord

    sweep = interrupted_sweep
    assert sweep.killed_rc == -signal.SIGKILL  # killed while it ran, not ended by itself
    assert sweep.finished_at_kill, "no trial saved as finished before the kill"
    summary = sweep.summary
    assert summary["trials"] == 2 and summary["errors"] == 0
    for trial_dir, text in sweep.finished_at_kill.items():
        assert (sweep.storage / sweep.name / trial_dir / "result.json").read_text() == text
    trials = {t.trial_id: t for t in SweepRecord.read(sweep.outputs / "sweeps" / sweep.name).trials}
    killed = trials[sweep.running_at_kill]
    assert (killed.status, killed.epochs) == ("TERMINATED", 2), killed
    mlflow.set_tracking_uri(f"sqlite:///{sweep.outputs / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{sweep.outputs / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.trial_id != ''")
    per_trial = runs.groupby("tags.trial_id").size()
    assert set(per_trial.index) == set(trials) and (per_trial == 1).all(), per_trial.to_dict()


def check_refit(sweep_dir: Path, summary: dict) -> None:
    """The refit (``--refit-epochs 3 --refit-members 2`` after 2-epoch trials) trained the picked trial's own
    configuration for 3 epochs on the sweep's splits with training seeds 42 and 43, scored the mean of the two on
    validation, and what is tested and registered is that mean (one pyfunc of both) exactly when it validated
    better than the trial."""
    import mlflow

    from guitar_cls.pyfunc import GuitarNoteEnsemble
    from guitar_cls.train.checkpoint import read_checkpoint
    from guitar_cls.tune.record import SweepRecord

    refit = summary["refit"]
    metric = "val/balanced_accuracy"
    assert refit["trial_id"] == summary["best_trial"] and refit["epochs"] == 3 and refit["epochs_run"] == 3
    trial = next(t for t in SweepRecord.read(sweep_dir).trials if t.trial_id == refit["trial_id"])
    assert refit[f"trial_{metric}"] == trial.best
    assert refit["used"] == (refit[metric] > trial.best)
    assert [m["seed"] for m in refit["members"]] == [42, 43] and refit["checkpoint"] == refit["checkpoints"][0]
    theirs = read_checkpoint(trial.checkpoint)["config"]
    assert theirs["training"]["epochs"] == 2
    for member, path in zip(refit["members"], refit["checkpoints"]):
        ours = read_checkpoint(path)
        assert Path(path).is_relative_to(sweep_dir / "refit") and member["checkpoint"] == path
        assert ours["config"]["training"]["epochs"] == 3 and ours["best_metric"] == member[metric]
        assert ours["config"]["training"]["seed"] == member["seed"]
        for section in ("model", "features", "augmentation"):  # the trial's own configuration, searched values too
            assert ours["config"][section] == theirs[section]
        assert ours["config"]["training"]["learning_rate"] == theirs["training"]["learning_rate"]
    assert summary["checkpoint"] == (refit["checkpoint"] if refit["used"] else str(trial.checkpoint))
    assert summary.get("checkpoints") == (refit["checkpoints"] if refit["used"] else None)
    version = summary["registration"]["version"]
    mlflow.set_tracking_uri(f"sqlite:///{sweep_dir.parents[1] / 'mlflow.db'}")
    mlflow.set_registry_uri(f"sqlite:///{sweep_dir.parents[1] / 'mlflow.db'}")
    served = mlflow.pyfunc.load_model(f"models:/guitar-note-classifier/{version}").unwrap_python_model()
    assert isinstance(served, GuitarNoteEnsemble) == refit["used"]
    if refit["used"]:
        assert len(served.members) == 2 and list(served.weights) == [1.0, 1.0] and served.rule == "mean"


def _pids(marker: str) -> list[int]:
    """Returns the processes whose command lines name ``marker`` (an ended one's is empty: a zombie is not listed)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker.encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def _kill_cluster(marker: str) -> None:
    """Kills the processes whose command lines name the cluster's temp dir, then removes the dir: SIGTERM, then
    SIGKILL to those still there 3 s later (once all are gone, it waits no longer)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 3
        while _pids(marker) and time.time() < deadline:
            time.sleep(0.2)
    shutil.rmtree(marker, ignore_errors=True)


def check_registered_champion(outputs: Path, name: str, uri: str | None = None) -> None:
    """Checks that sweep ``name`` (under ``outputs``) registered version 1 as champion in the MLflow store ``uri``
    (default: the sqlite store under ``outputs``), and that its ``test_balanced_accuracy`` tag is the pyfunc model's
    score on the sweep's test split, recomputed here on the raw audio (not merely some number). Used by the
    job-submission test in tests/test_cluster.py (against a tracking server: the model loads through its proxy)."""
    from mlflow.tracking import MlflowClient

    uri = uri or f"sqlite:///{outputs / 'mlflow.db'}"
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
