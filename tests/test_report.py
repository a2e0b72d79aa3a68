"""Sweep report: a hand-made finished sweep (its record through tune.record, one result.json per trial as Tune
writes it) -> report.md, figures, Pareto front, importance, recommendations; stop reasons read from the record; the
space's metric ranks; old leaderboard.csv records still read; no Ray import; errors; the job."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from guitar_cls import report as rp
from guitar_cls.outputs import MARKER, OutputFolderError
from guitar_cls.report import legacy
from guitar_cls.tune.record import LEADERBOARD_CSV, TRIALS_FILE, SweepRecord, TrialRecord, best_key

METRIC = "val/balanced_accuracy"
BEST_KEY = best_key(METRIC)

ROOT = Path(__file__).resolve().parents[1]
SPACE = """
name: fake
metric: val/balanced_accuracy
mode: max
search: {algorithm: tpe, seed: 0}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
budget: {num_samples: 4, max_epochs: 4}
fixed: {training.early_stopping_patience: 3}
params:
  model.name: {choice: [resnet, mobilenet_v3_small]}
  model.params.base_width: {choice: [8, 16], when: {model.name: resnet}}
  model.params.dropout: {uniform: [0.1, 0.5]}
  training.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}
"""
# trial id -> (params, val balanced accuracy per epoch, latency ms). ASHA rungs of the space: epochs 1 and 2.
TRIALS = {
    "a1b2c3d4": (
        {
            "model.name": "resnet",
            "model.params.base_width": 16,
            "model.params.dropout": 0.2,
            "training.learning_rate": 1e-3,
        },
        [0.70, 0.80, 0.85, 0.90],
        20.0,
    ),
    "00123456": (
        {"model.name": "mobilenet_v3_small", "model.params.dropout": 0.3, "training.learning_rate": 2e-3},
        [0.72, 0.78, 0.82, 0.86],
        8.0,
    ),
    "b8c9d0e1": (
        {"model.name": "mobilenet_v3_small", "model.params.dropout": 0.1, "training.learning_rate": 3e-3},
        [0.70, 0.75, 0.80, 0.85],
        12.0,
    ),
    "f2a3b4c5": (
        {
            "model.name": "resnet",
            "model.params.base_width": 8,
            "model.params.dropout": 0.4,
            "training.learning_rate": 5e-4,
        },
        [0.60, 0.65],
        10.0,
    ),  # stopped by ASHA at epoch 2
}
ORDER = ["a1b2c3d4", "00123456", "b8c9d0e1", "f2a3b4c5"]  # by best val balanced accuracy
TEST_METRICS = {
    "accuracy": 0.88,
    "balanced_accuracy": 0.86,
    "macro_f1": 0.84,
    **{f"precision/{c}": p for c, p in (("harmonic", 0.9), ("dead_note", 0.85), ("general_note", 0.87))},
    **{f"recall/{c}": r for c, r in (("harmonic", 0.6), ("dead_note", 0.95), ("general_note", 0.95))},
    **{f"f1/{c}": f for c, f in (("harmonic", 0.72), ("dead_note", 0.9), ("general_note", 0.91))},
    **{f"support/{c}": n for c, n in (("harmonic", 20), ("dead_note", 20), ("general_note", 40))},
    "confusion_matrix": [[12, 1, 7], [0, 19, 1], [1, 1, 38]],
}


def write_sweep(
    root: Path,
    trials: dict = TRIALS,
    name: str = "fake",
    space: bool = True,
    *,
    stop_reasons: dict[str, str] | None = None,
    metric: str = METRIC,
    legacy_csv: bool = False,
) -> Path:
    """Writes a finished sweep as run_sweep and Tune leave it under ``root/outputs`` and returns the output dir.

    The record's stop reason of a trial is ``stop_reasons[id]``, else ``completed`` for 4 epochs and ``asha``
    below. ``legacy_csv``: write the leaderboard.csv of sweeps from before trials.json instead (no stop reasons).
    """
    out, storage = root / "outputs", root / "outputs" / "ray_results"
    records, rows = [], []
    for i, (tid, (params, curve, latency)) in enumerate(trials.items()):
        config = {**params, "training.epochs": 4}
        ckpt = storage / f"train-{tid}" / f"checkpoint_2026-01-01_00-00-0{i}.000000"
        trial_dir = storage / name / f"trial_driver_{tid}_{i + 1}_model_name={params['model.name']}_2026-01-01"
        trial_dir.mkdir(parents=True)
        (trial_dir / "params.json").write_text(json.dumps(config, indent=2))
        lines, total = [], 0.0
        for epoch, acc in enumerate(curve):
            total += 2.0 + epoch
            lines.append(
                json.dumps(
                    {
                        "epoch": epoch,
                        "train/loss": 1.1 - 0.1 * epoch - acc / 10,
                        metric: acc,
                        best_key(metric): max(curve[: epoch + 1]),
                        "epoch_s": 2.0,
                        "latency_ms": latency,
                        "checkpoint_path": str(ckpt),
                        "done": False,
                        "training_iteration": epoch + 1,
                        "trial_id": tid,
                        "time_this_iter_s": 2.0 + epoch,
                        "time_total_s": total,
                        "config": config,
                    }
                )
            )
        (trial_dir / "result.json").write_text("\n".join(lines) + "\n")
        reason = (stop_reasons or {}).get(tid) or ("completed" if len(curve) >= 4 else "asha")
        records.append(
            TrialRecord(tid, "TERMINATED", reason, len(curve), max(curve), curve[-1], latency, str(ckpt), config)
        )
        rows.append(
            {
                "trial_id": tid,
                "status": "TERMINATED",
                BEST_KEY: max(curve),
                "last/val/balanced_accuracy": curve[-1],
                "epochs": len(curve),
                "latency_ms": latency,
                "checkpoint_path": str(ckpt),
                **{k: json.dumps(v) if isinstance(v, list) else v for k, v in config.items()},
            }
        )
    sweep_dir = out / "sweeps" / name
    sweep_dir.mkdir(parents=True)
    record = SweepRecord(name, metric, "max", 4, records)
    best = record.best_trial()
    summary = {
        "sweep": name,
        "wall_s": 120.0,
        "trials": len(records),
        "errors": 0,
        "best_trial": best.trial_id,
        "checkpoint": str(best.checkpoint),
        "test": TEST_METRICS,
    }
    if space:
        (root / "space.yaml").write_text(SPACE.replace("metric: val/balanced_accuracy", f"metric: {metric}"))
        summary["space_file"] = str(root / "space.yaml")
    record.summary = summary
    if legacy_csv:
        pd.DataFrame(rows).sort_values(BEST_KEY, ascending=False).to_csv(sweep_dir / LEADERBOARD_CSV, index=False)
        (sweep_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    else:
        record.write(sweep_dir)
    return out


def section(text: str, title: str) -> str:
    """Returns the body of the ``## title`` section of a markdown text."""
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def fake_report(tmp_path_factory: pytest.TempPathFactory) -> rp.SweepReport:
    root = tmp_path_factory.mktemp("sweep")
    out = write_sweep(root)
    return rp.build_report("fake", root / "report", output_dir=out, evaluate_champion=False)


def test_leaderboard_rows_in_order(fake_report: rp.SweepReport) -> None:
    board = section(fake_report.path.read_text(), "Leaderboard")
    rows = [line for line in board.splitlines() if re.match(r"\| \d+ \|", line)]
    assert [line.split(" | ")[1] for line in rows] == ORDER  # the leading-zero id stays a string
    assert "| resnet | 16 | 0.2 | 1.00e-03 | 0.9000 |" in rows[0]
    assert "| mobilenet_v3_small | – |" in rows[1]  # base_width is resnet-only
    assert rows[3].endswith("| 2/4 | 10.0 | ASHA @ 2 |") and rows[0].endswith("| no |")


def test_trials_are_annotated(fake_report: rp.SweepReport) -> None:
    board = fake_report.sweep.board.set_index("trial_id")
    assert board["stop_reason"].to_dict() == dict.fromkeys(ORDER[:3], "completed") | {"f2a3b4c5": "asha"}
    assert board.loc["00123456", "family"] == "mobilenet_v3_small"
    assert set(fake_report.sweep.curves) == set(ORDER)
    assert fake_report.sweep.params == list(TRIALS["a1b2c3d4"][0])


def test_every_figure_exists(fake_report: rp.SweepReport) -> None:
    text = fake_report.path.read_text()
    linked = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    expected = {
        "confusion_matrix.png",
        "parallel_coordinates.png",
        "importance.png",
        "learning_curves.png",
        "pareto.png",
    }
    assert set(linked) == set(fake_report.figures) == expected
    for name in linked:
        assert (fake_report.path.parent / name).stat().st_size > 1000
    assert not list(fake_report.path.parent.parent.glob(".report.*"))  # the temporary folder is gone


def test_pareto_front(fake_report: rp.SweepReport) -> None:
    assert fake_report.front["trial_id"].tolist() == ["00123456", "a1b2c3d4"]  # fastest first
    pareto = section(fake_report.path.read_text(), "Accuracy vs latency")
    assert re.findall(r"^\| (\w+) \| \w+ \| 0\.\d+ \|", pareto, re.M) == ["00123456", "a1b2c3d4"]


def test_importance(fake_report: rp.SweepReport) -> None:
    values = fake_report.importance.values
    assert values and set(values) <= set(fake_report.sweep.params)
    assert sum(values.values()) == pytest.approx(1.0)
    assert list(values.values()) == sorted(values.values(), reverse=True)
    text = section(fake_report.path.read_text(), "Parameter importance")
    assert "4 finished trials" in text and next(iter(values)) in text


def test_recommendations(fake_report: rp.SweepReport) -> None:
    advice = "\n".join(fake_report.recommendations)
    assert (
        "Best family: **resnet**, 0.0400 ahead of mobilenet_v3_small (best val BA per family: resnet 0.9000 "
        "(2 trials), mobilenet_v3_small 0.8600 (2 trials))." in advice
    )
    assert "ASHA stopped 1 of 4 trials early (at epochs 2), saving 2 trial-epochs" in advice
    assert "about 4 s of training" in advice
    assert "trailed the best trial a1b2c3d4 at the same epoch (by 0.150)" in advice
    assert "a1b2c3d4 is also the fastest within 1 point" in advice
    assert f"Most important parameter: `{next(iter(fake_report.importance.values))}`" in advice
    assert (
        "Weakest class on the test split: **harmonic** (F1 0.720). 7 of 20 harmonic events were predicted as "
        "general_note" in advice
    )
    assert "Quality bars: 3 of 5 met; not met: every per-class F1 0.720 (needs > 0.75); harmonic recall" in advice
    assert section(fake_report.path.read_text(), "Recommendations").count("\n- ") == len(fake_report.recommendations)


def test_quality_bars() -> None:
    bars = {b["name"]: b for b in rp.quality_bars(TEST_METRICS, 49.0)}
    assert {k: b["passed"] for k, b in bars.items()} == {
        "balanced accuracy": True,
        "every per-class F1": False,
        "harmonic recall": False,
        "dead-note precision": True,
        "CPU latency (ms)": True,
    }
    assert bars["every per-class F1"]["value"] == 0.72 and "harmonic" in bars["every per-class F1"]["detail"]
    assert rp.quality_bars(TEST_METRICS, 50.0)[-1]["passed"] is False  # strictly below 50 ms
    assert all(b["passed"] is None for b in rp.quality_bars(None, None))


def test_legacy_stop_rules() -> None:
    assert legacy.epochs_without_improvement(pd.Series([0.5, 0.6, 0.6, 0.55, 0.59])) == 3
    assert legacy.epochs_without_improvement(pd.Series([0.5, 0.6])) == 0
    from guitar_cls.tune.space import load_space

    arch = load_space(ROOT / "search_spaces" / "arch.yaml")
    assert legacy.asha_rungs(arch, arch.budget.max_epochs) == {3, 9}
    assert legacy.asha_rungs(load_space(ROOT / "search_spaces" / "smoke.yaml"), 2) == set()  # fifo


def test_stop_reasons_are_read_from_the_record(tmp_path: Path) -> None:
    # Each recorded reason contradicts what the curves would suggest: the report must not re-derive them.
    params = {**TRIALS["b8c9d0e1"][0], "training.early_stopping_patience": 2}
    trials = {
        "a0a0a0a0": (params, [0.5, 0.6, 0.7], 12.0),  # still improving, not at a rung: ASHA's decision all the same
        "e0e0e0e0": (params, [0.5, 0.6], 12.0),  # at the rung 2 and improving: the loop said it stopped itself
        "c0c0c0c0": (params, [0.9, 0.5, 0.5], 12.0),  # looks early-stopped, was cut by the time budget
    }
    reasons = {"a0a0a0a0": "asha", "e0e0e0e0": "early_stop", "c0c0c0c0": "budget"}
    out = write_sweep(tmp_path, trials, stop_reasons=reasons)
    record = SweepRecord.read(out / "sweeps" / "fake")
    record.trials.append(TrialRecord("ffff0000", "ERROR", "error", 1, None, None, None, None, dict(params)))
    record.write(out / "sweeps" / "fake")
    report = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    assert report.sweep.board.set_index("trial_id")["stop_reason"].to_dict() == {**reasons, "ffff0000": "error"}
    rows = {
        line.split(" | ")[1]: line
        for line in section(report.path.read_text(), "Leaderboard").splitlines()
        if re.match(r"\| \d+ \|", line)
    }
    assert rows["a0a0a0a0"].endswith("| 3/4 | 12.0 | ASHA @ 3 |")
    assert rows["e0e0e0e0"].endswith("| 2/4 | 12.0 | early stop @ 2 |")
    assert rows["c0c0c0c0"].endswith("| 3/4 | 12.0 | cut @ 3 |")
    assert rows["ffff0000"].endswith("| 1/4 | – | error |")
    head = report.path.read_text().splitlines()[2]
    assert "(1 error, 1 stopped by ASHA, 1 stopped by early stopping, 1 cut by the time budget)" in head


def test_legacy_record_infers_early_stopping_and_time_budget(tmp_path: Path) -> None:
    # Patience 2 (the trial's own config beats the space's fixed 3); every trial ends at epoch 3, not an ASHA rung.
    params = {**TRIALS["b8c9d0e1"][0], "training.early_stopping_patience": 2}
    trials = {
        "d0d0d0d0": (params, [0.9, 0.5, 0.5], 12.0),  # 2 epochs without improvement: stopped itself
        "d0d0d0d1": (params, [0.7, 0.85, 0.84], 12.0),  # 1 epoch without improvement: cut by the time budget
        "d0d0d0d2": (params, [0.5, 0.8, 0.7, 0.6], 12.0),  # ran to max_epochs
        "d0d0d0d3": (params, [0.5, 0.6], 12.0),  # rung 2
    }
    board = rp.load_sweep("fake", write_sweep(tmp_path, trials, legacy_csv=True)).board
    assert board.set_index("trial_id")["stop_reason"].to_dict() == {
        "d0d0d0d0": "early_stop",
        "d0d0d0d1": "budget",
        "d0d0d0d2": "completed",
        "d0d0d0d3": "asha",
    }


def test_too_few_trials_gives_a_note(tmp_path: Path) -> None:
    out = write_sweep(tmp_path, {"a1b2c3d4": TRIALS["a1b2c3d4"]})
    report = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    assert report.importance.values == {}
    assert "needs at least 2 finished trials; this sweep has 1" in report.path.read_text()
    assert "importance.png" not in report.figures and not (report.path.parent / "importance.png").exists()
    assert "All trials used **resnet**" in report.recommendations[0]


def test_without_space_file_distributions_are_inferred(tmp_path: Path) -> None:
    out = write_sweep(tmp_path, space=False, legacy_csv=True)
    sweep = rp.load_sweep("fake", out)
    assert sweep.space is None and set(sweep.params) == set(TRIALS["a1b2c3d4"][0])
    dists = rp.distributions(sweep)
    assert dists["model.name"].choices == ("mobilenet_v3_small", "resnet")
    assert dists["model.params.dropout"].low == 0.1 and dists["model.params.dropout"].high == 0.4
    report = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    assert report.importance.values and (tmp_path / "report" / "parallel_coordinates.png").is_file()
    assert report.sweep.board.set_index("trial_id").loc["f2a3b4c5", "stop_reason"] == "budget"  # no ASHA known


def test_distribution_value_reads_csv_values() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    blocks = CategoricalDistribution(["[1, 1, 1, 1]", "[2, 2, 2, 2]"])
    assert rp.distribution_value(blocks, "[2, 2, 2, 2]") == "[2, 2, 2, 2]"
    assert rp.distribution_value(CategoricalDistribution([16, 24]), 24.0) == 24
    assert rp.distribution_value(CategoricalDistribution([True, False]), "False") is False
    assert rp.distribution_value(CategoricalDistribution([1, True]), True) is True
    assert rp.distribution_value(CategoricalDistribution([16, 24]), np.nan) is None
    assert rp.distribution_value(FloatDistribution(0.1, 0.5, step=0.1), 0.30000001) == pytest.approx(0.3)
    assert rp.distribution_value(IntDistribution(4, 24, step=4), 12.0) == 12


def test_missing_sweep_names_the_path(tmp_path: Path) -> None:
    out = write_sweep(tmp_path)
    with pytest.raises(rp.SweepNotFound, match=re.escape(str(out / "sweeps" / "nope" / TRIALS_FILE))) as e:
        rp.build_report("nope", tmp_path / "report", output_dir=out)
    assert "finished sweeps under" in str(e.value) and str(e.value).endswith(": fake)")
    assert not (tmp_path / "report").exists()


def test_champion_evaluation_needs_its_data(tmp_path: Path) -> None:
    out = write_sweep(tmp_path)
    with pytest.raises(rp.ReportError, match="best checkpoint .* is missing; use --no-evaluate"):
        rp.build_report("fake", tmp_path / "report", output_dir=out)
    assert not (tmp_path / "report").exists() and not list(tmp_path.glob(".report.*"))


def test_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path: Path) -> None:
    out = write_sweep(tmp_path)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputFolderError, match="precious is not empty and is not a previous sweep report"):
        rp.build_report("fake", tmp_path / "precious", output_dir=out, evaluate_champion=False)
    assert [p.name for p in (tmp_path / "precious").iterdir()] == ["notes.txt"]
    forced = rp.build_report("fake", tmp_path / "precious", output_dir=out, evaluate_champion=False, overwrite=True)
    assert forced.path.is_file() and (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    first = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    again = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False, top=2)
    assert first.path == again.path and "top 2 of 4" in again.path.read_text()  # a report is replaced


def test_champion_evaluation_on_the_test_split(tmp_path: Path, tiny_demo: Path) -> None:
    from test_predict import tiny_checkpoint

    from guitar_cls.data.schema import read_metadata
    from guitar_cls.data.splits import make_splits, save_splits

    out = write_sweep(tmp_path)
    sweep_dir = out / "sweeps" / "fake"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    tiny_checkpoint(Path(summary["checkpoint"]))
    df = read_metadata(tiny_demo)
    save_splits(df, make_splits(df, seed=2), sweep_dir / "splits.csv")
    summary["metadata"] = str(tiny_demo)  # the keys the sweep owner is asked to add
    (sweep_dir / "summary.json").write_text(json.dumps(summary))
    report = rp.build_report("fake", tmp_path / "report", output_dir=out)
    eval_dir = tmp_path / "report" / "evaluation"
    saved = json.loads((eval_dir / "metrics.json").read_text())
    assert saved["split"] == "test" and saved["n_events"] == int(sum(make_splits(df, seed=2) == "test"))
    assert report.metrics["balanced_accuracy"] == saved["balanced_accuracy"]
    text = report.path.read_text()
    assert "![confusion matrix](evaluation/confusion_matrix.png)" in text
    assert (eval_dir / "confusion_matrix.png").stat().st_size > 1000
    marker = json.loads((tmp_path / "report" / MARKER).read_text())  # the evaluation's files count as the report's
    assert marker["kind"] == rp.REPORT_KIND and {"report.md", "evaluation/metrics.json"} <= set(marker["files"])
    champion = section(text, "Champion on the test split")
    assert "| harmonic |" in champion and "breakdown.csv" in champion
    assert ("Most confident mistakes" in champion) == (saved["accuracy"] < 1.0)
    test_sources = set(df.loc[make_splits(df, seed=2) == "test", "subset_id"])
    assert test_sources == {"synth", "samples"}  # seed 2 puts both demo sources in the test split
    assert "By source (`subset_id`): " in champion
    for source in test_sources:
        assert f"{source}: balanced accuracy" in champion


@pytest.mark.slow
def test_job(tmp_path: Path) -> None:
    out = write_sweep(tmp_path)
    cmd = [
        sys.executable,
        str(ROOT / "jobs" / "report.py"),
        "--sweep",
        "fake",
        "--out",
        str(tmp_path / "r"),
        "--output-dir",
        str(out),
        "--no-evaluate",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["best_trial"] == "a1b2c3d4" and result["pareto_front"] == ["00123456", "a1b2c3d4"]
    assert (tmp_path / "r" / "report.md").is_file()
    missing = subprocess.run([*cmd[:3], "nope", *cmd[4:]], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert missing.returncode != 0 and f"sweeps/nope/{TRIALS_FILE} not found" in missing.stderr


def test_errored_trial_is_listed_not_ranked(tmp_path: Path) -> None:
    out = write_sweep(tmp_path, legacy_csv=True)  # an old record: the error comes from the status column
    board_csv = out / "sweeps" / "fake" / LEADERBOARD_CSV
    board = pd.read_csv(board_csv, dtype={"trial_id": str})
    error = {"trial_id": "eeee0000", "status": "ERROR", "epochs": 0, "model.name": "resnet", "training.epochs": 4}
    pd.concat([board, pd.DataFrame([error])], ignore_index=True).to_csv(board_csv, index=False)
    report = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    rows = [line for line in section(report.path.read_text(), "Leaderboard").splitlines() if "| eeee0000 |" in line]
    assert len(rows) == 1 and rows[0].endswith("| 0/4 | – | error |")
    assert "eeee0000" not in report.front["trial_id"].tolist() and report.importance.n_trials == 4
    assert "4 trials" not in report.path.read_text().splitlines()[2] and "(1 error," in report.path.read_text()


def test_legacy_record_gives_the_same_report(tmp_path: Path) -> None:
    new = rp.build_report("fake", tmp_path / "a", output_dir=write_sweep(tmp_path / "new"), evaluate_champion=False)
    old = write_sweep(tmp_path / "old", legacy_csv=True)
    again = rp.build_report("fake", tmp_path / "b", output_dir=old, evaluate_champion=False)
    assert new.path.read_text() == again.path.read_text()


def test_the_space_metric_ranks_trials_and_picks_the_champion(tmp_path: Path) -> None:
    # Curves are of val/macro_f1 here; the record's best trial and the leaderboard follow them.
    out = write_sweep(tmp_path, metric="val/macro_f1")
    report = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    assert report.sweep.metric == "val/macro_f1" and report.sweep.best_key == "best/val/macro_f1"
    assert report.sweep.board["trial_id"].tolist() == ORDER and report.sweep.best["trial_id"] == ORDER[0]
    text = report.path.read_text()
    assert "Trials ranked by val/macro_f1 (max)." in text and "## Parameters vs macro f1" in text
    assert "| best val/macro_f1 | last val/macro_f1 |" in section(text, "Leaderboard")
    record = SweepRecord.read(out / "sweeps" / "fake")
    assert (
        record.best_trial().trial_id == json.loads((out / "sweeps" / "fake" / "summary.json").read_text())["best_trial"]
    )


def test_report_paths_are_relative_to_the_project(tmp_path: Path) -> None:
    out = write_sweep(tmp_path)
    report = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    assert str(tmp_path) not in report.path.read_text()
    assert rp.display_path(ROOT / "search_spaces" / "arch.yaml") == "search_spaces/arch.yaml"


def test_importing_the_report_imports_no_ray() -> None:
    code = "import sys, guitar_cls.report; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_multi_objective_sweep_shows_its_own_front_and_the_policy_pick(tmp_path: Path) -> None:
    # Three objectives: f2a3b4c5 is beaten on accuracy and latency but leads on the third, so it is on the front.
    out = write_sweep(tmp_path)
    sweep_dir = out / "sweeps" / "fake"
    record = SweepRecord.read(sweep_dir)
    record.objectives = [
        {"metric": METRIC, "mode": "max"},
        {"metric": "latency_ms", "mode": "min"},
        {"metric": "val/macro_f1", "mode": "max"},
    ]
    record.champion = {"kind": "fastest_within", "value": 0.05}
    f1 = {"a1b2c3d4": 0.80, "00123456": 0.79, "b8c9d0e1": 0.78, "f2a3b4c5": 0.90}
    for t in record.trials:
        t.values = {METRIC: t.best, "latency_ms": t.latency_ms, "val/macro_f1": f1[t.trial_id]}
    picked, why = record.champion_trial()
    assert picked.trial_id == "00123456"  # 0.86 is within 0.05 of 0.90, at 8 ms instead of 20
    record.summary |= {
        "best_trial": picked.trial_id,
        "champion": {"trial_id": picked.trial_id, "policy": "fastest_within: 0.05", METRIC: picked.best,
                     "latency_ms": picked.latency_ms, "reason": why},
    }  # fmt: skip
    record.write(sweep_dir)
    report = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False)
    assert report.front["trial_id"].tolist() == ["00123456", "f2a3b4c5", "a1b2c3d4"]  # fastest first
    text = report.path.read_text()
    front = section(text, "Pareto front")
    assert "ASHA is single-objective and pruned on the first one only (val/balanced_accuracy)" in front
    assert "| trial | family | best val BA | latency ms | last/val/macro_f1 |" in front
    assert "| f2a3b4c5 | resnet | 0.6500 | 10.0 | 0.9000 |" in front
    champion = section(text, "Champion on the test split")
    assert "policy `fastest_within: 0.05` picked trial **00123456**" in champion and "latency 8.00 ms" in champion
    assert report.sweep.best["trial_id"] == "00123456"


@pytest.mark.parametrize("used", [True, False])
def test_the_header_says_what_the_refit_gave(tmp_path: Path, used: bool) -> None:
    out = write_sweep(tmp_path)
    sweep_dir = out / "sweeps" / "fake"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    metric = "val/balanced_accuracy"
    summary["refit"] = {"trial_id": summary["best_trial"], "epochs": 30, "epochs_run": 24, metric: 0.8123,
                        f"trial_{metric}": 0.7811, "used": used}  # fmt: skip
    (sweep_dir / "summary.json").write_text(json.dumps(summary))
    text = rp.build_report("fake", tmp_path / "report", output_dir=out, evaluate_champion=False).path.read_text()
    header = text.split("\n## ", 1)[0]
    assert "refit for 30 epochs (24 run): val/balanced_accuracy 0.8123 against the trial's 0.7811" in header
    assert ("refit is the tested and registered model" in header) is used
    assert ("trial's own checkpoint stays" in header) is not used
    summary["refit"]["members"] = [{"seed": 42}, {"seed": 43}, {"seed": 44}]  # budget.refit_members: 3
    (sweep_dir / "summary.json").write_text(json.dumps(summary))
    text = rp.build_report("fake", tmp_path / "members", output_dir=out, evaluate_champion=False).path.read_text()
    assert "(24 run), 3 models (training seeds 42, 43, 44), their mean: val/balanced_accuracy 0.8123" in text
    summary["refit"] = {"trial_id": summary["best_trial"], "epochs": 30, "used": False, "error": "disk full"}
    (sweep_dir / "summary.json").write_text(json.dumps(summary))
    text = rp.build_report("fake", tmp_path / "again", output_dir=out, evaluate_champion=False).path.read_text()
    assert "its refit for 30 epochs failed (disk full): the trial's checkpoint stays" in text.split("\n## ", 1)[0]
