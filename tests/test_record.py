"""The sweep record (tune/record.py): stop reasons decided by what stopped a trial, typed params that survive a
write/read, leaderboard and Pareto front ordered by the space's metric and mode, old leaderboard.csv still read."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from guitar_cls.train.loop import EARLY_STOP_KEY
from guitar_cls.tune import record as rec

METRIC = "val/macro_f1"


def result(trial_id: str, epochs: int, best: float | None, *, done: bool = True, error: bool = False, **extra):
    """Returns a stand-in for a Tune ``Result`` (``metrics``, ``config``, ``error``)."""
    metrics = {}
    if epochs:
        metrics = {
            "trial_id": trial_id,
            "training_iteration": epochs,
            "done": done,
            METRIC: best,
            "best/" + METRIC: best,
            "latency_ms": 3.0,
            "checkpoint_path": f"/ckpt/{trial_id}",
            **extra,
        }
    config = {"model.name": "resnet", "model.params.blocks": "[1, 1, 1, 1]", "training.learning_rate": 1e-3}
    path = f"/storage/sweep/trial_driver_{trial_id}_1_model_name=resnet_2026-01-01"
    return SimpleNamespace(metrics=metrics, config=config, error=RuntimeError("boom") if error else None, path=path)


def trials() -> list[rec.TrialRecord]:
    stops = {"asha0000": 2}
    results = [
        result("full0000", 4, 0.80),
        result("asha0000", 2, 0.60),  # ASHA's decision, written down by the scheduler
        result("early000", 3, 0.70, **{EARLY_STOP_KEY: 1}),  # the loop stopped itself
        result("error000", 1, 0.50, error=True),
        result("cut00000", 2, 0.65, done=False),  # stopped by the time budget
        result("0e0e0e0e", 0, None),  # never started
    ]
    return [rec.trial_from_result(r, metric=METRIC, max_epochs=4, asha_stops=stops) for r in results]


def test_stop_reason_comes_from_what_stopped_the_trial() -> None:
    got = {t.trial_id: (t.status, t.stop_reason) for t in trials()}
    assert got == {
        "full0000": ("TERMINATED", "completed"),
        "asha0000": ("TERMINATED", "asha"),
        "early000": ("TERMINATED", "early_stop"),
        "error000": ("ERROR", "error"),
        "cut00000": ("CUT", "budget"),
        "0e0e0e0e": ("NOT_STARTED", "budget"),
    }


def test_asha_stops_are_appended_and_read_back(tmp_path: Path) -> None:
    rec.append_asha_stop(tmp_path, "t1", 2)
    rec.append_asha_stop(tmp_path, "t2", 6)
    with open(tmp_path / rec.ASHA_STOPS, "a") as f:
        f.write('{"trial_id": "t3", "ep')  # a line cut short by a killed driver
    assert rec.read_asha_stops(tmp_path) == {"t1": 2, "t2": 6}


def test_record_round_trips_typed_params(tmp_path: Path) -> None:
    record = rec.SweepRecord("s", METRIC, "max", 4, trials(), {"best_trial": "full0000"})
    record.write(tmp_path)
    back = rec.SweepRecord.read(tmp_path)
    assert back == record and not back.legacy
    assert back.trials[0].params["model.params.blocks"] == [1, 1, 1, 1]  # a list, not a JSON string
    assert back.trials[0].checkpoint == Path("/ckpt/full0000") / rec.BEST
    board = pd.read_csv(tmp_path / rec.LEADERBOARD_CSV, dtype={"trial_id": str})
    assert board["trial_id"].tolist()[:3] == ["full0000", "early000", "cut00000"]  # the people's table, best first


@pytest.mark.parametrize("mode", ["max", "min"])
def test_leaderboard_best_trial_and_pareto_follow_metric_and_mode(mode: str) -> None:
    record = rec.SweepRecord("s", METRIC, mode, 4, trials())
    board = record.leaderboard()
    scored = board.dropna(subset=["best/" + METRIC])
    assert scored["best/" + METRIC].is_monotonic_decreasing == (mode == "max")
    assert board["trial_id"].tolist()[-1] == "0e0e0e0e"  # no score: last either way
    assert record.best_trial().trial_id == ("full0000" if mode == "max" else "asha0000")  # errors never win
    assert record.test_metric == "macro_f1"
    front = rec.pareto_front(board.assign(latency_ms=range(len(board))), METRIC, mode)
    assert front["trial_id"].iloc[0] == record.best_trial().trial_id  # the best is on the front
    assert "error000" not in set(front["trial_id"])  # a failed trial is no model to deploy


def test_legacy_leaderboard_csv_is_read(tmp_path: Path) -> None:
    legacy = (
        "trial_id,status,best/val/balanced_accuracy,last/val/balanced_accuracy,epochs,latency_ms,checkpoint_path,"
        "model.name,model.params.blocks,model.params.base_width,training.epochs\n"
        '00123456,TERMINATED,0.8,0.75,12,5.7,/c/x,resnet,"[1, 1, 1, 1]",16.0,12\n'
        "9a109e99,CUT,,,0,,,efficientnet_b0,,,12\n"
    )
    (tmp_path / rec.LEADERBOARD_CSV).write_text(legacy)
    (tmp_path / rec.SUMMARY_FILE).write_text(json.dumps({"best_trial": "00123456"}))
    record = rec.SweepRecord.read(tmp_path)
    assert record.legacy and record.metric == "val/balanced_accuracy" and record.max_epochs == 12
    first, cut = record.trials
    assert first.trial_id == "00123456" and first.stop_reason is None
    assert first.params["model.params.blocks"] == [1, 1, 1, 1] and first.best == 0.8
    assert cut.best is None and cut.checkpoint_path is None and "model.params.blocks" not in cut.params
    assert record.summary == {"best_trial": "00123456"}


def test_missing_record_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rec.TRIALS_FILE):
        rec.SweepRecord.read(tmp_path)


def test_a_trial_tune_ran_again_counts_its_epochs_not_its_iterations(tmp_path) -> None:
    """After a lost node Tune reruns the trial, whose iterations restart at 1 while Train resumes its epochs from the
    checkpoint: the record says 4 epochs (completed) and the curve has one row per epoch; the worker nodes of the
    last report are kept as a list."""
    last = result("rerun000", 2, 0.8, epoch=3, worker_nodes="nodeA,nodeB")  # iteration 2 of the rerun = epoch 3
    t = rec.trial_from_result(last, metric=METRIC, max_epochs=4)
    assert (t.epochs, t.stop_reason, t.worker_nodes) == (4, "completed", ["nodeA", "nodeB"])
    record = rec.SweepRecord("s", METRIC, "max", 4, [t])
    record.write(tmp_path)
    assert rec.SweepRecord.read(tmp_path).trials[0].worker_nodes == ["nodeA", "nodeB"]

    trial_dir = tmp_path / "exp" / "trial_driver_rerun000_1"
    trial_dir.mkdir(parents=True)
    lines = [(1, 0, 0.5), (2, 1, 0.6), (1, 2, 0.7), (2, 3, 0.8)]  # the first run, then the rerun from epoch 2
    (trial_dir / "result.json").write_text(
        "\n".join(
            json.dumps({"trial_id": "rerun000", "training_iteration": i, "epoch": e, METRIC: v}) for i, e, v in lines
        )
    )
    curve = rec.read_curves(tmp_path / "exp")["rerun000"]
    assert curve["training_iteration"].tolist() == [1, 2, 3, 4] and curve[METRIC].tolist() == [0.5, 0.6, 0.7, 0.8]


def test_a_checkpoint_in_object_storage_is_fetched_once_into_the_sweep_folder(tmp_path, monkeypatch) -> None:
    """``fetch_checkpoint`` returns a local trial's file as it is and copies a remote one under checkpoints/ (a
    ``file://`` URI stands in for the object store here; tests/test_cluster.py uses a real S3 server)."""
    from guitar_cls import storage

    local = rec.TrialRecord("loc00000", "TERMINATED", "completed", 1, 0.5, 0.5, None, str(tmp_path / "ckpt"))
    assert rec.fetch_checkpoint(local, tmp_path / "sweep") == tmp_path / "ckpt" / "best.pt"

    (tmp_path / "bucket" / "train-x" / "checkpoint_1").mkdir(parents=True)
    (tmp_path / "bucket" / "train-x" / "checkpoint_1" / "best.pt").write_bytes(b"weights")
    monkeypatch.setattr(storage, "is_remote", lambda p: str(p).startswith("file://"))
    remote = rec.TrialRecord("rem00000", "TERMINATED", "completed", 1, 0.5, 0.5, None,
                             f"file://{tmp_path}/bucket/train-x/checkpoint_1")  # fmt: skip
    got = rec.fetch_checkpoint(remote, tmp_path / "sweep")
    assert got == tmp_path / "sweep" / rec.CHECKPOINTS_DIR / "rem00000" / "best.pt" and got.read_bytes() == b"weights"
