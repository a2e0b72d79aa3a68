"""Ray Data pipeline: metadata rows -> processed note waveforms -> a Parquet cache keyed by data and settings.

One work item per source recording, so each file is opened once and only its events' frames are read
(``audio.read_segments``). Workers run ``prepare_waveform`` (the same preprocessing prediction uses) and return
Arrow tables with the waveform as ``large_list<float32>``; bad audio becomes quarantine rows instead of failing the
task. The cache lives in ``<cache_dir>/<key>/``:

    data/*.parquet     row, window, label, source_audio, waveform, length (one row per window, good rows only)
    quarantine.csv     row, file, reason
    manifest.json      key, settings, counts; written last: a directory without it is rebuilt

It is built in a temporary sibling directory and renamed into place, so a crash never leaves a half cache. With a
shared filesystem ``cache_dir`` must be visible to every node (Ray workers write the Parquet files).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from guitar_cls.config import DataConfig
from guitar_cls.data.audio import AudioError, prepare_waveform, read_segments, read_span
from guitar_cls.data.schema import LABEL_TO_INDEX

log = logging.getLogger(__name__)

# Bump when the preprocessing code changes what it produces: every cache key changes with it.
PIPELINE_VERSION = 1
CACHE_COLUMNS: tuple[str, ...] = ("row", "window", "label", "source_audio", "waveform", "length")
QUARANTINE_COLUMNS: tuple[str, ...] = ("row", "file", "reason")

_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),
        ("window", pa.int32()),
        ("label", pa.int8()),
        ("source_audio", pa.string()),
        ("waveform", pa.large_list(pa.float32())),
        ("length", pa.int64()),
    ]
)


@dataclass(frozen=True)
class CacheResult:
    """Where the cache of one (metadata, settings) pair lives and what it holds."""

    path: Path
    key: str
    hit: bool
    n_rows: int  # cached windows
    quarantine: pd.DataFrame  # row, file, reason


def metadata_fingerprint(df: pd.DataFrame) -> str:
    """Returns the sha256 hex digest of the table content (column names, dtypes, index and every value)."""
    h = hashlib.sha256()
    h.update(json.dumps([[str(c), str(t)] for c, t in df.dtypes.items()]).encode())
    h.update(pd.util.hash_pandas_object(df, index=True).to_numpy().tobytes())
    return h.hexdigest()


def preprocessing_settings(data_cfg: DataConfig) -> dict[str, Any]:
    """Returns every setting that changes the cached waveforms (plus the pipeline version)."""
    return {
        "pipeline_version": PIPELINE_VERSION,
        "sample_rate": data_cfg.sample_rate,
        "normalize": data_cfg.normalize,
        "min_duration": data_cfg.min_duration,
        "max_duration": data_cfg.max_duration,
        "long_notes": data_cfg.long_notes,
        "onset_offset_sec": data_cfg.onset_offset_sec,
    }


def cache_key(df: pd.DataFrame, audio_root: str | Path, data_cfg: DataConfig) -> str:
    """Returns the sha256 of the metadata fingerprint, the resolved audio root and the preprocessing settings."""
    payload = {
        "metadata": metadata_fingerprint(df),
        "audio_root": str(Path(audio_root).resolve()),
        "settings": preprocessing_settings(data_cfg),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def featurize_recordings(batch: pd.DataFrame, data_cfg: DataConfig, quarantine_dir: str) -> pa.Table:
    """Returns one Arrow row per window for a batch of recordings; bad events go to a CSV in ``quarantine_dir``.

    Each input row is one recording: ``path``, ``source_audio`` and the lists ``rows``, ``onsets``, ``offsets``,
    ``labels`` of its events. Nothing here raises for bad audio: one bad file or event never loses the others.
    """
    cols: dict[str, list[Any]] = {"row": [], "window": [], "label": [], "source_audio": [], "length": []}
    waves: list[np.ndarray] = []
    bad: list[tuple[int, str, str]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one task per CPU already; more threads per task only contend (resample is 20x slower)
    try:
        for rec in batch.itertuples(index=False):
            rows, labels = [int(r) for r in rec.rows], [int(v) for v in rec.labels]
            spans = [read_span(float(a), float(b), data_cfg) for a, b in zip(rec.onsets, rec.offsets)]
            max_sec = spans[0][2] if spans else None
            try:
                segments = list(read_segments(rec.path, [(a, b) for a, b, _ in spans], max_sec))
            except Exception as e:  # an unexpected reader failure quarantines this file only
                segments = [AudioError(f"read failed: {type(e).__name__}: {e}")] * len(rows)
            for row, label, seg in zip(rows, labels, segments):
                try:
                    if isinstance(seg, AudioError):
                        raise seg
                    windows, lengths = prepare_waveform(seg[0], seg[1], data_cfg)
                except AudioError as e:
                    bad.append((row, rec.source_audio, e.reason))
                    continue
                except Exception as e:  # isolate the event
                    bad.append((row, rec.source_audio, f"processing failed: {type(e).__name__}: {e}"))
                    continue
                for i, (w, n) in enumerate(zip(windows, lengths)):
                    for name, value in zip(cols, (row, i, label, rec.source_audio, n)):
                        cols[name].append(value)
                    waves.append(w[:n])
    finally:
        torch.set_num_threads(threads)
    if bad:
        part = Path(quarantine_dir) / f"{uuid.uuid4().hex}.csv"
        pd.DataFrame(bad, columns=list(QUARANTINE_COLUMNS)).to_csv(part, index=False)
    offsets = np.zeros(len(waves) + 1, dtype=np.int64)
    np.cumsum([w.size for w in waves], out=offsets[1:])
    values = np.concatenate(waves) if waves else np.zeros(0, np.float32)
    arrays = {name: pa.array(cols[name], type=_SCHEMA.field(name).type) for name in cols}
    arrays["waveform"] = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, type=pa.float32()))
    return pa.table({name: arrays[name] for name in _SCHEMA.names}, schema=_SCHEMA)


def _work_items(df: pd.DataFrame, audio_root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Returns (one work item per recording, quarantine rows for events that need no audio to be rejected)."""
    bad: list[dict[str, Any]] = []
    labels = df["label_category"].astype("string")
    known = labels.isin(list(LABEL_TO_INDEX)).fillna(False).to_numpy(bool)
    has_file = df["source_audio"].notna().to_numpy(bool)
    for row in np.flatnonzero(~has_file):
        bad.append({"row": int(row), "file": "", "reason": "no source_audio"})
    for row in np.flatnonzero(has_file & ~known):
        bad.append(
            {
                "row": int(row),
                "file": str(df["source_audio"].iloc[row]),
                "reason": f"unknown label {labels.iloc[row]!r}",
            }
        )
    positions = np.flatnonzero(has_file & known)  # rows are positions in the metadata table (index 0..n-1)
    good = df.iloc[positions]
    label_idx = good["label_category"].astype(str).map(LABEL_TO_INDEX)
    items = []
    for source, idx in good.groupby(good["source_audio"].astype(str), sort=True).indices.items():
        part = good.iloc[idx]
        items.append(
            {
                "source_audio": source,
                "path": str(audio_root / source),
                "rows": positions[idx].tolist(),
                "onsets": part["onset_sec"].astype(float).tolist(),
                "offsets": part["offset_sec"].astype(float).tolist(),
                "labels": label_idx.iloc[idx].astype(int).tolist(),
            }
        )
    return items, bad


def _ensure_ray() -> None:
    import ray

    if not ray.is_initialized():
        ray.init()


def _cluster_cpus() -> int:
    import ray

    return max(1, int(ray.available_resources().get("CPU", 1)))


def _raise_if_strict(data_cfg: DataConfig, quarantine: pd.DataFrame) -> None:
    if data_cfg.strict and len(quarantine):
        shown = "; ".join(f"row {r.row} ({r.file}): {r.reason}" for r in quarantine.head(20).itertuples())
        more = f"; ... {len(quarantine) - 20} more" if len(quarantine) > 20 else ""
        raise AudioError(
            f"{len(quarantine)} rows with bad audio (data.strict): {shown}{more}", quarantine["row"].tolist()
        )


def _log_quarantine(quarantine: pd.DataFrame) -> None:
    if not len(quarantine):
        return
    kinds = Counter(r.split(":")[0].split(" (")[0] for r in quarantine["reason"])
    log.warning(
        "%d rows quarantined (bad audio): %s; first rows %s",
        len(quarantine),
        ", ".join(f"{k} x{n}" for k, n in kinds.most_common()),
        quarantine["row"].head(10).tolist(),
    )


def read_quarantine(path: str | Path) -> pd.DataFrame:
    """Returns the quarantine table (row, file, reason) of a cache directory."""
    q = pd.read_csv(
        Path(path) / "quarantine.csv", dtype={"row": "int64", "file": str, "reason": str}, keep_default_na=False
    )
    return q[list(QUARANTINE_COLUMNS)]


def cache_dataset(
    df: pd.DataFrame, audio_root: str | Path, data_cfg: DataConfig, *, progress: bool = True
) -> CacheResult:
    """Returns the waveform cache of ``df`` under ``data_cfg.cache_dir/<key>/``, building it with Ray Data on a miss.

    A hit (``manifest.json`` present) reads only the manifest and quarantine table: no audio and no Ray work. Bad
    events go to ``quarantine.csv``; with ``data_cfg.strict`` any of them raises AudioError naming the rows.
    """
    audio_root = Path(audio_root).resolve()
    key = cache_key(df, audio_root, data_cfg)
    cache_root = Path(data_cfg.cache_dir).resolve()
    final = cache_root / key
    if (final / "manifest.json").is_file():
        manifest = json.loads((final / "manifest.json").read_text())
        quarantine = read_quarantine(final)
        log.info("waveform cache hit %s (%d windows, %d quarantined)", final, manifest["n_windows"], len(quarantine))
        _raise_if_strict(data_cfg, quarantine)
        return CacheResult(final, key, True, int(manifest["n_windows"]), quarantine)

    import ray.data

    _ensure_ray()
    t0 = time.perf_counter()
    items, pre_bad = _work_items(df, audio_root)
    n_cpus = _cluster_cpus()
    n_blocks = max(1, min(len(items), max(4 * n_cpus, len(items) // 4)))
    log.info(
        "waveform cache miss: %d events in %d recordings -> %s (%d blocks, up to %d tasks)",
        len(df),
        len(items),
        final,
        n_blocks,
        n_cpus,
    )
    tmp = cache_root / f".tmp-{key[:16]}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    ctx = ray.data.DataContext.get_current()
    old_bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = progress
    try:
        parts = tmp / "quarantine_parts"
        parts.mkdir()
        if items:
            # one streaming pass: recordings -> windows -> Parquet (tasks, not actors: never waits for an actor CPU)
            ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
                featurize_recordings,
                batch_size=None,
                batch_format="pandas",
                fn_kwargs={"data_cfg": data_cfg, "quarantine_dir": str(parts)},
                compute=ray.data.TaskPoolStrategy(size=min(n_cpus, n_blocks)),
                num_cpus=1,
            ).write_parquet(str(tmp / "data"), use_dictionary=["source_audio"])  # no dictionary for samples
        data_dir = tmp / "data"
        data_dir.mkdir(exist_ok=True)
        if not any(data_dir.glob("*.parquet")):
            pq.write_table(_SCHEMA.empty_table(), data_dir / "empty.parquet")
        n_windows = pq.read_table(data_dir, columns=["row"]).num_rows
        found = [pd.read_csv(f, dtype={"file": str, "reason": str}, keep_default_na=False) for f in parts.glob("*.csv")]
        quarantine = pd.concat([pd.DataFrame(pre_bad, columns=list(QUARANTINE_COLUMNS)), *found], ignore_index=True)
        quarantine = quarantine.drop_duplicates("row")  # a retried task may have written its part twice
        shutil.rmtree(parts)
        quarantine = quarantine.sort_values("row", kind="stable").reset_index(drop=True)
        _log_quarantine(quarantine)
        _raise_if_strict(data_cfg, quarantine)
        quarantine.to_csv(tmp / "quarantine.csv", index=False)
        manifest = {
            "key": key,
            "settings": preprocessing_settings(data_cfg),
            "metadata_fingerprint": metadata_fingerprint(df),
            "audio_root": str(audio_root),
            "n_events": len(df),
            "n_windows": int(n_windows),
            "n_quarantined": len(quarantine),
            "build_seconds": round(time.perf_counter() - t0, 3),
            "data_config": dataclasses.asdict(data_cfg),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        if final.exists():  # a directory without manifest.json: a stale partial build
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "manifest.json").is_file():
                raise
            log.info("another process finished the same cache first; using it")
    finally:
        ctx.enable_progress_bars = old_bars
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "waveform cache built in %.1fs: %d windows, %d quarantined",
        time.perf_counter() - t0,
        n_windows,
        len(quarantine),
    )
    return CacheResult(final, key, False, int(n_windows), quarantine)


def load_cache(path: str | Path, rows: Sequence[int] | None = None) -> pd.DataFrame:
    """Returns the cached windows sorted by (row, window): columns row, window, label, source_audio, waveform
    (float32 1-D, unpadded, ``length`` samples, views into one buffer) and length. ``rows`` keeps only those rows."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no waveform cache at {path} (manifest.json missing)")
    table = pq.read_table(path / "data", columns=list(CACHE_COLUMNS))
    row = table["row"].to_numpy()
    window = table["window"].to_numpy()
    order = np.lexsort((window, row))  # sort indices, not the table: taking list columns in Arrow is slow
    if rows is not None:
        order = order[np.isin(row[order], np.asarray(rows, dtype=np.int64))]
    wf = table["waveform"].combine_chunks()
    offsets = wf.offsets.to_numpy()
    values = wf.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]].copy()  # one writable buffer
    starts = (offsets[:-1] - offsets[0])[order].tolist()
    stops = (offsets[1:] - offsets[0])[order].tolist()
    waves = np.empty(len(order), dtype=object)
    for i, (a, b) in enumerate(zip(starts, stops)):
        waves[i] = values[a:b]
    return pd.DataFrame(
        {
            "row": row[order].astype(np.int64),
            "window": window[order].astype(np.int64),
            "label": table["label"].to_numpy()[order].astype(np.int64),
            "source_audio": np.asarray(table["source_audio"].to_pylist(), dtype=object)[order],
            "waveform": waves,
            "length": table["length"].to_numpy()[order].astype(np.int64),
        }
    )
