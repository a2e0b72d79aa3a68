"""The search-efficiency benchmark's bookkeeping: epochs are counted in the order they finished across trials, and
"epochs to reach random's best" is read from that order (the sweeps themselves run in `benchmark.py search`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guitar_cls.benchmarks.search import METRIC, epoch_trace, epochs_to_reach, space_spec, summarize
from guitar_cls.tune.space import space_from_dict


def _write_trial(exp: Path, trial_id: str, start: int, values: list[float]) -> None:
    d = exp / f"trial_{trial_id}"
    d.mkdir(parents=True)
    lines = [
        json.dumps({"trial_id": trial_id, "training_iteration": i + 1, "timestamp": start + 10 * i, METRIC: v})
        for i, v in enumerate(values)
    ]
    (d / "result.json").write_text("\n".join(lines) + "\n")


def test_epochs_are_ordered_by_when_they_finished(tmp_path):
    # trial b starts after a's second epoch and overlaps a's third: the trace interleaves them by time
    _write_trial(tmp_path, "a", 0, [0.4, 0.5, 0.6])
    _write_trial(tmp_path, "b", 15, [0.7, 0.9])
    trace = epoch_trace(tmp_path)
    assert list(zip(trace["trial_id"], trace["epoch"])) == [("a", 1), ("a", 2), ("b", 1), ("a", 3), ("b", 2)]
    assert list(trace["trial_epochs"]) == [1, 2, 3, 4, 5]
    assert list(trace["best_so_far"]) == [0.4, 0.5, 0.7, 0.7, 0.9]
    assert epochs_to_reach(trace, 0.7) == 3
    assert epochs_to_reach(trace, 0.95) is None


def test_summary_compares_the_epochs_each_search_needed_for_randoms_best(tmp_path):
    for arm, trials in {
        "tpe_asha": [("t1", 0, [0.5]), ("t2", 20, [0.6]), ("t3", 40, [0.8, 0.85])],
        "random": [("r1", 0, [0.5, 0.6, 0.7]), ("r2", 100, [0.4, 0.6, 0.8])],
    }.items():
        for trial_id, start, values in trials:
            _write_trial(tmp_path / arm, trial_id, start, values)
    traces = {arm: epoch_trace(tmp_path / arm) for arm in ("tpe_asha", "random")}

    class _Record:
        def __init__(self, n: int) -> None:
            self.trials = [object()] * n

    line = summarize(traces, {"tpe_asha": _Record(3), "random": _Record(2)})
    assert line["random_best_val"] == 0.8 and line["tpe_asha_best_val"] == 0.85
    assert line["tpe_asha_trial_epochs"] == 4 and line["random_trial_epochs"] == 6
    assert line["tpe_asha_epochs_to_random_best"] == 3 and line["random_epochs_to_random_best"] == 6
    assert line["epochs_to_random_best_ratio"] == pytest.approx(0.5)
    assert line["goal_met"] is False


@pytest.mark.parametrize(("algorithm", "scheduler"), [("tpe", "asha"), ("random", "fifo")])
def test_both_arms_are_valid_spaces_with_the_same_params_and_budget(algorithm, scheduler):
    spec = space_spec("bench", algorithm, scheduler, 120.0, 4, 3)
    space = space_from_dict(spec, "bench.yaml")
    assert space.search.algorithm == algorithm and space.scheduler.type == scheduler
    assert space.budget.time_budget_s == 120.0 and space.budget.max_epochs == 4
    if scheduler == "asha":  # the first rung after a third of the epochs (as deploy.yaml), not after epoch 1
        assert (
            space.scheduler.grace_period == 1
            and space_spec("b", "tpe", "asha", 1.0, 6, 0)["scheduler"]["grace_period"] == 2
        )
    assert spec["params"] == space_spec("x", "random", "fifo", 1.0, 1, 0)["params"]
