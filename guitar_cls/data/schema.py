"""The metadata table: its columns, dtypes and the three labels (the one place for these facts)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf

LABELS: tuple[str, ...] = ("harmonic", "dead_note", "general_note")
LABEL_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
FLAG_COLUMNS: dict[str, str] = {
    "harmonic": "is_harmonic",
    "dead_note": "is_dead_note",
    "general_note": "is_general_note",
}

# IDMT expression-style codes that name a class; every other known code is a general note.
EXPRESSION_TO_LABEL: dict[str, str] = {"HA": "harmonic", "DN": "dead_note"}
KNOWN_EXPRESSION_STYLES: tuple[str, ...] = ("NO", "BE", "SL", "VI", "HA", "DN")
KNOWN_EXCITATION_STYLES: tuple[str, ...] = ("PK", "FS", "MU")

COLUMNS: dict[str, str] = {
    "subset_id": "string",
    "source_audio": "string",
    "source_annotation": "string",
    "event_index": "int64",
    "onset_sec": "float64",
    "offset_sec": "float64",
    "duration_sec": "float64",
    "pitch_midi": "float64",
    "string_number": "float64",
    "fret_number": "float64",
    "excitation_style": "string",
    "expression_style": "string",
    "label_category": "string",
    "is_harmonic": "bool",
    "is_dead_note": "bool",
    "is_general_note": "bool",
}

NUMERIC_COLUMNS: tuple[str, ...] = tuple(c for c, t in COLUMNS.items() if t in ("float64", "int64"))
BOOL_COLUMNS: tuple[str, ...] = tuple(c for c, t in COLUMNS.items() if t == "bool")
STRING_COLUMNS: tuple[str, ...] = tuple(c for c, t in COLUMNS.items() if t == "string")
_TRUE = {"true", "1", "yes", "t", "y"}
_FALSE = {"false", "0", "no", "f", "n"}
_DURATION_TOLERANCE_SEC = 1e-3


class MetadataError(ValueError):
    """The metadata table cannot be read or lacks columns; the message names the file."""


@dataclass(frozen=True)
class RowProblem:
    """One bad value in the metadata table: the row (0-based index), the column and why it is wrong."""

    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        return f"row {self.row} [{self.column}]: {self.reason}"


def empty_metadata() -> pd.DataFrame:
    """Returns an empty metadata table with the 16 columns in their dtypes."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in COLUMNS.items()})


def coerce_metadata(df: pd.DataFrame, source: str = "metadata") -> pd.DataFrame:
    """Returns ``df`` with the COLUMNS in order and dtypes and the index 0..n-1.

    Numbers that do not parse become NaN (``validate_metadata`` reports them by row); ``event_index`` and the flag
    columns must parse, else ``MetadataError`` names the rows.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise MetadataError(f"{source}: missing columns {missing} (expected {list(COLUMNS)})")
    out = df.reset_index(drop=True).copy()
    for col in STRING_COLUMNS:
        out[col] = out[col].astype("string")
    for col in NUMERIC_COLUMNS:
        values = pd.to_numeric(out[col], errors="coerce")
        if COLUMNS[col] == "int64":
            bad = values.isna() | (values != values.round())
            if bad.any():
                raise MetadataError(f"{source}: column {col} needs integers; bad rows {_rows(bad)}")
        out[col] = values.astype(COLUMNS[col])
    for col in BOOL_COLUMNS:
        out[col] = _coerce_bool(out[col], col, source)
    return out[list(COLUMNS)]


def _rows(mask: pd.Series, limit: int = 20) -> str:
    rows = [int(i) for i in np.flatnonzero(mask.to_numpy())]
    return ", ".join(map(str, rows[:limit])) + (f" ... ({len(rows)} in all)" if len(rows) > limit else "")


def _coerce_bool(values: pd.Series, col: str, source: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(values) and not values.isna().any():
        return values.astype(bool)
    text = values.astype("string").str.strip().str.lower()
    out = text.isin(_TRUE)
    bad = ~(out | text.isin(_FALSE)) | text.isna()
    if bad.any():
        raise MetadataError(f"{source}: column {col} needs true/false; bad rows {_rows(bad)}")
    return out.astype(bool)


def read_metadata(path: str | Path) -> pd.DataFrame:
    """Returns the metadata table from a CSV or Parquet file, coerced to COLUMNS (see ``coerce_metadata``)."""
    path = Path(path)
    if not path.exists():
        raise MetadataError(f"{path}: metadata file not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={c: "string" for c in STRING_COLUMNS}, keep_default_na=True)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise MetadataError(f"{path}: cannot read metadata: {e}") from e
    return coerce_metadata(df, str(path))


def write_metadata(df: pd.DataFrame, path: str | Path) -> Path:
    """Writes the table as CSV or Parquet (by the suffix) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = coerce_metadata(df, str(path))
    if path.suffix.lower() in (".parquet", ".pq"):
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)
    return path


def validate_metadata(
    df: pd.DataFrame, audio_root: str | Path, *, allow_outside_root: bool = False
) -> list[RowProblem]:
    """Returns every problem of every row (empty when the table is clean), sorted by row.

    Checks: onset/offset/duration present and consistent, onset inside the audio file (``soundfile.info``, read once
    per file), known label with matching flags, audio file present and readable, unique (source_audio, event_index),
    and ``source_audio`` inside ``audio_root`` (a relative path without ``..`` escaping it; absolute paths and
    ``../x.wav`` are problems, and those files are not opened, unless ``allow_outside_root``).
    """
    df = coerce_metadata(df)
    audio_root = Path(audio_root)
    problems: list[RowProblem] = []

    def report(mask: pd.Series, column: str, reason: Callable[[int], str]) -> None:
        problems.extend(RowProblem(int(i), column, reason(int(i))) for i in np.flatnonzero(mask.to_numpy()))

    onset, offset, duration = df["onset_sec"], df["offset_sec"], df["duration_sec"]
    report(onset.isna(), "onset_sec", lambda i: "missing onset")
    report(onset < 0, "onset_sec", lambda i: f"negative onset {onset[i]:.4f} s")
    report(offset.isna(), "offset_sec", lambda i: "missing offset")
    report(offset < onset, "offset_sec", lambda i: f"offset {offset[i]:.4f} s is before the onset {onset[i]:.4f} s")
    report(duration.isna(), "duration_sec", lambda i: "missing duration")
    report(duration <= 0, "duration_sec", lambda i: f"non-positive duration {duration[i]:.4f} s")
    mismatch = (duration > 0) & ((offset - onset - duration).abs() > _DURATION_TOLERANCE_SEC)
    report(
        mismatch,
        "duration_sec",
        lambda i: f"duration {duration[i]:.4f} s != offset - onset {offset[i] - onset[i]:.4f} s",
    )

    label = df["label_category"]
    known = label.isin(LABELS).fillna(False).astype(bool)
    report(~known, "label_category", lambda i: f"unknown label {label[i]!r} (expected one of {list(LABELS)})")
    for name, flag in FLAG_COLUMNS.items():
        wrong = known & (df[flag] != (label == name).fillna(False))
        report(wrong, flag, lambda i, f=flag: f"{f}={bool(df[f][i])} contradicts label_category {label[i]!r}")

    source = df["source_audio"]
    report(source.isna() | (source.fillna("").str.strip() == ""), "source_audio", lambda i: "missing audio path")
    keyed = df[source.notna()]
    dup = keyed.duplicated(["source_audio", "event_index"], keep="first")
    first_row: dict[tuple[str, int], int] = {}
    for i, key in zip(keyed.index, zip(keyed["source_audio"], keyed["event_index"])):
        first_row.setdefault(key, int(i))
    for i in keyed.index[dup.to_numpy()]:
        j = first_row[(source[i], df["event_index"][i])]
        problems.append(RowProblem(int(i), "event_index", f"duplicate (source_audio, event_index) of row {j}"))

    for rel, rows in keyed.groupby("source_audio", sort=False).groups.items():
        if not allow_outside_root and not is_inside_root(str(rel)):
            reason = f"{rel} is outside the audio root {audio_root} (absolute or ../; see --allow-outside-root)"
            problems.extend(RowProblem(int(i), "source_audio", reason) for i in rows)
            continue
        problems.extend(_check_audio(audio_root, str(rel), rows, onset))
    return sorted(problems, key=lambda p: (p.row, p.column))


def is_inside_root(source_audio: str) -> bool:
    """Returns whether a ``source_audio`` path stays inside its audio root: relative, and its ``..`` parts (after
    normalising) never climb above the root. Symlinks are not followed (a data set may link to other disks)."""
    if not source_audio.strip():
        return True  # reported as a missing path
    path = PurePosixPath(source_audio.replace("\\", "/"))
    if path.is_absolute() or PureWindowsPath(source_audio).drive:
        return False
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def _check_audio(audio_root: Path, rel: str, rows: pd.Index, onset: pd.Series) -> list[RowProblem]:
    """Returns the problems of the rows of one audio file: missing, unreadable or onsets beyond its end."""
    path = audio_root / rel
    if not path.is_file():
        return [RowProblem(int(i), "source_audio", f"audio file not found: {path}") for i in rows]
    try:
        length = sf.info(str(path)).duration
    except (RuntimeError, sf.LibsndfileError) as e:
        return [RowProblem(int(i), "source_audio", f"unreadable audio {path}: {e}") for i in rows]
    return [
        RowProblem(int(i), "onset_sec", f"onset {onset[i]:.4f} s is beyond the end of {rel} ({length:.4f} s)")
        for i in rows
        if pd.notna(onset[i]) and onset[i] >= length
    ]


def summarize_metadata(df: pd.DataFrame) -> dict[str, Any]:
    """Returns counts per class and per subset and duration percentiles (overall and per class)."""
    pct = (0, 5, 25, 50, 75, 95, 100)

    def percentiles(values: pd.Series) -> dict[str, float]:
        v = values.dropna().to_numpy(dtype=float)
        if v.size == 0:
            return {}
        return {f"p{p}": round(float(x), 4) for p, x in zip(pct, np.percentile(v, pct))}

    labels = df["label_category"].astype("string")
    per_subset = {
        str(s): {str(k): int(n) for k, n in g["label_category"].value_counts().items()}
        for s, g in df.groupby("subset_id", sort=True)
    }
    return {
        "n_events": len(df),
        "n_recordings": int(df["source_audio"].nunique()),
        "per_class": {name: int((labels == name).sum()) for name in LABELS},
        "per_subset": per_subset,
        "duration_sec": percentiles(df["duration_sec"]),
        "duration_sec_per_class": {name: percentiles(df["duration_sec"][labels == name]) for name in LABELS},
    }


def format_problems(problems: list[RowProblem], limit: int | None = None) -> str:
    """Returns a readable report of the problems, one per line (at most ``limit`` lines plus a count)."""
    shown = problems if limit is None else problems[:limit]
    lines = [str(p) for p in shown]
    if len(shown) < len(problems):
        lines.append(f"... and {len(problems) - len(shown)} more")
    return "\n".join(lines)
