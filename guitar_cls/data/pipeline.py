"""Ray Data pipeline: metadata rows -> processed note waveforms -> a Parquet cache keyed by data and settings.

One work item per source recording, so each file is opened once and only its events' frames are read
(``audio.read_segments``). Workers run ``prepare_waveform`` (the same preprocessing prediction uses) and return
Arrow tables with the waveform as ``large_list<float32>``; bad audio becomes quarantine rows instead of failing the
task. The cache lives in ``<cache_dir>/<key>/``:

    data/*.parquet     row, window, label, source_audio, waveform, length (one row per window, good rows only)
    quarantine.csv     row, file, reason
    manifest.json      key, settings, counts; written last: a directory without it is rebuilt

Features are not cached: the training device computes them per batch (waveform augmentations come first), and the
validation features are kept between epochs in memory (``inference.predict_proba``'s ``feature_cache``).

It is built in a temporary sibling directory ``.tmp-<key>-<id>`` and renamed into place, so a crash never leaves a
half cache. One build per key at a time: builders hold ``<key>.lock`` (a file lock) and look for a finished cache
again once they hold it, so a second process missing the same key waits and then uses the first one's cache. A
directory with a valid manifest is never deleted; a missing or corrupt manifest, or damaged Parquet parts (missing,
resized, unreadable footer, row count off; ``_damage``), is a miss and only then is the directory replaced. Crash
leftovers (``.tmp-*``) are removed by a later build once older than ``STALE_TMP_SECONDS`` and not locked. With a
shared filesystem ``cache_dir`` must be visible to every node (Ray workers write the Parquet files) and support file
locks.

Over 500 lines because the build and its crash safety (lock, atomic manifest, damage checks, stale builds) are one
contract; the safety half could move to its own module if it grows.
"""

from __future__ import annotations

import dataclasses
import errno
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
from filelock import FileLock, Timeout

from guitar_cls.config import DataConfig
from guitar_cls.data.audio import AudioError, prepare_waveform, read_segments, read_span
from guitar_cls.data.schema import LABEL_TO_INDEX

log = logging.getLogger(__name__)

# Bump when the preprocessing code changes what it produces: every cache key changes with it.
PIPELINE_VERSION = 1
CACHE_COLUMNS: tuple[str, ...] = ("row", "window", "label", "source_audio", "waveform", "length")
QUARANTINE_COLUMNS: tuple[str, ...] = ("row", "file", "reason")
STALE_TMP_SECONDS = 3600.0  # an unlocked build folder older than this is a crash leftover

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
    payload: dict[str, Any] = {
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


def init_ray() -> None:
    """Starts Ray once per process, the one way every caller does: joins the cluster named by ``RAY_ADDRESS``, or
    starts a local Ray with the dashboard (the ASHA clean-up of a sweep needs it); nothing when Ray already runs."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")  # read by Ray Train in the driver and the workers it starts
    # a trial's worker group waits for its CPU while the previous trial's workers shut down and torch imports;
    # on a loaded 2-core machine that took over Ray's default of 60 s and failed the trial (arch sweep, 2026-12-01)
    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "900")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    # Ray's processes find their cluster through RAY_ADDRESS or a search that fails once a second Ray runs on the
    # machine; Train's placement-group cleaner then dies and a stopped trial's CPUs stay reserved for good (the
    # next trial waits forever). So the local cluster gets a known GCS port, and its workers its address.
    from ray._private.services import get_node_ip_address

    port = _free_port()
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)  # read by ray.init when it starts the head
    try:
        ray.init(
            address="local",
            include_dashboard=True,
            dashboard_host="127.0.0.1",
            log_to_driver=True,
            runtime_env={"env_vars": {"RAY_ADDRESS": f"{get_node_ip_address()}:{port}"}},
        )
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)


_PORTS_GIVEN: set[int] = set()


def _free_port() -> int:
    """Returns a TCP port that was free a moment ago and that no earlier call in this process returned.

    The probe socket is closed on return, so the OS may hand the same port out again; a command given one port for
    two components fails (``ray start``: "trying to use a port number ... used by other components", CI 2026-12-02).
    """
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("", 0))
            port = int(s.getsockname()[1])
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


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


def _lock_path(cache_root: Path, key: str) -> Path:
    return cache_root / f"{key}.lock"


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """Returns the manifest of the cache directory ``path``, or None when it is missing or corrupt (not JSON, not
    an object, or without the key and window count a finished build writes)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (
        not isinstance(manifest, dict)
        or manifest.get("key") != path.name
        or not isinstance(manifest.get("n_windows"), int)
    ):
        return None
    return manifest


def _cache_hit(final: Path, key: str, data_cfg: DataConfig) -> CacheResult | None:
    """Returns the finished cache at ``final`` (raising for quarantined rows in strict mode), or None on a miss."""
    manifest = _read_manifest(final)
    if manifest is None:
        if (final / "manifest.json").exists():
            log.warning("waveform cache %s has a corrupt manifest: rebuilding it", final)
        return None
    damage = _damage(final, manifest)
    if damage:
        log.warning("waveform cache %s is damaged (%s): rebuilding it", final, damage)
        return None
    try:
        quarantine = read_quarantine(final)
    except (OSError, ValueError, KeyError) as e:
        log.warning("waveform cache %s has an unreadable quarantine table (%s): rebuilding it", final, e)
        return None
    log.info("waveform cache hit %s (%d windows, %d quarantined)", final, manifest["n_windows"], len(quarantine))
    _raise_if_strict(data_cfg, quarantine)
    return CacheResult(final, key, True, int(manifest["n_windows"]), quarantine)


def _damage(path: Path, manifest: dict[str, Any]) -> str | None:
    """Returns what is wrong with the Parquet parts of a finished cache (parts missing, added, resized, unreadable
    footers, a row count other than the manifest's), or None. Reads only footers: cheap on every hit."""
    files = sorted((path / "data").glob("*.parquet"))
    parts = manifest.get("parts")  # name -> bytes; caches built before it existed have none
    if isinstance(parts, dict) and sorted(parts) != [f.name for f in files]:
        return f"parts {sorted(parts)} recorded, {[f.name for f in files]} found"
    rows = 0
    for f in files:
        try:
            if isinstance(parts, dict) and f.stat().st_size != parts[f.name]:
                return f"{f.name} is {f.stat().st_size} bytes, {parts[f.name]} recorded"
            rows += pq.read_metadata(f).num_rows
        except (OSError, pa.ArrowException) as e:
            return f"{f.name} unreadable: {e}"
    if rows != manifest["n_windows"]:
        return f"{rows} rows in the parts, {manifest['n_windows']} recorded"
    return None


class CacheWriteError(OSError):
    """The cache folder ran out of space (disk full, quota, file size limit); nothing half-built is left."""


_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _no_space_error(exc: BaseException) -> OSError | None:
    """Returns the out-of-space OSError behind ``exc`` (its causes, or a Ray task error's cause), or None."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return exc
        if isinstance(exc, OSError) and any(m in str(exc) for m in ("No space left", "File too large", "quota")):
            return exc  # pyarrow's IOError carries the message, not the errno
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def _write_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a fsynced temporary file renamed over it: readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale_builds(cache_root: Path, own_key: str) -> None:
    """Removes crash leftovers ``.tmp-<key>-<id>``: at once for ``own_key`` (its lock is held by the caller, so no
    build of it runs), for other keys only when older than STALE_TMP_SECONDS and their lock is free."""
    now = time.time()
    for tmp in cache_root.glob(".tmp-*"):
        key = tmp.name[len(".tmp-") :].rsplit("-", 1)[0]
        if key != own_key:
            try:
                if now - tmp.stat().st_mtime < STALE_TMP_SECONDS:
                    continue
            except FileNotFoundError:
                continue
            lock = FileLock(str(_lock_path(cache_root, key)))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # a build of that key still runs
            try:
                shutil.rmtree(tmp, ignore_errors=True)
            finally:
                lock.release()
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("removed the leftover cache build %s", tmp)


def _publish(tmp: Path, final: Path) -> None:
    """Renames the finished build ``tmp`` to ``final``. The caller holds the key's lock and found no valid manifest
    in ``final``, so an existing ``final`` is a partial or corrupt cache: it is moved aside, then removed."""
    if final.exists():
        aside = final.with_name(f".tmp-{final.name}-{uuid.uuid4().hex[:8]}")
        os.rename(final, aside)  # a reader with open files keeps them; the path is free for the rename below
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(tmp, final)
    _fsync_dir(final.parent)


def cache_dataset(
    df: pd.DataFrame, audio_root: str | Path, data_cfg: DataConfig, *, progress: bool = True
) -> CacheResult:
    """Returns the waveform cache of ``df`` under ``data_cfg.cache_dir/<key>/``, building it with Ray Data on a miss.

    A hit (a valid ``manifest.json``) reads only the manifest and quarantine table: no audio and no Ray work. Bad
    events go to ``quarantine.csv``; with ``data_cfg.strict`` any of them raises AudioError naming the rows. A build
    holds the key's file lock: a concurrent call for the same key waits and then returns the finished cache.
    """
    audio_root = Path(audio_root).resolve()
    key = cache_key(df, audio_root, data_cfg)
    cache_root = Path(data_cfg.cache_dir).resolve()
    final = cache_root / key
    hit = _cache_hit(final, key, data_cfg)
    if hit is not None:
        return hit
    cache_root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(_lock_path(cache_root, key)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waveform cache %s is being built by another process: waiting for it", final)
        lock.acquire()
    try:
        hit = _cache_hit(final, key, data_cfg)  # the other process may have finished it while we waited
        if hit is not None:
            return hit
        _remove_stale_builds(cache_root, key)
        return _build_cache(df, audio_root, data_cfg, final, progress)
    finally:
        lock.release()


def _featurize_to_parquet(
    items: list[dict[str, Any]], out_dir: Path, quarantine_dir: Path, data_cfg: DataConfig, progress: bool
) -> None:
    """Writes the windows of every work item as Parquet parts into ``out_dir`` (Ray Data tasks); bad events go to
    CSV parts in ``quarantine_dir``."""
    import ray
    import ray.data

    init_ray()
    n_cpus = max(1, int(ray.available_resources().get("CPU", 1)))
    n_blocks = max(1, min(len(items), max(4 * n_cpus, len(items) // 4)))
    log.info("featurizing %d recordings in %d blocks, up to %d tasks", len(items), n_blocks, n_cpus)
    ctx = ray.data.DataContext.get_current()
    old_bars = ctx.enable_progress_bars
    ctx.enable_progress_bars = progress
    try:
        # one streaming pass: recordings -> windows -> Parquet, in tasks (never waits for an actor CPU) of one CPU
        # each, as many at a time as there are free CPUs. The default task pool lets Ray Data fuse map and write
        # into one operator: a TaskPoolStrategy(size=...) here kept Write apart, sending every block through the
        # object store and leaving one CPU of two to the writer (the build took ~1.6x as long).
        ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
            featurize_recordings,
            batch_size=None,
            batch_format="pandas",
            fn_kwargs={"data_cfg": data_cfg, "quarantine_dir": str(quarantine_dir)},
            num_cpus=1,
        ).write_parquet(str(out_dir), use_dictionary=["source_audio"])  # no dictionary for samples
    finally:
        ctx.enable_progress_bars = old_bars


def _write_parts(items: list[dict[str, Any]], tmp: Path, data_cfg: DataConfig, progress: bool) -> tuple[int, Path]:
    """Returns (windows written, the folder of the quarantine CSV parts) after writing the Parquet parts of
    ``items`` into ``tmp/data`` (an empty part when there are none) and syncing them to disk."""
    parts = tmp / "quarantine_parts"
    parts.mkdir()
    data_dir = tmp / "data"
    if items:
        _featurize_to_parquet(items, data_dir, parts, data_cfg, progress)
    data_dir.mkdir(exist_ok=True)
    if not any(data_dir.glob("*.parquet")):
        pq.write_table(_SCHEMA.empty_table(), data_dir / "empty.parquet")
    for part in data_dir.iterdir():  # on disk before the manifest says the build is finished
        with open(part, "rb") as f:
            os.fsync(f.fileno())
    return pq.read_table(data_dir, columns=["row"]).num_rows, parts


def _gather_quarantine(pre_bad: list[dict[str, Any]], parts: Path) -> pd.DataFrame:
    """Returns the quarantine table (sorted by row): events rejected before reading plus the tasks' CSV parts,
    which are then removed."""
    found = [pd.read_csv(f, dtype={"file": str, "reason": str}, keep_default_na=False) for f in parts.glob("*.csv")]
    quarantine = pd.concat([pd.DataFrame(pre_bad, columns=list(QUARANTINE_COLUMNS)), *found], ignore_index=True)
    quarantine = quarantine.drop_duplicates("row")  # a retried task may have written its part twice
    shutil.rmtree(parts)
    return quarantine.sort_values("row", kind="stable").reset_index(drop=True)


def _manifest(
    df: pd.DataFrame, audio_root: Path, data_cfg: DataConfig, key: str, data_dir: Path, n_windows: int, n_bad: int
) -> dict[str, Any]:
    """Returns the manifest of a finished build: key, settings, inputs, counts and each Parquet part's size."""
    return {
        "key": key,
        "settings": preprocessing_settings(data_cfg),
        "metadata_fingerprint": metadata_fingerprint(df),
        "audio_root": str(audio_root),
        "n_events": len(df),
        "n_windows": int(n_windows),
        "parts": {f.name: f.stat().st_size for f in sorted(data_dir.glob("*.parquet"))},
        "n_quarantined": n_bad,
        "data_config": dataclasses.asdict(data_cfg),
    }


def _build_cache(df: pd.DataFrame, audio_root: Path, data_cfg: DataConfig, final: Path, progress: bool) -> CacheResult:
    """Builds the cache ``final`` in a temporary sibling and renames it into place (the key's lock is held)."""
    t0 = time.perf_counter()
    key = final.name
    items, pre_bad = _work_items(df, audio_root)
    log.info("waveform cache miss: %d events in %d recordings -> %s", len(df), len(items), final)
    tmp = final.with_name(f".tmp-{key}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        n_windows, parts = _write_parts(items, tmp, data_cfg, progress)
        quarantine = _gather_quarantine(pre_bad, parts)
        _log_quarantine(quarantine)
        _raise_if_strict(data_cfg, quarantine)
        _write_atomic(tmp / "quarantine.csv", quarantine.to_csv(index=False))
        manifest = _manifest(df, audio_root, data_cfg, key, tmp / "data", n_windows, len(quarantine))
        manifest["build_seconds"] = round(time.perf_counter() - t0, 3)
        _write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=2))  # last: it marks the build finished
        _publish(tmp, final)
    except Exception as e:
        cause = _no_space_error(e)
        if cause is None:
            raise
        raise CacheWriteError(
            cause.errno or errno.ENOSPC,
            f"no space to build the waveform cache in {final.parent} ({cause}): free space there or set data.cache_dir "
            "to a larger folder; the partial build was removed",
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "waveform cache built in %.1fs: %d windows, %d quarantined",
        time.perf_counter() - t0,
        n_windows,
        len(quarantine),
    )
    return CacheResult(final, key, False, int(n_windows), quarantine)


def load_cache(path: str | Path, rows: Sequence[int] | None = None, *, with_waveforms: bool = True) -> pd.DataFrame:
    """Returns the cached windows sorted by (row, window): columns row, window, label, source_audio, waveform
    (float32 1-D, unpadded, ``length`` samples, views into one buffer) and length. ``rows`` keeps only those rows;
    ``with_waveforms=False`` leaves out the ``waveform`` column (and does not read it)."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no waveform cache at {path} (manifest.json missing)")
    table = pq.read_table(path / "data", columns=[c for c in CACHE_COLUMNS if with_waveforms or c != "waveform"])
    row = table["row"].to_numpy()
    window = table["window"].to_numpy()
    order = np.lexsort((window, row))  # sort indices, not the table: taking list columns in Arrow is slow
    if rows is not None:
        order = order[np.isin(row[order], np.asarray(rows, dtype=np.int64))]
    out = {
        "row": row[order].astype(np.int64),
        "window": window[order].astype(np.int64),
        "label": table["label"].to_numpy()[order].astype(np.int64),
        "source_audio": np.asarray(table["source_audio"].to_pylist(), dtype=object)[order],
    }
    if with_waveforms:
        wf = table["waveform"].combine_chunks()
        offsets = wf.offsets.to_numpy()
        values = wf.values.to_numpy(zero_copy_only=False)[offsets[0] : offsets[-1]].copy()  # one writable buffer
        out["waveform"] = _views(values, offsets[:-1] - offsets[0], order)
    out["length"] = table["length"].to_numpy()[order].astype(np.int64)
    return pd.DataFrame(out)


def _views(values: np.ndarray, starts: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Returns an object array of views ``values[starts[i]:...]`` for ``i in order``, each up to the next start (rows
    are stored back to back, so row ``i`` ends where ``i + 1`` starts)."""
    ends = np.append(starts[1:], values.size)
    out = np.empty(len(order), dtype=object)
    for k, (a, b) in enumerate(zip(starts[order].tolist(), ends[order].tolist())):
        out[k] = values[a:b]
    return out
