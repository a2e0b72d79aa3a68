"""Inference on raw audio: a ``Classifier`` (a trained model with its preprocessing settings) fed waveforms or WAV
files, and the tables ``jobs/predict.py`` prints.

Preprocessing is training's own: ``data.audio.prepare_waveform`` (resample, normalise, adaptive windows) with the
checkpoint's data settings (``wave_windows``, ``file_windows``), then ``inference.predict_proba`` (length-sorted
batches through the checkpoint's feature front end and model). A note cut into several windows (``long_notes:
split``) gets the mean of its windows' probabilities. Where a model comes from: ``train.checkpoint`` (files, run
folders, the run's splits) and ``pyfunc`` (the layout of a logged MLflow model); Grad-CAM figures:
``interpret.explain_file``.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from torch import nn

from guitar_cls.config import Config, DataConfig
from guitar_cls.data.audio import AudioError, load_snippet, prepare_waveform, read_segment, read_span
from guitar_cls.data.schema import LABELS
from guitar_cls.inference import Waves, build_from_config, mean_per_owner, predict_proba
from guitar_cls.train.checkpoint import checkpoint_file, find_splits, load_model

log = logging.getLogger(__name__)

PROB_COLUMNS: tuple[str, ...] = tuple(f"prob_{name}" for name in LABELS)
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")  # models:/..., runs:/..., s3://... (not C:\ paths)

Windows = tuple[list[np.ndarray], list[int]]  # (windows, true lengths) as prepare_waveform returns them


def is_model_uri(source: str | Path) -> bool:
    """Returns whether ``source`` is an MLflow/remote URI (``models:/name@alias``, ``runs:/id/model``, ...)."""
    return isinstance(source, str) and bool(_URI.match(source)) and not source.startswith("file:")


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


def wave_windows(wave: np.ndarray, sr: int, data_cfg: DataConfig) -> Windows:
    """Returns (windows, true lengths) of one note ``(n,)`` or ``(n, channels)`` as training sees it."""
    return prepare_waveform(np.asarray(wave), int(sr), data_cfg)


def file_windows(path: str | Path, onset_sec: float | None, offset_sec: float | None, data_cfg: DataConfig) -> Windows:
    """Returns the windows of a note file (whole file) or of the ``[onset, offset)`` event of a recording.

    An event is read as in training (``load_snippet``: onset shifted by ``data.onset_offset_sec``); a whole file
    is taken from its first sample.
    """
    if not (_missing(onset_sec) or _missing(offset_sec)):
        return load_snippet(path, float(onset_sec), float(offset_sec), data_cfg)
    try:
        duration = sf.info(str(path)).duration
    except (sf.LibsndfileError, RuntimeError, OSError) as e:
        raise AudioError("missing file" if not Path(path).is_file() else f"unreadable file: {e}") from None
    _, _, max_sec = read_span(0.0, duration, data_cfg)
    wave, sr = read_segment(path, 0.0, duration, max_sec)
    return wave_windows(wave, sr, data_cfg)


def files_windows(
    paths: Sequence[str | Path],
    onsets: Sequence[float | None] | None,
    offsets: Sequence[float | None] | None,
    data_cfg: DataConfig,
) -> tuple[list[Windows | None], list[str]]:
    """Returns (windows or None, "" or the AudioError reason) per file or per event (see ``file_windows``)."""
    n = len(paths)
    ons = [None] * n if onsets is None else list(onsets)
    offs = [None] * n if offsets is None else list(offsets)
    if len(ons) != n or len(offs) != n:
        raise ValueError(f"{n} paths but {len(ons)} onsets and {len(offs)} offsets")
    return _collect(lambda *a: file_windows(*a, data_cfg), list(zip(paths, ons, offs)))


class Classifier:
    """A trained model with its front end and preprocessing settings: classifies prepared windows, waveforms and
    files. ``load`` reads a checkpoint or an MLflow model; ``from_config`` builds an untrained one."""

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

            from guitar_cls.pyfunc import find_ensemble, find_model_checkpoint
            from guitar_cls.tracking import use_default_store

            use_default_store()
            with tempfile.TemporaryDirectory(prefix="guitar_cls_model_") as tmp:
                local = mlflow.artifacts.download_artifacts(artifact_uri=str(source), dst_path=tmp)
                ensemble = find_ensemble(local)
                if ensemble is not None:  # a registered sweep ensemble (jobs/ensemble.py)
                    rule, members = ensemble
                    loaded = [cls._from_checkpoint(p, device, batch_size, f"{source} member {i}")
                              for i, (p, _) in enumerate(members)]  # fmt: skip
                    return EnsembleClassifier(loaded, [w for _, w in members], rule, source=str(source))  # type: ignore[return-value]
                return cls._from_checkpoint(find_model_checkpoint(local), device, batch_size, str(source))
        return cls._from_checkpoint(checkpoint_file(source), device, batch_size, str(source))

    @classmethod
    def _from_checkpoint(cls, path: Path, device: str | torch.device, batch_size: int, source: str) -> Classifier:
        model, frontend, cfg = load_model(path, device)
        splits_path = find_splits(path)
        splits = pd.read_csv(splits_path) if splits_path is not None else None
        return cls(model, frontend, cfg, batch_size=batch_size, device=device, splits=splits, source=source)

    @classmethod
    def from_config(cls, cfg: Config, *, seed: int = 0, **kw: Any) -> Classifier:
        """Returns an untrained Classifier (random weights from ``seed``) of ``cfg``: for smoke tests and timing."""
        torch.manual_seed(seed)
        model, frontend = build_from_config(cfg)
        return cls(model, frontend, cfg, source=f"untrained {cfg.model.name} (seed {seed})", **kw)

    def classify_windows(self, items: Sequence[Windows | None]) -> np.ndarray:
        """Returns probabilities ``(N, 3)``, one row per item (mean over its windows); ``None`` items give NaN."""
        waves, lengths, owner = [], [], []
        for i, item in enumerate(items):
            for w, n in zip(*item) if item is not None else ():
                waves.append(np.asarray(w[:n], dtype=np.float32))
                lengths.append(n)
                owner.append(i)
        if not waves:
            return np.full((len(items), len(LABELS)), np.nan, dtype=np.float32)
        data = Waves(waves, np.asarray(lengths, dtype=np.int64))
        probs = predict_proba(self.model, self.frontend, data, self.batch_size, self.device)  # (W, 3)
        return mean_per_owner(probs, owner, len(items))

    def classify_waves(self, items: Sequence[tuple[np.ndarray, int]], *, on_error: str = "raise") -> np.ndarray:
        """Returns probabilities ``(N, 3)`` of ``(wave, sample_rate)`` notes (wave ``(n,)`` or ``(n, channels)``).

        Args:
            on_error: ``"raise"`` (AudioError for silent/empty/non-finite audio) or ``"nan"`` (that row is NaN).
        """
        windows, reasons = _collect(lambda w, sr: wave_windows(w, sr, self.cfg.data), items)
        _check(reasons, on_error, [f"item {i}" for i in range(len(items))])
        return self.classify_windows(windows)

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
        windows, reasons = files_windows(paths, onsets, offsets, self.cfg.data)
        _check(reasons, on_error, [str(p) for p in paths])
        return self.classify_windows(windows)


class MemberMean(nn.Module):
    """``(features [B, C, F, T], lengths [B]) -> [B, 3]`` whose softmax is ``ensemble.combine`` of the members'
    probabilities: the log of their weighted mean (``mean``) or the weighted mean of their log-probabilities
    (``logit``, floored at ``ensemble.LOG_FLOOR``). The members of an ensemble that share one front end as one network,
    so that export, latency and band importance take it like a single model."""

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float], rule: str) -> None:
        super().__init__()
        from guitar_cls.ensemble import LOG_FLOOR, RULES

        if rule not in RULES:
            raise ValueError(f"unsupported ensemble rule: {rule!r} (known: {', '.join(RULES)})")
        w = torch.as_tensor(np.asarray(weights, dtype=np.float64) / float(np.sum(weights)), dtype=torch.float32)
        self.members = nn.ModuleList(models)
        self.rule, self.log_floor = rule, float(np.log(LOG_FLOOR))
        self.register_buffer("log_weights", torch.log(w.clamp(min=1e-30)).view(-1, 1, 1), persistent=False)
        self.register_buffer("weights", w.view(-1, 1, 1), persistent=False)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(m(features, lengths).float(), dim=-1) for m in self.members])
        if self.rule == "logit":
            return (self.weights * logp.clamp(min=self.log_floor)).sum(dim=0)
        return torch.logsumexp(logp + self.log_weights, dim=0)


class EnsembleClassifier:
    """Several Classifiers whose probabilities are combined (``ensemble.combine``: ``rule`` mean or logit, member
    ``weights``): what ``Classifier.load`` returns for a registered ensemble (a sweep's refit members, or
    ``jobs/ensemble.py``), so evaluate, predict and review take it like one model. Files and waveforms are read by
    each member with its own data settings; prepared windows need one data setting shared by all members. Members
    that share one front end (data and feature settings: a refit's seeds) are also one network, ``model`` a
    ``MemberMean`` and ``frontend`` theirs, to export and time; members that do not have no single network (``model``
    / ``frontend`` raise). Grad-CAM explains the first member (``interpret.explain_file``)."""

    labels: tuple[str, ...] = LABELS

    def __init__(self, members: Sequence[Classifier], weights: Sequence[float], rule: str, *, source: str = "") -> None:
        if not members or len(members) != len(weights):
            raise ValueError(f"an ensemble needs one weight per member, got {len(members)} members, {len(weights)}")
        self.members, self.weights, self.rule = list(members), np.asarray(weights, dtype=np.float64), rule
        self.cfg = members[0].cfg  # the data and split settings the callers read (shared within one sweep)
        self.splits = members[0].splits
        self.source = source

    def _no_single(self, what: str) -> Any:
        raise TypeError(
            f"{self.source}: an ensemble of {len(self.members)} models with different data or feature settings has "
            f"no single {what}; export or time one member (its checkpoint) instead"
        )

    def _shared_frontend(self) -> bool:
        first = self.members[0].cfg
        return all(m.cfg.data == first.data and m.cfg.features == first.features for m in self.members[1:])

    @property
    def model(self) -> nn.Module:
        if not self._shared_frontend():
            return self._no_single("model")
        return MemberMean([m.model for m in self.members], self.weights.tolist(), self.rule).eval()

    @property
    def frontend(self) -> nn.Module:
        return self.members[0].frontend if self._shared_frontend() else self._no_single("front end")

    def _combine(self, probs: list[np.ndarray]) -> np.ndarray:
        from guitar_cls.ensemble import combine

        return combine(np.stack(probs), self.weights, self.rule).astype(np.float32)

    def classify_windows(self, items: Sequence[Windows | None]) -> np.ndarray:
        """Returns the combined probabilities ``(N, 3)`` of prepared windows (ValueError if the members' data
        settings differ: then classify files or waveforms)."""
        first = _preprocessing(self.cfg.data)
        if any(_preprocessing(m.cfg.data) != first for m in self.members[1:]):
            raise ValueError(f"{self.source}: the members prepare audio differently; classify files or waves instead")
        return self._combine([m.classify_windows(items) for m in self.members])

    def classify_waves(self, items: Sequence[tuple[np.ndarray, int]], *, on_error: str = "raise") -> np.ndarray:
        """Returns the combined probabilities ``(N, 3)`` of ``(wave, sample_rate)`` notes (as ``Classifier``)."""
        return self._combine([m.classify_waves(items, on_error=on_error) for m in self.members])

    def classify_files(
        self,
        paths: Sequence[str | Path],
        onsets: Sequence[float | None] | None = None,
        offsets: Sequence[float | None] | None = None,
        *,
        on_error: str = "raise",
    ) -> np.ndarray:
        """Returns the combined probabilities ``(N, 3)`` of note files or events (as ``Classifier``)."""
        return self._combine([m.classify_files(paths, onsets, offsets, on_error=on_error) for m in self.members])


def _preprocessing(data_cfg: DataConfig) -> tuple[Any, ...]:
    """Returns the data settings that decide how a note becomes model windows."""
    return (data_cfg.sample_rate, data_cfg.normalize, data_cfg.min_duration, data_cfg.max_duration, data_cfg.long_notes)


def predict_files(clf: Classifier, paths_or_dirs: Sequence[str | Path]) -> pd.DataFrame:
    """Returns one row per WAV file (folders expand to their .wav files): ``path, label, confidence,
    prob_<label>..., error`` (``error`` empty, or why the file could not be classified; its probabilities NaN)."""
    files = wav_files(paths_or_dirs)
    windows, reasons = files_windows(files, None, None, clf.cfg.data)
    table = probability_table(clf.classify_windows(windows))
    table.insert(0, "path", [str(f) for f in files])
    table["error"] = reasons
    return table


def predict_recording(clf: Classifier, path: str | Path, **detect_kw: Any) -> pd.DataFrame:
    """Returns one row per detected note of a whole recording: ``onset_sec, offset_sec, label, confidence,
    prob_<label>..., error`` (see ``onsets.detect_notes`` for ``detect_kw``). Each note is then read and
    classified as an annotated event of that file would be (``file_windows``)."""
    from guitar_cls.onsets import detect_notes

    info = sf.info(str(path))
    wave, sr = read_segment(path, 0.0, info.duration)
    notes = detect_notes(wave, sr, **detect_kw)
    onsets, offsets = [a for a, _ in notes], [b for _, b in notes]
    windows, reasons = files_windows([path] * len(notes), onsets, offsets, clf.cfg.data)
    table = probability_table(clf.classify_windows(windows))
    table.insert(0, "offset_sec", [round(b, 4) for b in offsets])
    table.insert(0, "onset_sec", [round(a, 4) for a in onsets])
    table["error"] = reasons
    return table


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
