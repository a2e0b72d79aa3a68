"""Fault suite (issue 10): a damaged cache is rebuilt; a cache folder out of space gives a clear error and leaves no
cache behind (builds use the in-process featurizer of test_pipeline, no Ray, to stay fast); the sweep
driver killed with SIGKILL is in test_jobs.py (it shares the Ctrl-C test's sweep), the killed worker in
test_ray_train.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from guitar_cls.config import DataConfig
from guitar_cls.data import pipeline
from guitar_cls.data.pipeline import cache_dataset, load_cache

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def good_set(tmp_path):
    import test_pipeline

    return test_pipeline.good_set.__wrapped__(tmp_path)


@pytest.fixture()
def in_process(monkeypatch):
    import test_pipeline

    monkeypatch.setattr(pipeline, "_featurize_to_parquet", test_pipeline._featurize_in_process)


@pytest.mark.parametrize("damage", ["truncated", "footer garbled", "removed"])
def test_a_damaged_parquet_part_is_rebuilt(good_set, tmp_path, in_process, damage) -> None:
    df, root = good_set
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"))
    first = cache_dataset(df, root, cfg, progress=False)
    part = next((first.path / "data").glob("*.parquet"))
    data = part.read_bytes()
    if damage == "truncated":
        part.write_bytes(data[: len(data) // 2])
    elif damage == "footer garbled":
        part.write_bytes(data[:-64] + b"\0" * 64)  # same size
    else:
        part.unlink()
    again = cache_dataset(df, root, cfg, progress=False)
    assert not again.hit and again.path == first.path and again.n_rows == 5
    assert load_cache(again.path)["row"].tolist() == [0, 1, 2, 3, 4]
    assert cache_dataset(df, root, cfg, progress=False).hit


def test_a_size_limited_cache_folder_gives_a_clear_error_and_no_cache(good_set, tmp_path) -> None:
    df, root = good_set
    df.to_csv(tmp_path / "meta.csv", index=False)
    script = textwrap.dedent(
        f"""
        import resource, signal, sys
        import pandas as pd
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import test_pipeline
        from guitar_cls.config import DataConfig
        from guitar_cls.data import pipeline
        pipeline._featurize_to_parquet = test_pipeline._featurize_in_process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))  # as `ulimit -f 64`
        df = pd.read_csv({str(tmp_path / "meta.csv")!r})
        try:
            pipeline.cache_dataset(df, {str(root)!r}, DataConfig(cache_dir={str(tmp_path / "cache")!r}), progress=False)
        except pipeline.CacheWriteError as e:
            print("ERROR:", e)
            sys.exit(3)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert f"no space to build the waveform cache in {tmp_path / 'cache'}" in proc.stdout
    assert "File too large" in proc.stdout and "data.cache_dir" in proc.stdout
    left = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert left == [], left  # no partial build, no cache without data
