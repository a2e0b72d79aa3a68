"""Waveform cache: build with Ray Data, hits without audio work, keys, quarantine of bad audio, strict mode."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from guitar_cls.config import DataConfig
from guitar_cls.data import audio, pipeline
from guitar_cls.data.audio import AudioError, load_snippet
from guitar_cls.data.pipeline import (
    cache_dataset,
    cache_key,
    load_cache,
    metadata_fingerprint,
    preprocessing_settings,
)
from guitar_cls.data.schema import LABEL_TO_INDEX

SR = 44100


def _tone(seconds: float, freq: float = 196.0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * freq * t) * np.exp(-t)).astype(np.float32)


@pytest.fixture()
def good_set(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    """Two stereo/mono recordings with five notes: short, normal, 4 s long."""
    root = tmp_path / "audio"
    root.mkdir()
    sf.write(root / "a.wav", np.stack([_tone(6.0), _tone(6.0, 220.0)], axis=1), SR)
    sf.write(root / "b.wav", _tone(3.0), SR, subtype="FLOAT")
    df = pd.DataFrame(
        {
            "source_audio": ["a.wav", "a.wav", "b.wav", "a.wav", "b.wav"],
            "onset_sec": [0.0, 1.0, 0.5, 1.5, 2.0],
            "offset_sec": [0.2, 5.0, 1.3, 2.0, 2.9],
            "label_category": ["harmonic", "general_note", "dead_note", "general_note", "harmonic"],
        }
    )
    return df, root


def test_build_then_hit_does_no_audio_work(ray_local, good_set, tmp_path, monkeypatch) -> None:
    df, root = good_set
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    first = cache_dataset(df, root, cfg, progress=False)
    assert not first.hit and first.n_rows == 5 and first.quarantine.empty
    assert first.path == (tmp_path / "cache" / first.key) and (first.path / "manifest.json").is_file()
    cached = load_cache(first.path)
    assert list(cached.columns) == ["row", "window", "label", "source_audio", "waveform", "length"]
    assert cached["row"].tolist() == [0, 1, 2, 3, 4]
    assert cached["label"].tolist() == [LABEL_TO_INDEX[v] for v in df["label_category"]]
    assert cached["length"].tolist() == [int(0.2 * 22050), 3 * 22050, int(0.8 * 22050), int(0.5 * 22050), 19845]
    for wave, n in zip(cached["waveform"], cached["length"]):
        assert wave.dtype == np.float32 and wave.shape == (n,)
    # the cache holds what the shared preprocessing path gives for the same note, unpadded
    windows, lengths = load_snippet(root / "a.wav", 1.0, 5.0, cfg)
    np.testing.assert_array_equal(cached["waveform"][1], windows[0][: lengths[0]])

    # second run: no audio readable, no Ray Data, no reader call; it must still answer from the cache
    for f in root.iterdir():
        f.unlink()

    def boom(*a, **k):
        raise AssertionError("audio work on a cache hit")

    monkeypatch.setattr(pipeline, "read_segments", boom)
    monkeypatch.setattr(audio, "read_segments", boom)
    monkeypatch.setattr(ray_local.data, "from_items", boom)
    second = cache_dataset(df, root, cfg, progress=False)
    assert second.hit and second.key == first.key and second.n_rows == 5
    again = load_cache(second.path)
    assert all(np.array_equal(a, b) for a, b in zip(again["waveform"], cached["waveform"]))


def test_split_long_notes_give_several_windows(ray_local, good_set, tmp_path) -> None:
    df, root = good_set
    res = cache_dataset(df, root, DataConfig(cache_dir=str(tmp_path / "c"), long_notes="split"), progress=False)
    cached = load_cache(res.path)
    row1 = cached[cached["row"] == 1]
    assert row1["window"].tolist() == [0, 1] and row1["length"].tolist() == [3 * 22050, 22050]
    assert res.n_rows == 6


def test_any_setting_or_metadata_change_changes_the_key(good_set, monkeypatch) -> None:
    df, root = good_set
    cfg = DataConfig()
    base = cache_key(df, root, cfg)
    assert base == cache_key(df.copy(), root, dataclasses.replace(cfg, strict=True, cache_dir="elsewhere"))
    for change in [
        {"sample_rate": 16000},
        {"normalize": "rms"},
        {"min_duration": 0.4},
        {"max_duration": 2.0},
        {"long_notes": "split"},
        {"onset_offset_sec": -0.01},
    ]:
        assert cache_key(df, root, dataclasses.replace(cfg, **change)) != base, change
    moved = df.copy()
    moved.loc[2, "onset_sec"] = 0.51
    relabelled = df.copy()
    relabelled.loc[0, "label_category"] = "dead_note"
    for other in (moved, relabelled, df.iloc[::-1].reset_index(drop=True), df.iloc[:4]):
        assert metadata_fingerprint(other) != metadata_fingerprint(df)
        assert cache_key(other, root, cfg) != base
    monkeypatch.setattr(pipeline, "PIPELINE_VERSION", pipeline.PIPELINE_VERSION + 1)
    assert cache_key(df, root, cfg) != base


def test_changed_metadata_misses_and_partial_dir_is_rebuilt(ray_local, good_set, tmp_path) -> None:
    df, root = good_set
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    first = cache_dataset(df.iloc[:2], root, cfg, progress=False)
    (first.path / "manifest.json").unlink()  # as if a build died before finishing
    rebuilt = cache_dataset(df.iloc[:2], root, cfg, progress=False)
    assert not rebuilt.hit and rebuilt.key == first.key and (rebuilt.path / "manifest.json").is_file()
    moved = df.iloc[:2].copy()
    moved.loc[0, "offset_sec"] = 0.3
    other = cache_dataset(moved, root, cfg, progress=False)
    assert not other.hit and other.key != first.key
    assert load_cache(other.path)["length"].tolist()[0] == int(0.3 * 22050)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp")]


@pytest.fixture()
def bad_set(tmp_path: Path) -> tuple[pd.DataFrame, Path]:
    root = tmp_path / "audio"
    root.mkdir()
    mixed = _tone(4.0)
    mixed[int(1.2 * SR) : int(1.4 * SR)] = np.nan  # one event here has NaN samples
    mixed[int(2.0 * SR) : int(3.0 * SR)] = 0.0  # one event here is silent
    sf.write(root / "mixed.wav", mixed, SR, subtype="FLOAT")
    sf.write(root / "three.wav", np.stack([_tone(1.0)] * 3, axis=1), SR)
    (root / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    df = pd.DataFrame(
        {
            "source_audio": [
                "mixed.wav",
                "mixed.wav",
                "missing.wav",
                "mixed.wav",
                "three.wav",
                "broken.wav",
                "mixed.wav",
                "mixed.wav",
                "mixed.wav",
            ],
            "onset_sec": [0.0, 1.1, 0.0, 2.1, 0.0, 0.0, 4.5, 3.5, 3.2],
            "offset_sec": [0.5, 1.5, 0.5, 2.6, 0.5, 0.5, 5.0, 4.6, 3.6],
            "label_category": [
                "harmonic",
                "dead_note",
                "harmonic",
                "general_note",
                "harmonic",
                "dead_note",
                "harmonic",
                "general_note",
                "bogus",
            ],
        }
    )
    return df, root


EXPECTED_REASONS = {
    1: "non-finite",
    2: "missing file",
    3: "silent",
    4: "channel count 3",
    5: "unreadable file",
    6: "onset 4.500s past the end",
    7: "offset 4.600s past the end",
    8: "unknown label",
}


def test_bad_audio_goes_to_quarantine_and_good_rows_survive(ray_local, bad_set, tmp_path) -> None:
    df, root = bad_set
    res = cache_dataset(df, root, DataConfig(cache_dir=str(tmp_path / "cache")), progress=False)
    q = res.quarantine
    assert list(q.columns) == ["row", "file", "reason"]
    assert q["row"].tolist() == sorted(EXPECTED_REASONS)
    for row, reason in zip(q["row"], q["reason"]):
        assert EXPECTED_REASONS[row] in reason, (row, reason)
    assert q.set_index("row").loc[2, "file"] == "missing.wav"
    on_disk = pd.read_csv(res.path / "quarantine.csv")
    assert on_disk["row"].tolist() == q["row"].tolist()
    assert load_cache(res.path)["row"].tolist() == [0]  # the good event of the file with bad events is kept
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["n_quarantined"] == 8 and manifest["n_windows"] == 1


def test_strict_mode_raises_naming_the_rows(ray_local, bad_set, tmp_path) -> None:
    df, root = bad_set
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"), strict=True)
    with pytest.raises(AudioError, match=r"row 2 \(missing.wav\): missing file") as info:
        cache_dataset(df.iloc[:3], root, cfg, progress=False)
    assert info.value.rows == [1, 2]
    assert not list((tmp_path / "cache").glob("*/manifest.json"))
    # strict also refuses an existing cache with quarantined rows
    lax = cache_dataset(df.iloc[:3], root, dataclasses.replace(cfg, strict=False), progress=False)
    assert len(lax.quarantine) == 2
    with pytest.raises(AudioError, match="row 1"):
        cache_dataset(df.iloc[:3], root, cfg, progress=False)


def test_cache_key_is_the_one_earlier_versions_computed(good_set) -> None:
    df, root = good_set
    cfg = DataConfig()
    base = cache_key(df, root, cfg)
    # existing caches stay hits: the key hashes exactly these three parts
    payload = {
        "metadata": metadata_fingerprint(df),
        "audio_root": str(Path(root).resolve()),
        "settings": preprocessing_settings(cfg),
    }
    assert base == hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert cache_key(df, root, dataclasses.replace(cfg, sample_rate=16000)) != base


def test_featurize_benchmark_prints_its_json_line(ray_local, tiny_demo, capsys) -> None:
    from guitar_cls.benchmarks import featurize

    args = ["--metadata", str(tiny_demo), "--audio-root", str(tiny_demo.parent), "--limit", "24", "--seed-workers", "0"]
    assert featurize.main(args) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["items"] == 24 and line["windows"] >= 24 and line["quarantined"] == 0
    for key in ("seed_loader_items_per_s", "first_pass_items_per_s", "cached_items_per_s"):
        assert line[key] > 0, key
    assert line["first_pass_ratio"] > 0 and line["cached_ratio"] > 0


# --- concurrent builds, corrupt manifests, crash leftovers (issue 10.3) -------------------------------------------


def _featurize_in_process(items, out_dir, quarantine_dir, data_cfg, progress) -> None:
    """Stands in for the Ray Data pass: the same featurize_recordings, one Parquet part, no Ray."""
    import pyarrow.parquet as pq

    out_dir.mkdir(parents=True, exist_ok=True)
    table = pipeline.featurize_recordings(pd.DataFrame(items), data_cfg, str(quarantine_dir))
    pq.write_table(table, out_dir / "part-0.parquet")


def _concurrent_builder(df, root, cache_dir, delay, barrier, results) -> None:
    """One of two processes building the same key at once (run with the spawn start method)."""
    import time

    builds = []

    def slow_featurize(*args) -> None:
        builds.append(1)
        time.sleep(delay)  # keeps the other process's miss inside this build
        _featurize_in_process(*args)

    pipeline._featurize_to_parquet = slow_featurize
    barrier.wait()
    res = cache_dataset(df, root, DataConfig(cache_dir=cache_dir), progress=False)
    manifest_inode = (res.path / "manifest.json").stat().st_ino
    reads, failures = 0, []
    end = time.monotonic() + 2.5  # keep reading while the other process may still be at work
    while time.monotonic() < end:
        try:
            assert load_cache(res.path)["row"].tolist() == [0, 1, 2, 3, 4]
            reads += 1
        except Exception as e:  # a half-deleted or replaced cache
            failures.append(f"{type(e).__name__}: {e}")
        time.sleep(0.05)
    results.put({"hit": res.hit, "path": str(res.path), "builds": len(builds), "inode": manifest_inode,
                 "reads": reads, "failures": failures})  # fmt: skip


def test_two_processes_building_the_same_key_make_one_cache(good_set, tmp_path) -> None:
    import multiprocessing as mp

    df, root = good_set
    cache_dir = tmp_path / "cache"
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_concurrent_builder, args=(df, root, str(cache_dir), delay, barrier, results))
        for delay in (1.0, 1.5)
    ]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert sum(r["builds"] for r in out) == 1, out  # the second process waited and used the first one's cache
    assert sorted(r["hit"] for r in out) == [False, True]
    assert len({r["path"] for r in out}) == 1
    final = Path(out[0]["path"])
    assert all(r["inode"] == (final / "manifest.json").stat().st_ino for r in out), "the finished cache was replaced"
    assert all(r["reads"] > 0 and not r["failures"] for r in out), out
    assert sorted(p.name for p in cache_dir.iterdir()) == sorted([final.name, f"{final.name}.lock"])


@pytest.mark.parametrize("text", ["", '{"key": "abc", "n_win', "[1, 2]", '{"n_windows": 5}', "\xff\xfe"])
def test_a_corrupt_manifest_is_a_miss_and_the_cache_is_rebuilt(good_set, tmp_path, monkeypatch, text) -> None:
    df, root = good_set
    monkeypatch.setattr(pipeline, "_featurize_to_parquet", _featurize_in_process)
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    first = cache_dataset(df, root, cfg, progress=False)
    (first.path / "manifest.json").write_text(text, encoding="latin-1")
    again = cache_dataset(df, root, cfg, progress=False)
    assert not again.hit and again.path == first.path and again.n_rows == 5
    assert json.loads((again.path / "manifest.json").read_text())["key"] == first.key
    assert load_cache(again.path)["row"].tolist() == [0, 1, 2, 3, 4]
    assert cache_dataset(df, root, cfg, progress=False).hit
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")] == []


def test_build_leftovers_are_removed_only_when_stale_and_unlocked(good_set, tmp_path, monkeypatch) -> None:
    import os
    import time

    from filelock import FileLock

    df, root = good_set
    monkeypatch.setattr(pipeline, "_featurize_to_parquet", _featurize_in_process)
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    cache_root = tmp_path / "cache"
    own = cache_key(df, root, cfg)
    old = time.time() - 2 * pipeline.STALE_TMP_SECONDS
    dirs = {
        "own": cache_root / f".tmp-{own}-00000000",  # this key's lock is held by the build: a crash leftover
        "stale": cache_root / f".tmp-{'a' * 64}-11111111",
        "locked": cache_root / f".tmp-{'b' * 64}-22222222",  # old, but a build of that key still holds its lock
        "fresh": cache_root / f".tmp-{'c' * 64}-33333333",
    }
    for name, d in dirs.items():
        (d / "data").mkdir(parents=True)
        if name != "fresh":
            os.utime(d, (old, old))
    with FileLock(str(cache_root / f"{'b' * 64}.lock")):
        res = cache_dataset(df, root, cfg, progress=False)
    assert not res.hit
    assert {name: d.exists() for name, d in dirs.items()} == {
        "own": False, "stale": False, "locked": True, "fresh": True
    }  # fmt: skip
