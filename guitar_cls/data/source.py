"""Where the data comes from: one or several metadata tables, or the demo set generated on first use.

Several tables (``data.metadata: [a.csv, b.parquet, demo]``) are read, validated each against its own audio root
and combined into one table with one audio root: the folder all the roots share. Each ``source_audio`` is rewritten
relative to that folder, so ``audio_root / source_audio`` still names the file and a path such as
``dataset2/audio/x.wav`` in two tables with different roots stays two recordings (for the grouped splits, the
splits table, the cache key and every lookup by ``(source_audio, event_index)``). One table is used as it is.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from guitar_cls.config import DataConfig
from guitar_cls.data.schema import RowProblem, read_metadata, validate_metadata
from guitar_cls.data.synth import DEMO_VERSION, demo_settings, make_demo_dataset

log = logging.getLogger(__name__)

DEMO_METADATA = "metadata.csv"
DEMO = "demo"  # a data.metadata entry that stands for the demo data set under data.demo_dir


@dataclass(frozen=True)
class DataTable:
    """One metadata table and the folder its ``source_audio`` paths are relative to (both absolute)."""

    metadata: Path
    audio_root: Path


@dataclass(frozen=True)
class TableProblem:
    """A bad row of one table: the table file and the row (0-based, in that table) with its problem."""

    table: Path
    problem: RowProblem

    def __str__(self) -> str:
        return f"{self.table}: {self.problem}"


@dataclass
class CombinedData:
    """The rows of every table as one metadata table whose ``source_audio`` paths are relative to ``audio_root``."""

    metadata: pd.DataFrame  # index 0..n-1, the tables one after another
    audio_root: Path
    tables: tuple[DataTable, ...]
    table_index: np.ndarray  # (n,) position in ``tables`` of each row's table
    problems: list[TableProblem]  # bad rows, named by their own table and row


def _absolute(path: str | Path) -> Path:
    """Returns ``path`` made absolute against the current working directory (``~`` expanded)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def resolve_tables(data_cfg: DataConfig) -> list[DataTable]:
    """Returns the configured tables with absolute paths, in the configured order.

    ``data.metadata`` None (or ``"demo"``) is the demo set under ``data.demo_dir``, generated first when missing;
    generation writes to a temporary sibling folder that is renamed into place, so an interrupted run never leaves
    half a data set behind. A table's audio root is its ``data.audio_root`` entry, else the table's folder (for the
    demo set ``data.demo_dir``). With several tables a single ``data.audio_root`` is shared by all but ``demo``.

    Raises:
        FileNotFoundError: a configured metadata file does not exist.
    """
    several = isinstance(data_cfg.metadata, list) and len(data_cfg.metadata) > 1
    entries: list[str | None] = data_cfg.metadata if isinstance(data_cfg.metadata, list) else [data_cfg.metadata]
    if isinstance(data_cfg.audio_root, list):
        roots = list(data_cfg.audio_root)
    else:
        roots = [None if several and e == DEMO else data_cfg.audio_root for e in entries]
    tables = []
    for i, (entry, root) in enumerate(zip(entries, roots)):
        if entry is None or entry == DEMO:
            demo = _absolute(data_cfg.demo_dir)
            metadata = demo / DEMO_METADATA
            if not metadata.is_file():
                _generate_demo(demo, data_cfg.demo_recordings, data_cfg.demo_seed)
            else:
                _warn_if_stale(demo, data_cfg.demo_recordings, data_cfg.demo_seed)
            tables.append(DataTable(metadata, _absolute(root) if root is not None else demo))
            continue
        metadata = _absolute(entry)
        if not metadata.is_file():
            key = f"data.metadata[{i}]" if isinstance(data_cfg.metadata, list) else "data.metadata"
            raise FileNotFoundError(f"{key}: {metadata} does not exist")
        tables.append(DataTable(metadata, _absolute(root) if root is not None else metadata.parent))
    return tables


def resolve_data(data_cfg: DataConfig) -> tuple[Path, Path]:
    """Returns the absolute (metadata path, audio root) of the configured table (see ``resolve_tables``).

    Raises:
        FileNotFoundError: the configured metadata file does not exist.
        ValueError: ``data.metadata`` lists several tables; ``load_tables`` combines them.
    """
    tables = resolve_tables(data_cfg)
    if len(tables) != 1:
        raise ValueError(f"data.metadata lists {len(tables)} tables; combine them with load_tables(resolve_tables(…))")
    return tables[0].metadata, tables[0].audio_root


def data_overrides(metadata: Sequence[str], audio_roots: Sequence[str]) -> list[tuple[str, Any]]:
    """Returns the ``data.metadata`` / ``data.audio_root`` overrides of repeated ``--data`` / ``--audio-root`` options.

    One value stays a string (exactly the single-table config); several become a list. Audio roots pair with the
    tables in order, an empty one meaning the table's folder; a single root is shared (see ``resolve_tables``).

    Raises:
        ValueError: several audio roots, but not one per table.
    """
    if len(audio_roots) > 1 and len(audio_roots) != max(len(metadata), 1):
        raise ValueError(
            f"--audio-root: give one for all tables or one per --data ({len(metadata)}), got {len(audio_roots)}"
        )
    out: list[tuple[str, Any]] = []
    if metadata:
        out.append(("data.metadata", metadata[0] if len(metadata) == 1 else list(metadata)))
    if len(audio_roots) == 1:
        out.append(("data.audio_root", audio_roots[0] or None))
    elif audio_roots:
        out.append(("data.audio_root", [r or None for r in audio_roots]))
    return out


def combine_tables(tables: Sequence[DataTable], frames: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, Path]:
    """Returns (the frames one after another with index 0..n-1, their shared audio root).

    The root is the deepest folder above every table's root; each ``source_audio`` becomes its file's normalised
    path relative to it (POSIX separators), so equal relative paths under different roots stay different and the
    same file named by two tables is the same recording. A single table is returned unchanged with its own root.
    """
    if len(tables) != len(frames) or not tables:
        raise ValueError(f"need one frame per table, got {len(frames)} frames for {len(tables)} tables")
    if len(tables) == 1:
        return frames[0], tables[0].audio_root
    shared = Path(os.path.commonpath([str(t.audio_root) for t in tables]))
    parts = []
    for table, df in zip(tables, frames):
        prefix = Path(os.path.relpath(table.audio_root, shared)).as_posix()  # "." for the shared root itself
        source = df["source_audio"]
        rewritten = [s if pd.isna(s) else posixpath.normpath(posixpath.join(prefix, str(s))) for s in source]
        parts.append(df.assign(source_audio=pd.array(rewritten, dtype=source.dtype)))
    return pd.concat(parts, ignore_index=True), shared


def load_tables(tables: Sequence[DataTable]) -> CombinedData:
    """Returns the tables read, validated each against its own audio root and combined (``combine_tables``).

    Besides each table's own problems (``validate_metadata``), an event named by two tables (the same audio file and
    ``event_index``) is a problem of the later table's row, naming the earlier one.

    Raises:
        MetadataError: a table cannot be read or lacks columns (the message names the file).
    """
    frames = [read_metadata(t.metadata) for t in tables]
    problems = [
        TableProblem(t.metadata, p) for t, df in zip(tables, frames) for p in validate_metadata(df, t.audio_root)
    ]
    combined, root = combine_tables(tables, frames)
    table_index = np.repeat(np.arange(len(frames)), [len(df) for df in frames])
    starts = np.cumsum([0] + [len(df) for df in frames])
    if len(tables) > 1:
        problems += _shared_events(combined, tables, table_index, starts)
        order = {t.metadata: i for i, t in reversed(list(enumerate(tables)))}
        problems.sort(key=lambda p: (order[p.table], p.problem.row, p.problem.column))
    return CombinedData(combined, root, tuple(tables), table_index, problems)


def _shared_events(
    df: pd.DataFrame, tables: Sequence[DataTable], table_index: np.ndarray, starts: np.ndarray
) -> list[TableProblem]:
    """Returns one problem per row whose (source_audio, event_index) an earlier table already holds."""
    keyed = df[df["source_audio"].notna()]
    first: dict[tuple[str, int], int] = {}
    out = []
    for i, key in zip(keyed.index, zip(keyed["source_audio"].astype(str), keyed["event_index"].astype(int))):
        j = first.setdefault(key, int(i))
        ti, tj = int(table_index[i]), int(table_index[j])
        if ti != tj:
            row, other = int(i - starts[ti]), int(j - starts[tj])
            reason = f"the same event (source_audio, event_index) as row {other} of {tables[tj].metadata}"
            out.append(TableProblem(tables[ti].metadata, RowProblem(row, "event_index", reason)))
    return out


def _generate_demo(demo: Path, n_recordings: int, seed: int) -> None:
    """Generates the demo set in a temporary folder beside ``demo`` and renames it into place."""
    demo.parent.mkdir(parents=True, exist_ok=True)
    log.info("generating the demo data set (%d recordings, seed %d) in %s", n_recordings, seed, demo)
    tmp = Path(tempfile.mkdtemp(prefix=f".{demo.name}.tmp-", dir=demo.parent))
    try:
        make_demo_dataset(tmp, n_recordings=n_recordings, seed=seed)
        if demo.exists():  # a leftover without metadata.csv (or a concurrent generation that finished first)
            if (demo / DEMO_METADATA).is_file():
                return
            if any(demo.iterdir()) and demo_settings(demo) is None:
                raise FileExistsError(f"data.demo_dir: {demo} holds files the demo generator did not write; "
                                      "point data.demo_dir at a new folder")  # fmt: skip
            shutil.rmtree(demo)
        tmp.rename(demo)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _warn_if_stale(demo: Path, n_recordings: int, seed: int) -> None:
    """Logs a warning when the demo set on disk was made by another generator version or other settings."""
    found = demo_settings(demo) or {}
    want = {"version": DEMO_VERSION, "n_recordings": n_recordings, "seed": seed}
    if any(found.get(k) != v for k, v in want.items()):
        log.warning(
            "the demo set in %s was generated with %s, the config asks for %s: delete the folder to regenerate it",
            demo,
            {k: found.get(k) for k in want},
            want,
        )
