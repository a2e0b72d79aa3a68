"""benchmarks/gpu.py: the GPU machine's checks of the training path, run here on CPU on a small data file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from guitar_cls.benchmarks import gpu

SR = 22050


def _note(kind: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SR * rng.uniform(0.3, 0.6))) / SR
    f0 = rng.uniform(110, 440)
    if kind == 0:  # harmonic-like: one high partial, slow decay
        wave = np.sin(2 * np.pi * 4 * f0 * t) * np.exp(-2 * t)
    elif kind == 1:  # dead-note-like: a short noise burst
        wave = rng.normal(size=t.size) * np.exp(-40 * t)
    else:  # a plucked tone with partials
        wave = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * np.exp(-4 * t)
    return (wave / np.abs(wave).max()).astype(np.float32)


@pytest.fixture(scope="module")
def check_file(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    waves, labels, rows = [], [], {}
    for name, per_class in (("synth_train", 8), ("synth_val", 3), ("samples_train", 6), ("samples_val", 3)):
        ids = []
        for kind in range(3):
            for _ in range(per_class):
                ids.append(len(waves))
                waves.append(_note(kind, rng))
                labels.append(kind)
        rows[name] = ids
    path = gpu.write_check_data(tmp_path_factory.mktemp("gpu") / "check.npz", waves, np.array(labels), rows)
    return str(path)


def test_the_data_file_round_trips_as_float16(check_file):
    sets = gpu.read_check_data(check_file)
    assert {k: len(v) for k, v in sets.items()} == {"synth_train": 24, "synth_val": 9, "samples_train": 18,
                                                    "samples_val": 9}  # fmt: skip
    first = sets["synth_train"]
    assert first.lengths[0] == len(first.waves[0]) and first.waves[0].dtype == np.float32
    assert np.abs(first.waves[0]).max() == pytest.approx(1.0, abs=1e-3)  # peak-normalised, float16 precision
    assert list(first.labels[:9]) == [0] * 8 + [1]
    assert sets["samples_val"].labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_the_checks_run_on_cpu_and_report_what_they_measured(check_file, capsys):
    sets = gpu.read_check_data(check_file)
    checks = ["env", "augment", "fit", "agree", "strides", "ddp"]
    records = gpu.run_checks(sets, gpu.torch.device("cpu"), checks, [42], ["training.epochs=1"])
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == records
    by = {}
    for r in records:
        by.setdefault(r["check"], []).append(r)
    assert by["env"][0]["synth_train"] == 24 and by["env"][0]["device"] == "cpu"
    assert by["augment"][0]["finite"] and not by["augment"][0]["channels_last"]
    fits = {(r["direction"], r["seed"]): r for r in by["fit"]}
    assert set(fits) == {("synth_to_samples", 42), ("samples_to_synth", 42)}
    assert fits["synth_to_samples", 42]["n_train"] == 24 and fits["synth_to_samples", 42]["n_test"] == 27
    assert fits["samples_to_synth", 42]["n_test"] == 33 and fits["samples_to_synth", 42]["epochs_run"] == 1
    assert 0.0 <= fits["synth_to_samples", 42]["balanced_accuracy"] <= 1.0
    agree = by["agree"][0]  # CPU against CPU: the same numbers
    assert agree["n"] == 27 and agree["fp32_max_abs_diff"] == 0.0 and agree["fp32_same_class"] == 1.0
    assert [r["model"] for r in by["strides"]] == list(gpu.ARCHS)
    assert all(r["mismatched_aligned"] == 0 and r["params"] > 10 for r in by["strides"])
    assert [(r["model"], r["backend"], r["epochs_run"]) for r in by["ddp"]] == [(m, "gloo", 1) for m in gpu.ARCHS]
    assert all(r["unwrapped_checkpoint"] for r in by["ddp"])
    assert not gpu.torch.distributed.is_initialized()  # the one-rank group is gone again


def test_the_command_names_a_missing_file_and_unknown_checks(tmp_path, check_file, capsys):
    with pytest.raises(SystemExit):
        gpu.main([str(tmp_path / "nope.npz"), "--device", "cpu"])
    assert "--export" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        gpu.main([check_file, "--device", "cpu", "--checks", "env,warp"])
    assert "unknown checks ['warp']" in capsys.readouterr().err


def test_the_checks_need_neither_ray_nor_mlflow(check_file):
    # the GPU machine has neither: importing either one there fails, as it does here with them blocked
    code = (
        "import sys; sys.modules['ray'] = None; sys.modules['mlflow'] = None\n"
        "from guitar_cls.benchmarks import gpu\n"
        f"gpu.main([{check_file!r}, '--device', 'cpu', '--checks', 'env,augment,profile', '--threads', '1'])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    checks = [json.loads(line)["check"] for line in done.stdout.splitlines() if line.startswith("{")]
    assert checks == ["env", "augment", "profile", "profile"]
