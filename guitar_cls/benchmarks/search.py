"""Search efficiency: does TPE + ASHA find a good model with fewer trial-epochs than random search without early
stopping? Prints one JSON line.

Both searches get the same small space (the arch families, learning rate, dropout; at most ``--max-epochs`` epochs a
trial), the same seed, data and wall-clock budget, one after the other on the same machine; neither registers a
model. From each sweep's record and Tune's per-epoch results the benchmark counts the trial-epochs spent, the best
validation score, and how many trial-epochs each search had spent (in the order the epochs finished) when it first
reached random search's final best. Goal: TPE + ASHA gets there with <= 1/3 of random's trial-epochs.

    python jobs/benchmark.py search [--budget-s 900] [--max-epochs 6] [--seed 0] [--smoke-test]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from guitar_cls.logs import setup_logging
from guitar_cls.tune.record import SweepRecord, read_curves

log = logging.getLogger(__name__)

METRIC = "val/balanced_accuracy"
PARAMS: dict[str, Any] = {
    "model.name": {"choice": ["resnet", "mobilenet_v3_small", "efficientnet_b0"]},
    "model.params.base_width": {"choice": [8, 16, 24], "when": {"model.name": "resnet"}},
    "model.params.blocks": {"choice": [[1, 1, 1, 1], [2, 2, 2, 2]], "when": {"model.name": "resnet"}},
    "model.params.width_mult": {
        "choice": [0.5, 0.75],
        "when": {"model.name": ["mobilenet_v3_small", "efficientnet_b0"]},
    },
    "model.params.depth_mult": {"choice": [0.33], "when": {"model.name": "efficientnet_b0"}},
    "model.params.dropout": {"uniform": [0.1, 0.5]},
    "training.learning_rate": {"loguniform": [1.0e-4, 1.0e-2]},
}


def space_spec(name: str, algorithm: str, scheduler: str, budget_s: float, max_epochs: int, seed: int) -> dict:
    """Returns one arm's search space: ``algorithm`` (tpe | random) with ``scheduler`` (asha | fifo)."""
    search: dict[str, Any] = {"algorithm": algorithm, "seed": seed}
    if algorithm == "tpe":
        search["n_startup_trials"] = 4
    sched: dict[str, Any] = {"type": scheduler}
    if scheduler == "asha":
        # the first rung after a third of the epochs, as search_spaces/deploy.yaml (2 of 6): at epoch 1 the fast
        # starters (mobilenet) lead and ASHA stopped every resnet, the family that is best by epoch 6
        sched |= {"grace_period": max(1, round(max_epochs / 3)), "reduction_factor": 3}
    return {
        "name": name,
        "metric": METRIC,
        "mode": "max",
        "search": search,
        "scheduler": sched,
        "budget": {
            "num_samples": 200,
            "max_epochs": max_epochs,
            "time_budget_s": budget_s,
            "max_concurrent_trials": 1,
        },  # fmt: skip
        "fixed": {"training.batch_size": 32, "training.early_stopping_patience": max_epochs},
        "params": PARAMS,
    }


def epoch_trace(experiment_dir: Path, metric: str = METRIC) -> pd.DataFrame:
    """Returns every reported epoch of a sweep in the order it finished: columns trial_id, epoch, value,
    trial_epochs (the count of epochs spent so far, this one included) and best_so_far."""
    rows = []
    for trial_id, df in read_curves(experiment_dir).items():
        if metric not in df:
            continue
        order = df["timestamp"] if "timestamp" in df else df["training_iteration"]
        for t, it, v in zip(order, df["training_iteration"], df[metric]):
            rows.append({"trial_id": trial_id, "epoch": int(it), "value": float(v), "t": float(t)})
    trace = pd.DataFrame(rows, columns=["trial_id", "epoch", "value", "t"])
    trace = trace.sort_values(["t", "trial_id", "epoch"], kind="stable").reset_index(drop=True)
    trace["trial_epochs"] = range(1, len(trace) + 1)
    trace["best_so_far"] = trace["value"].cummax()
    return trace.drop(columns="t")


def epochs_to_reach(trace: pd.DataFrame, target: float) -> int | None:
    """Returns the trial-epochs spent when ``trace`` first reached ``target``, or None if it never did."""
    hit = trace.index[trace["value"] >= target - 1e-12]
    return int(trace.loc[hit[0], "trial_epochs"]) if len(hit) else None


def summarize(traces: dict[str, pd.DataFrame], records: dict[str, SweepRecord]) -> dict[str, Any]:
    """Returns the benchmark's figures from the two arms' epoch traces (``tpe_asha`` and ``random``)."""
    target = float(traces["random"]["value"].max()) if len(traces["random"]) else float("nan")
    line: dict[str, Any] = {"random_best_val": round(target, 4)}
    for arm, trace in traces.items():
        line[f"{arm}_best_val"] = round(float(trace["value"].max()), 4) if len(trace) else None
        line[f"{arm}_trials"] = len(records[arm].trials)
        line[f"{arm}_trial_epochs"] = len(trace)
        line[f"{arm}_epochs_to_random_best"] = epochs_to_reach(trace, target)
    a, b = line["tpe_asha_epochs_to_random_best"], line["random_epochs_to_random_best"]
    line["epochs_to_random_best_ratio"] = round(a / b, 3) if a is not None and b else None
    line["goal_met"] = line["epochs_to_random_best_ratio"] is not None and line["epochs_to_random_best_ratio"] <= 1 / 3
    return line


def run_arm(out: Path, arm: str, spec: dict[str, Any], overrides: list[tuple[str, Any]]) -> tuple[Any, Any]:
    """Runs one arm's sweep (no registration) and returns (its epoch trace, its record)."""
    from guitar_cls.tune.sweep import run_sweep

    path = out / f"{arm}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    t0 = time.perf_counter()
    run_sweep(path, overrides=overrides, name=spec["name"], register=False)
    log.info("search benchmark: %s took %.0f s", arm, time.perf_counter() - t0)
    out_dir = Path(dict(overrides)["logging.output_dir"])
    record = SweepRecord.read(out_dir / "sweeps" / spec["name"])
    return epoch_trace(out_dir / "ray_results" / spec["name"]), record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budget-s", type=float, default=900.0, help="wall-clock budget of each search")
    parser.add_argument("--max-epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", help="folder for both sweeps' outputs (default: a temporary one)")
    parser.add_argument("--smoke-test", action="store_true", help="tiny demo set, 2 epochs, 60 s per search")
    args = parser.parse_args(argv)
    setup_logging()
    tmp = tempfile.TemporaryDirectory(prefix="search_bench_") if args.out is None else None
    out = Path(args.out or tmp.name).resolve()  # type: ignore[union-attr]
    out.mkdir(parents=True, exist_ok=True)
    overrides: list[tuple[str, Any]] = [("logging.output_dir", str(out))]
    budget, max_epochs = args.budget_s, args.max_epochs
    if args.smoke_test:
        budget, max_epochs = min(budget, 60.0), 2
        overrides += [("data.demo_recordings", 12), ("data.demo_dir", str(out / "demo")), ("features.n_mels", 64)]
    overrides += [tuple(s.split("=", 1)) for s in args.set]  # type: ignore[misc]
    arms = {
        "tpe_asha": space_spec("bench_tpe_asha", "tpe", "asha", budget, max_epochs, args.seed),
        "random": space_spec("bench_random", "random", "fifo", budget, max_epochs, args.seed),
    }
    traces, records = {}, {}
    for arm, spec in arms.items():
        traces[arm], records[arm] = run_arm(out, arm, spec, overrides)
    line = {"benchmark": "search", "budget_s": budget, "max_epochs": max_epochs, "seed": args.seed}
    line |= summarize(traces, records)
    print(json.dumps(line))
    if tmp is not None:
        tmp.cleanup()
    return 0
