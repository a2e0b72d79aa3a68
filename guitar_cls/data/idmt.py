"""IDMT-SMT-Guitar style XML annotations: read a folder tree into the metadata table, and write the same format.

The layout follows the real data set: ``datasetN/annotation/*.xml`` beside ``datasetN/audio/*.wav``; each XML holds
``instrumentRecording/globalParameter/audioFileName`` and ``instrumentRecording/transcription/event`` elements with
pitch, onsetSec, offsetSec, fretNumber, stringNumber, excitationStyle and expressionStyle. Problems (malformed XML,
a missing WAV, unknown style codes, repeated events) are collected per file, never raised.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from guitar_cls.data.schema import (
    COLUMNS,
    EXPRESSION_TO_LABEL,
    FLAG_COLUMNS,
    KNOWN_EXCITATION_STYLES,
    KNOWN_EXPRESSION_STYLES,
    coerce_metadata,
    empty_metadata,
)

log = logging.getLogger(__name__)

# XML tag of each event field -> metadata column (pitch etc. are numbers, the styles are codes).
EVENT_FIELDS: dict[str, str] = {
    "pitch": "pitch_midi",
    "onsetSec": "onset_sec",
    "offsetSec": "offset_sec",
    "fretNumber": "fret_number",
    "stringNumber": "string_number",
    "excitationStyle": "excitation_style",
    "expressionStyle": "expression_style",
}
_NUMERIC_FIELDS = ("pitch", "onsetSec", "offsetSec", "fretNumber", "stringNumber")
_SUBSET_RE = re.compile(r"^dataset\d+$", re.IGNORECASE)


@dataclass
class IngestResult:
    """The metadata table (COLUMNS, one row per kept event) and one line per problem found."""

    table: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def write_idmt_xml(
    path: str | Path,
    audio_file_name: str,
    events: Sequence[Mapping[str, Any]],
    global_params: Mapping[str, Any] | None = None,
) -> Path:
    """Writes one IDMT-style annotation file and returns its path.

    Args:
        path: the XML file to write (parents are created).
        audio_file_name: the WAV's file name, stored as ``globalParameter/audioFileName``.
        events: one mapping per note with the XML tag names of ``EVENT_FIELDS`` as keys.
        global_params: further ``globalParameter`` children (instrument, instrumentModel, pickUpSetting, ...).
    """
    root = ET.Element("instrumentRecording")
    glob = ET.SubElement(root, "globalParameter")
    ET.SubElement(glob, "audioFileName").text = audio_file_name
    for key, value in (global_params or {}).items():
        if key != "audioFileName":
            ET.SubElement(glob, key).text = str(value)
    trans = ET.SubElement(root, "transcription")
    for ev in events:
        node = ET.SubElement(trans, "event")
        for tag in EVENT_FIELDS:
            if tag in ev and ev[tag] is not None:
                value = ev[tag]
                ET.SubElement(node, tag).text = f"{value:.6f}" if isinstance(value, float) else str(value)
    ET.indent(root)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path


def read_idmt_xml(path: str | Path) -> tuple[str | None, list[dict[str, str]]]:
    """Returns (audioFileName or None, one dict of raw tag text per event) of one annotation file.

    Raises:
        ET.ParseError: the file is not well-formed XML.
        ValueError: the root is not ``instrumentRecording``.
    """
    root = ET.parse(path).getroot()
    if root.tag != "instrumentRecording":
        raise ValueError(f"root element is <{root.tag}>, expected <instrumentRecording>")
    name = root.findtext("globalParameter/audioFileName")
    events = [
        {child.tag: (child.text or "").strip() for child in ev}
        for ev in root.iterfind("transcription/event")  # the real files keep every note here
    ]
    return (name.strip() if name and name.strip() else None), events


def _subset_of(xml_path: Path, root: Path) -> str:
    """Returns the nearest ``datasetN`` folder above the file (``root`` included), else the top folder under
    ``root`` (unless that is just ``annotation``/``audio``), else root's name."""
    for folder in xml_path.parents:
        if _SUBSET_RE.match(folder.name):
            return folder.name
        if folder == root:
            break
    rel = xml_path.relative_to(root)
    if len(rel.parts) > 1 and rel.parts[0].lower() not in ("annotation", "annotations", "audio"):
        return rel.parts[0]
    return root.name


class _WavIndex:
    """Finds the WAV of an annotation: beside it, in a sibling ``audio/`` folder, then anywhere under the roots."""

    def __init__(self, roots: Iterable[Path]) -> None:
        self.by_name: dict[str, list[Path]] = {}
        seen: set[Path] = set()
        for r in roots:
            for p in r.rglob("*"):
                if p.suffix.lower() == ".wav" and p.is_file() and p.resolve() not in seen:
                    seen.add(p.resolve())
                    self.by_name.setdefault(p.name.lower(), []).append(p)

    def find(self, xml_path: Path, name: str) -> tuple[Path | None, str | None]:
        """Returns (path, None) or (None, why not): near the XML first, then a unique match elsewhere."""
        if not name.lower().endswith(".wav"):
            name = f"{name}.wav"
        hits = self.by_name.get(name.lower(), [])
        if not hits:
            return None, None
        near = [xml_path.parent, xml_path.parent.parent / "audio", xml_path.parent / "audio"]
        for folder in near:
            for h in hits:
                if h.parent.resolve() == folder.resolve():
                    return h, None
        if len(hits) == 1:
            return hits[0], None
        return None, f"{len(hits)} files named {name}: {', '.join(str(h) for h in hits[:3])}"


def _parse_events(raw: list[dict[str, str]], where: str, problems: list[str]) -> list[dict[str, Any]]:
    """Returns the usable events with numbers parsed; reports and drops the rest."""
    events = []
    for i, ev in enumerate(raw):
        parsed: dict[str, Any] = {}
        bad = []
        for tag in _NUMERIC_FIELDS:
            text = ev.get(tag, "")
            try:
                parsed[tag] = float(text) if text else float("nan")
            except ValueError:
                parsed[tag] = float("nan")
                bad.append(f"{tag}={text!r}")
        parsed["excitationStyle"] = ev.get("excitationStyle", "").upper()
        parsed["expressionStyle"] = ev.get("expressionStyle", "").upper()
        onset, offset = parsed["onsetSec"], parsed["offsetSec"]
        if bad:
            problems.append(f"{where}: event {i}: not a number: {', '.join(bad)}")
        if onset != onset or offset != offset:  # NaN: missing timing makes the event useless
            problems.append(f"{where}: event {i}: missing onsetSec/offsetSec (skipped)")
            continue
        if offset <= onset:
            problems.append(f"{where}: event {i}: offsetSec {offset} <= onsetSec {onset} (skipped)")
            continue
        code = parsed["expressionStyle"]
        if code not in KNOWN_EXPRESSION_STYLES:
            problems.append(f"{where}: event {i}: unknown expressionStyle {code!r} (skipped)")
            continue
        if parsed["excitationStyle"] not in KNOWN_EXCITATION_STYLES:
            problems.append(f"{where}: event {i}: unknown excitationStyle {parsed['excitationStyle']!r} (kept)")
        events.append(parsed)
    return events


def _dedupe(events: list[dict[str, Any]], where: str, problems: list[str]) -> list[dict[str, Any]]:
    """Returns the events without exact repeats (some IDMT files repeat their last events); reports the count."""
    seen: set[tuple[Any, ...]] = set()
    kept = []
    for ev in events:
        key = tuple(round(v, 6) if isinstance(v, float) and v == v else v for v in ev.values())
        if key in seen:
            continue
        seen.add(key)
        kept.append(ev)
    if len(kept) < len(events):
        problems.append(f"{where}: dropped {len(events) - len(kept)} repeated event(s)")
    return kept


def ingest_idmt(root: str | Path, audio_root: str | Path | None = None) -> IngestResult:
    """Returns the metadata table of every IDMT-style XML under ``root`` and the problems found.

    Args:
        root: folder searched recursively for ``*.xml`` (and for WAVs).
        audio_root: folder the ``source_audio`` paths are relative to (default ``root``); also searched for WAVs.
    """
    root = Path(root).resolve()
    audio_root = Path(audio_root).resolve() if audio_root is not None else root
    problems: list[str] = []
    xml_files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".xml" and p.is_file())
    wavs = _WavIndex([root] if audio_root == root else [root, audio_root])
    rows: list[dict[str, Any]] = []
    n_files = 0
    for xml_path in xml_files:
        where = str(xml_path.relative_to(root))
        try:
            audio_name, raw = read_idmt_xml(xml_path)
        except (ET.ParseError, ValueError, OSError) as e:
            problems.append(f"{where}: malformed annotation: {e}")
            continue
        wav, why = None, None
        for name in filter(None, (audio_name, xml_path.stem)):  # audioFileName first, then the XML's own stem
            wav, why = wavs.find(xml_path, name)
            if wav is not None or why is not None:
                break
        if wav is None:
            problems.append(f"{where}: {why or f'no WAV found for audioFileName {audio_name!r} or {xml_path.stem}'}")
            continue
        events = _dedupe(_parse_events(raw, where, problems), where, problems)
        if not events:
            problems.append(f"{where}: no usable events")
            continue
        n_files += 1
        try:
            source = wav.resolve().relative_to(audio_root).as_posix()
        except ValueError:
            source = wav.resolve().as_posix()
        subset = _subset_of(xml_path, root)
        for i, ev in enumerate(events):
            label = EXPRESSION_TO_LABEL.get(ev["expressionStyle"], "general_note")
            row = {col: ev[tag] for tag, col in EVENT_FIELDS.items()}
            row.update(
                subset_id=subset,
                source_audio=source,
                source_annotation=where.replace("\\", "/"),
                event_index=i,
                duration_sec=ev["offsetSec"] - ev["onsetSec"],
                label_category=label,
                **{flag: name == label for name, flag in FLAG_COLUMNS.items()},
            )
            rows.append(row)
    table = coerce_metadata(pd.DataFrame(rows, columns=list(COLUMNS))) if rows else empty_metadata()
    log.info(
        "ingested %d events from %d of %d annotation files (%d problems)",
        len(table),
        n_files,
        len(xml_files),
        len(problems),
    )
    return IngestResult(table=table, problems=problems)
