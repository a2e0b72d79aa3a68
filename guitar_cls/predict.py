"""Inference on raw audio: a ``Classifier`` built from a checkpoint or an MLflow model, fed waveforms or WAV files.

Preprocessing is training's own: ``data.audio.prepare_waveform`` (resample, normalise, adaptive windows) with the
checkpoint's data settings, then ``train.loop.predict_proba`` (length-bucketed batches through the checkpoint's
feature front end and model). A note cut into several windows (``long_notes: split``) gets the mean of its windows'
probabilities.
"""

from __future__ import annotations

import logging
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import yaml
from torch import nn

from guitar_cls.config import Config
from guitar_cls.data.audio import AudioError, load_snippet, prepare_waveform, read_segment, read_span
from guitar_cls.data.schema import LABELS
from guitar_cls.train.checkpoint import BEST, LATEST, SPLITS_FILE, load_model
from guitar_cls.train.loop import SnippetSet, predict_proba

log = logging.getLogger(__name__)

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{name}" for name in LABELS)
CHECKPOINT_ARTIFACT = "checkpoint"  # the pyfunc artifact key of the checkpoint file
SPLITS_ARTIFACT = "splits"
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # models:/..., runs:/..., s3://... (not C:\ paths)

Windows = tuple[list[np.ndarray], list[int]]  # (windows, true lengths) as prepare_waveform returns them


def is_model_uri(source: str | Path) -> bool:
    """Returns whether ``source`` is an MLflow/remote URI (``models:/name@alias``, ``runs:/id/model``, ...)."""
    return isinstance(source, str) and bool(_URI.match(source)) and not source.startswith("file:")


def find_model_checkpoint(model_dir: str | Path) -> Path:
    """Returns the checkpoint file inside a downloaded pyfunc model folder (per its MLmodel, else the only ``*.pt``)."""
    model_dir = Path(model_dir)
    for mlmodel in sorted(model_dir.rglob("MLmodel")):
        flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
        entry = (flavor.get("artifacts") or {}).get(CHECKPOINT_ARTIFACT)
        if entry:
            path = mlmodel.parent / (entry["path"] if isinstance(entry, dict) else entry)
            if path.is_file():
                return path
    found = sorted(model_dir.rglob("*.pt"))
    if len(found) != 1:
        raise FileNotFoundError(f"{model_dir}: expected one guitar_cls checkpoint in the model, found {found}")
    return found[0]


def find_splits(checkpoint: Path) -> Path | None:
    """Returns the ``splits.csv`` of the run a checkpoint came from, if any: beside it (a pyfunc model's artifacts)
    or in the folder above (``runs/<name>/checkpoint/best.pt`` -> ``runs/<name>/splits.csv``)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / SPLITS_FILE).is_file():
            return folder / SPLITS_FILE
    return None


def checkpoint_file(path: str | Path) -> Path:
    """Returns the checkpoint file of a file or a run folder (``best.pt``, else ``model.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST if (path / BEST).exists() else path / LATEST
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def _missing(x: float | None) -> bool:
    return x is None or bool(pd.isna(x))


def wav_files(paths_or_dirs: Sequence[str | Path]) -> list[Path]:
    """Returns the files named, with each folder replaced by its ``.wav`` files (recursively, sorted)."""
    out: list[Path] = []
    for p in map(Path, paths_or_dirs):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix.lower() == ".wav" and f.is_file()))
        else:
            out.append(p)
    return out


class Classifier:
    """A trained model with its front end and preprocessing settings; classifies waveforms, files and recordings."""

    labels: tuple[str, ...] = LABELS

    def __init__(
        self,
        model: nn.Module,
        frontend: nn.Module,
        cfg: Config,
        *,
        batch_size: int = 32,
        device: str | torch.device = "cpu",
        splits: pd.DataFrame | None = None,
        source: str = "",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.frontend = frontend.to(self.device).eval()
        self.cfg = cfg
        self.batch_size = batch_size
        self.splits = splits  # (source_audio, event_index, split) of the training run, when known
        self.source = source

    @classmethod
    def load(cls, source: str | Path, *, device: str | torch.device = "cpu", batch_size: int = 32) -> Classifier:
        """Returns the Classifier of a checkpoint file or run folder, or of an MLflow model URI
        (``models:/guitar-note-classifier@champion``, ``runs:/<id>/model``; the model is downloaded)."""
        if is_model_uri(str(source)):
            import mlflow

            with tempfile.TemporaryDirectory(prefix="guitar_cls_model_") as tmp:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(source), dst_path=tmp))
                return cls._from_file(find_model_checkpoint(local), device, batch_size, str(source))
        return cls._from_file(checkpoint_file(source), device, batch_size, str(source))

    @classmethod
    def from_config(cls, cfg: Config, *, seed: int = 0, **kw: Any) -> Classifier:
        """Returns an untrained Classifier (random weights from ``seed``) of ``cfg``: for smoke tests and timing."""
        from guitar_cls.features import make_frontend
        from guitar_cls.models import build_model

        torch.manual_seed(seed)
        frontend = make_frontend(cfg.features, cfg.data.sample_rate)
        hp = cfg.model.params
        model = build_model(cfg.model.name, n_classes=len(LABELS), in_channels=frontend.in_channels, **hp)
        return cls(model, frontend, cfg, source=f"untrained {cfg.model.name} (seed {seed})", **kw)

    @classmethod
    def _from_file(cls, path: Path, device: str | torch.device, batch_size: int, source: str) -> Classifier:
        model, frontend, cfg = load_model(path, device)
        splits_path = find_splits(path)
        splits = pd.read_csv(splits_path) if splits_path is not None else None
        return cls(model, frontend, cfg, batch_size=batch_size, device=device, splits=splits, source=source)

    # -- preprocessing -------------------------------------------------------------------------------------------

    def windows(self, wave: np.ndarray, sr: int) -> Windows:
        """Returns (windows, true lengths) of one note as training sees it (``prepare_waveform``)."""
        return prepare_waveform(wave, sr, self.cfg.data)

    def file_windows(
        self, path: str | Path, onset_sec: float | None = None, offset_sec: float | None = None
    ) -> Windows:
        """Returns the windows of a note file (whole file) or of the ``[onset, offset)`` event of a recording.

        An event is read as in training (``load_snippet``: onset shifted by ``data.onset_offset_sec``); a whole file
        is taken from its first sample.
        """
        if not (_missing(onset_sec) or _missing(offset_sec)):
            return load_snippet(path, float(onset_sec), float(offset_sec), self.cfg.data)
        try:
            duration = sf.info(str(path)).duration
        except (sf.LibsndfileError, RuntimeError, OSError) as e:
            raise AudioError("missing file" if not Path(path).is_file() else f"unreadable file: {e}") from None
        _, _, max_sec = read_span(0.0, duration, self.cfg.data)
        wave, sr = read_segment(path, 0.0, duration, max_sec)
        return self.windows(wave, sr)

    # -- classification ------------------------------------------------------------------------------------------

    def classify_windows(self, items: Sequence[Windows | None]) -> np.ndarray:
        """Returns probabilities ``(N, 3)``, one row per item (mean over its windows); ``None`` items give NaN."""
        waves, lengths, owner = [], [], []
        for i, item in enumerate(items):
            if item is None:
                continue
            for w, n in zip(*item):
                waves.append(np.asarray(w[:n], dtype=np.float32))
                lengths.append(n)
                owner.append(i)
        out = np.full((len(items), len(LABELS)), np.nan, dtype=np.float32)
        if not waves:
            return out
        data = SnippetSet(waves, np.asarray(lengths, dtype=np.int64), np.zeros(len(waves), dtype=np.int64))
        probs = predict_proba(self.model, self.frontend, data, self.batch_size, self.device)  # (W, 3)
        owner_arr = np.asarray(owner)
        for i in np.unique(owner_arr):
            out[i] = probs[owner_arr == i].mean(axis=0)
        return out

    def classify_waves(self, items: Sequence[tuple[np.ndarray, int]], *, on_error: str = "raise") -> np.ndarray:
        """Returns probabilities ``(N, 3)`` of ``(wave, sample_rate)`` notes (wave ``(n,)`` or ``(n, channels)``).

        Args:
            on_error: ``"raise"`` (AudioError for silent/empty/non-finite audio) or ``"nan"`` (that row is NaN).
        """
        windows, reasons = _collect(lambda w, sr: self.windows(np.asarray(w), int(sr)), items)
        _check(reasons, on_error, [f"item {i}" for i in range(len(items))])
        return self.classify_windows(windows)

    def prepare_files(
        self,
        paths: Sequence[str | Path],
        onsets: Sequence[float | None] | None = None,
        offsets: Sequence[float | None] | None = None,
    ) -> tuple[list[Windows | None], list[str]]:
        """Returns (windows or None, "" or the AudioError reason) per file or per event (see ``file_windows``)."""
        n = len(paths)
        ons = [None] * n if onsets is None else list(onsets)
        offs = [None] * n if offsets is None else list(offsets)
        if len(ons) != n or len(offs) != n:
            raise ValueError(f"{n} paths but {len(ons)} onsets and {len(offs)} offsets")
        return _collect(self.file_windows, list(zip(paths, ons, offs)))

    def classify_files(
        self,
        paths: Sequence[str | Path],
        onsets: Sequence[float | None] | None = None,
        offsets: Sequence[float | None] | None = None,
        *,
        on_error: str = "raise",
    ) -> np.ndarray:
        """Returns probabilities ``(N, 3)`` of note files, or of events ``[onsets[i], offsets[i])`` in recordings.

        A None/NaN onset or offset means the whole file. ``on_error`` as in ``classify_waves``.
        """
        windows, reasons = self.prepare_files(paths, onsets, offsets)
        _check(reasons, on_error, [str(p) for p in paths])
        return self.classify_windows(windows)

    def predict_files(self, paths_or_dirs: Sequence[str | Path]) -> pd.DataFrame:
        """Returns one row per WAV file (folders expand to their .wav files): ``path, label, confidence,
        prob_<label>..., error`` (``error`` empty, or why the file could not be classified; its probabilities NaN)."""
        files = wav_files(paths_or_dirs)
        windows, reasons = self.prepare_files(files)
        table = probability_table(self.classify_windows(windows))
        table.insert(0, "path", [str(f) for f in files])
        table["error"] = reasons
        return table

    def predict_recording(self, path: str | Path, **detect_kw: Any) -> pd.DataFrame:
        """Returns one row per detected note of a whole recording: ``onset_sec, offset_sec, label, confidence,
        prob_<label>..., error`` (see ``onsets.detect_notes`` for ``detect_kw``). Each note is then read and
        classified as an annotated event of that file would be (``file_windows``)."""
        from guitar_cls.onsets import detect_notes

        info = sf.info(str(path))
        wave, sr = read_segment(path, 0.0, info.duration)
        notes = detect_notes(wave, sr, **detect_kw)
        windows, reasons = self.prepare_files([path] * len(notes), [a for a, _ in notes], [b for _, b in notes])
        table = probability_table(self.classify_windows(windows))
        table.insert(0, "offset_sec", [round(b, 4) for _, b in notes])
        table.insert(0, "onset_sec", [round(a, 4) for a, _ in notes])
        table["error"] = reasons
        return table

    def explain(
        self, path: str | Path, out: str | Path, onset_sec: float | None = None, offset_sec: float | None = None
    ) -> Path:
        """Returns ``out`` after writing the features of a file (or event) with the Grad-CAM map of the predicted
        class overlaid (first window of a long note)."""
        from guitar_cls.interpret import explain_snippet

        windows, lengths = self.file_windows(path, onset_sec, offset_sec)
        probs = self.classify_windows([([windows[0]], [lengths[0]])])[0]
        where = "" if _missing(onset_sec) else f" @ {float(onset_sec):.2f}s"
        title = f"{Path(path).name}{where}: {LABELS[int(probs.argmax())]} ({probs.max():.2f})"
        return explain_snippet(self.model, self.frontend, windows[0], lengths[0], out, title)


def _collect(fn: Any, args: Sequence[tuple[Any, ...]]) -> tuple[list[Windows | None], list[str]]:
    """Returns ``fn(*a)`` per argument tuple, None where it raised AudioError, and the reasons ("" when fine)."""
    out: list[Windows | None] = []
    reasons: list[str] = []
    for a in args:
        try:
            out.append(fn(*a))
            reasons.append("")
        except AudioError as e:
            out.append(None)
            reasons.append(e.reason)
    return out, reasons


def _check(reasons: list[str], on_error: str, names: Sequence[str]) -> None:
    """Raises AudioError for the first failure when ``on_error`` is "raise"; logs the failures for "nan"."""
    if on_error not in ("raise", "nan"):
        raise ValueError(f"unsupported on_error: {on_error!r} (known: 'raise', 'nan')")
    for name, reason in zip(names, reasons):
        if reason and on_error == "raise":
            raise AudioError(f"{name}: {reason}")
        if reason:
            log.warning("cannot classify %s: %s", name, reason)


def probability_table(probs: np.ndarray) -> pd.DataFrame:
    """Returns ``label, confidence, prob_<label>...`` for probabilities ``(N, 3)`` (NaN rows: label None)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(LABELS))
    ok = ~np.isnan(probs).any(axis=1)
    best = np.where(ok, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), 0)
    table = pd.DataFrame(
        {
            "label": [LABELS[i] if good else None for i, good in zip(best, ok)],
            "confidence": np.where(ok, np.nan_to_num(probs, nan=-1.0).max(axis=1), np.nan),
        }
    )
    for j, col in enumerate(PROB_COLUMNS):
        table[col] = probs[:, j]
    return table


def latency_ms(
    model: nn.Module | Config,
    frontend: nn.Module | None = None,
    cfg: Config | None = None,
    *,
    seconds: float = 1.0,
    runs: int = 20,
    warmup: int = 3,
    threads: int = 1,
) -> float:
    """Returns the median single-snippet CPU latency in ms (features + model) for ``seconds`` of audio.

    Call as ``latency_ms(model, frontend, cfg)``, or ``latency_ms(cfg)`` to time a random-weight model built from
    ``cfg`` (what a sweep records per trial: latency does not depend on the weights). Runs on ``threads`` CPU
    threads (restored afterwards) with the model in eval mode.
    """
    if isinstance(model, Config):
        untrained = Classifier.from_config(model)
        model, frontend, cfg = untrained.model, untrained.frontend, untrained.cfg
    if frontend is None or cfg is None:
        raise ValueError("latency_ms needs (model, frontend, cfg) or a Config")
    model, frontend = model.cpu().eval(), frontend.cpu().eval()
    n = int(round(seconds * cfg.data.sample_rate))
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n)).astype(np.float32) * 0.1)
    lengths = torch.tensor([n])
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode():
            for i in range(warmup + runs):
                t0 = time.perf_counter()
                feats, frames = frontend(wave, lengths)
                model(feats, frames)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(previous)
    return float(statistics.median(times))
