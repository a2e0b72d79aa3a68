"""The MLflow pyfunc model: raw audio in (WAV paths or sample arrays), class probabilities out.

The model folder carries the checkpoint (artifact ``checkpoint``), the run's ``splits.csv`` when there is one
(artifact ``splits``) and a copy of the ``guitar_cls`` package (``code_paths``), so it loads and serves where
guitar_cls is not installed; preprocessing runs inside the model (``predict.Classifier``). ``download_checkpoint``
finds the checkpoint again in a downloaded model (``predict.Classifier.load`` of a ``models:/`` or ``runs:/`` URI).
An ensemble of a sweep's trials (``GuitarNoteEnsemble``, ``log_ensemble_model``) carries its members' checkpoints
(``member_<i>``) and their rule and weights (``ENSEMBLE_ARTIFACT``) instead, with the same input and output; it loads
through ``mlflow.pyfunc.load_model`` only (``Classifier.load`` takes one checkpoint).

Input: a DataFrame with, per row, either ``path`` (a WAV file on the serving machine; optional ``onset_sec`` and
``offset_sec`` pick one event of a recording) or ``audio`` (list of float samples) and ``sample_rate``. Output: a
DataFrame with ``prob_harmonic, prob_dead_note, prob_general_note, label`` in input order.

What a request may ask of the server is limited (``RequestError``, whose message is safe to return to a client: it
never echoes file contents or system errors):

- ``path`` rows are refused unless the operator names an allowed folder: the model config's ``audio_root`` (set when
  logging, at ``mlflow.pyfunc.load_model(..., model_config=...)`` or through ``MLFLOW_PYFUNC_INFERENCE_CONFIG``),
  else the environment variable ``GUITAR_CLS_AUDIO_ROOT``. A path is relative to that folder (or absolute inside it);
  it must resolve, symlinks followed, to a regular file inside it: no ``..`` or symlink escape, no FIFOs or devices.
- ``sample_rate`` must be an integer in ``[4000, 192000]`` Hz (resampling cost is bounded, see ``data.audio``).
- A row's audio may last at most ``max_audio_sec`` seconds (model config or ``GUITAR_CLS_MAX_AUDIO_SEC``, default
  60): the samples sent, or what would be read from the file.

``Classifier`` in the same process (``predict.py``, ``evaluate.py``) reads any path it is given: the limits are for
the served model only.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import soundfile as sf
import yaml
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, Array, ColSpec, Schema

from guitar_cls.config import DataConfig
from guitar_cls.data.audio import AudioError, check_sample_rate, read_span
from guitar_cls.data.schema import LABELS
from guitar_cls.predict import PROB_COLUMNS, Classifier, file_windows, wave_windows
from guitar_cls.train.checkpoint import checkpoint_file, find_splits

log = logging.getLogger(__name__)

# The serving stack, pinned to what is installed (distribution names as pip knows them).
REQUIREMENTS: tuple[str, ...] = (
    "mlflow",
    "torch",
    "torchaudio",
    "torchvision",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "soundfile",
    "librosa",
    "pyyaml",
    "cloudpickle",
)

# Numbers are AnyType: MLflow refuses int64 -> double (JSON ``22050``) and NaN-float -> long (a sample_rate column
# with empty cells in a frame that mixes path rows and audio rows) alike; ``predict`` converts them.
INPUT_SCHEMA = Schema(
    [
        ColSpec("string", "path", required=False),
        ColSpec(AnyType(), "onset_sec", required=False),
        ColSpec(AnyType(), "offset_sec", required=False),
        ColSpec(Array("double"), "audio", required=False),
        ColSpec(AnyType(), "sample_rate", required=False),
    ]
)
OUTPUT_SCHEMA = Schema([*(ColSpec("double", c) for c in PROB_COLUMNS), ColSpec("string", "label")])


CHECKPOINT_ARTIFACT = "checkpoint"  # the artifact key of the checkpoint file
SPLITS_ARTIFACT = "splits"  # the artifact key of the run's splits.csv
ENSEMBLE_ARTIFACT = "ensemble"  # an ensemble's rule and member weights (JSON); members are ``member_<i>``
ENSEMBLE_FILE = "ensemble_members.json"  # the file name of that artifact
AUDIO_ROOT_ENV = "GUITAR_CLS_AUDIO_ROOT"
MAX_AUDIO_SEC_ENV = "GUITAR_CLS_MAX_AUDIO_SEC"
DEFAULT_MAX_AUDIO_SEC = 60.0


class RequestError(ValueError):
    """A request row the served model refuses; the message names the row and is safe to send back to the client."""


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
    if next(model_dir.rglob(ENSEMBLE_FILE), None) is not None:
        raise FileNotFoundError(
            f"{model_dir}: an ensemble of {len(found)} checkpoints, not one: load it with mlflow.pyfunc.load_model"
        )
    if len(found) != 1:
        raise FileNotFoundError(f"{model_dir}: expected one guitar_cls checkpoint in the model, found {found}")
    return found[0]


def find_ensemble(model_dir: str | Path) -> tuple[str, list[tuple[Path, float]]] | None:
    """Returns ``(rule, [(member checkpoint, weight), ...])`` of a downloaded ensemble pyfunc model folder (per its
    MLmodel and ``ENSEMBLE_ARTIFACT``), or None when the folder holds a single-checkpoint model."""
    for mlmodel in sorted(Path(model_dir).rglob("MLmodel")):
        flavor = (yaml.safe_load(mlmodel.read_text()) or {}).get("flavors", {}).get("python_function", {})
        artifacts = flavor.get("artifacts") or {}
        if ENSEMBLE_ARTIFACT not in artifacts:
            continue
        paths = {k: mlmodel.parent / (v["path"] if isinstance(v, dict) else v) for k, v in artifacts.items()}
        spec = json.loads(paths[ENSEMBLE_ARTIFACT].read_text())
        return str(spec["rule"]), [(paths[m["artifact"]], float(m["weight"])) for m in spec["members"]]
    return None


def download_checkpoint(model_uri: str, dst: Path) -> Path:
    """Returns the checkpoint file of the MLflow model at ``model_uri`` after downloading the model into ``dst``."""
    return find_model_checkpoint(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))


def _missing(value: Any) -> bool:
    """Returns whether a cell is empty (None / NaN / pd.NA); arrays never are."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, np.ndarray)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


class GuitarNoteModel(mlflow.pyfunc.PythonModel):
    """Pyfunc wrapper of ``predict.Classifier``; see the module docstring for the input and output frames and for
    the limits on requests."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.classifier = Classifier.load(context.artifacts[CHECKPOINT_ARTIFACT])
        self._configure(context)

    def _configure(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Reads the request limits (allowed audio folder, seconds per row) from the model config or environment."""
        config = dict(getattr(context, "model_config", None) or {})
        self.audio_root = allowed_root(config.get("audio_root") or os.environ.get(AUDIO_ROOT_ENV))
        limit = config.get("max_audio_sec") or os.environ.get(MAX_AUDIO_SEC_ENV) or DEFAULT_MAX_AUDIO_SEC
        self.max_audio_sec = float(limit)
        if not (math.isfinite(self.max_audio_sec) and self.max_audio_sec > 0):
            raise ValueError(f"max_audio_sec / {MAX_AUDIO_SEC_ENV}: expected a positive number, got {limit!r}")

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Returns ``prob_<label>...`` and ``label`` per input row; raises RequestError naming the first bad row."""
        return probability_frame(self._classify(pd.DataFrame(model_input), self.classifier))

    def _classify(self, model_input: pd.DataFrame, classifier: Classifier) -> np.ndarray:
        """Returns ``classifier``'s probabilities ``(n_rows, n_classes)``, each row read with its data settings."""
        frame = model_input.reset_index(drop=True)
        n = len(frame)

        def column(name: str) -> list[Any]:
            return list(frame[name]) if name in frame.columns else [None] * n

        paths, onsets, offsets = column("path"), column("onset_sec"), column("offset_sec")
        audio, rates = column("audio"), column("sample_rate")
        data_cfg = classifier.cfg.data
        windows = []
        for i in range(n):
            if not _missing(audio[i]):
                windows.append(self._wave_windows(i, audio[i], rates[i], data_cfg))
            elif not _missing(paths[i]):
                windows.append(self._file_windows(i, paths[i], onsets[i], offsets[i], data_cfg))
            else:
                raise RequestError(f"row {i}: needs either 'path' or 'audio' + 'sample_rate'")
        return np.asarray(classifier.classify_windows(windows), dtype=np.float64).reshape(n, len(LABELS))

    def _wave_windows(
        self, i: int, samples: Any, rate: Any, data_cfg: DataConfig
    ) -> tuple[list[np.ndarray], list[int]]:
        if _missing(rate):
            raise RequestError(f"row {i}: 'audio' needs a 'sample_rate'")
        sr = _sample_rate(i, rate)
        if not isinstance(samples, (list, tuple, np.ndarray)):
            raise RequestError(f"row {i}: 'audio' must be a list of numbers")
        if len(samples) > self.max_audio_sec * sr:
            raise RequestError(
                f"row {i}: {len(samples) / sr:.1f} s of audio; the limit is {self.max_audio_sec:g} s per row"
            )
        try:
            wave = np.asarray(samples, dtype=np.float32)
        except (TypeError, ValueError):
            raise RequestError(f"row {i}: 'audio' must be a list of numbers") from None
        try:
            return wave_windows(wave, sr, data_cfg)
        except AudioError as e:
            raise RequestError(f"row {i}: {e.reason}") from None

    def _file_windows(
        self, i: int, raw: Any, onset: Any, offset: Any, data_cfg: DataConfig
    ) -> tuple[list[np.ndarray], list[int]]:
        path = resolve_request_path(i, raw, self.audio_root)
        event = not (_missing(onset) or _missing(offset))
        try:
            span = float(offset) - float(onset) if event else sf.info(str(path)).duration
        except (TypeError, ValueError):
            raise RequestError(f"row {i}: 'onset_sec' and 'offset_sec' must be numbers") from None
        except (RuntimeError, OSError):
            raise RequestError(f"row {i}: unreadable audio file") from None
        _, _, max_read = read_span(0.0, span, data_cfg)  # None: the whole span is read
        seconds = span if max_read is None else min(span, max_read)
        if seconds > self.max_audio_sec:
            raise RequestError(f"row {i}: {seconds:.1f} s of audio; the limit is {self.max_audio_sec:g} s per row")
        try:
            return file_windows(path, float(onset) if event else None, float(offset) if event else None, data_cfg)
        except AudioError as e:
            # reasons that carry a library's or the system's message are cut to their first words
            raise RequestError(f"row {i}: {e.reason.split(':')[0]}") from None
        except (RuntimeError, OSError, ValueError):
            raise RequestError(f"row {i}: unreadable audio file") from None


class GuitarNoteEnsemble(GuitarNoteModel):
    """Pyfunc model of several checkpoints whose probabilities are combined (``ensemble.combine``): the artifacts are
    the members (``member_<i>``) and ``ENSEMBLE_ARTIFACT``, a JSON file with the rule and each member's weight. Same
    input, output and request limits as ``GuitarNoteModel``; each member reads the audio with its own data settings."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        spec = json.loads(Path(context.artifacts[ENSEMBLE_ARTIFACT]).read_text())
        self.rule = str(spec["rule"])
        self.members = [Classifier.load(context.artifacts[m["artifact"]]) for m in spec["members"]]
        self.weights = np.asarray([float(m["weight"]) for m in spec["members"]])
        self._configure(context)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Returns the combined ``prob_<label>...`` and ``label`` per input row (RequestError as GuitarNoteModel)."""
        from guitar_cls.ensemble import combine

        frame = pd.DataFrame(model_input)
        probs = np.stack([self._classify(frame, member) for member in self.members])  # (M, N, C)
        return probability_frame(combine(probs, self.weights, self.rule))


def probability_frame(probs: np.ndarray) -> pd.DataFrame:
    """Returns the served output of probabilities ``(N, C)``: ``prob_<label>...`` and the arg-max ``label``."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(LABELS))
    out = pd.DataFrame(probs, columns=list(PROB_COLUMNS))
    out["label"] = [LABELS[j] for j in probs.argmax(axis=1)]
    return out


def _sample_rate(i: int, rate: Any) -> int:
    """Returns a request's sample rate as an int; RequestError unless it is a whole number in the allowed range."""
    try:
        value = float(rate)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value != int(value):
        raise RequestError(f"row {i}: 'sample_rate' must be a whole number of Hz")
    try:
        check_sample_rate(int(value))
    except AudioError as e:
        raise RequestError(f"row {i}: {e.reason}") from None
    return int(value)


def allowed_root(root: str | Path | None) -> Path | None:
    """Returns the resolved folder under which request paths may be read, or None (paths refused) when unset.

    Raises:
        ValueError: the configured root is not an existing folder (an operator error, at model load).
    """
    if root is None or str(root).strip() == "":
        return None
    path = Path(root).expanduser()
    if not path.is_dir():
        raise ValueError(f"audio_root / {AUDIO_ROOT_ENV}: {path} is not an existing folder")
    return path.resolve()


def resolve_request_path(i: int, raw: Any, root: Path | None) -> Path:
    """Returns the resolved path of a request's ``path`` if it names a regular file inside ``root``.

    Nothing outside ``root`` is touched: a path that leaves it by ``..`` or is absolute elsewhere is refused before
    any file-system call, a symlink escaping it after resolving (so neither reveals whether a file exists).

    Raises:
        RequestError: no root is configured, or the path is outside it, missing or not a regular file.
    """
    if root is None:
        raise RequestError(
            f"row {i}: file paths are not accepted by this server (its operator can allow a folder with "
            f"{AUDIO_ROOT_ENV}); send 'audio' + 'sample_rate' instead"
        )
    text = str(raw)
    if not text.strip() or "\x00" in text:
        raise RequestError(f"row {i}: 'path' is not a valid path")
    candidate = Path(text) if os.path.isabs(text) else root / text
    outside = RequestError(f"row {i}: 'path' is outside the allowed audio folder")
    if not Path(os.path.normpath(candidate)).is_relative_to(root):
        raise outside
    try:
        resolved = candidate.resolve()  # follows symlinks; a missing file still resolves
    except (OSError, RuntimeError):
        raise RequestError(f"row {i}: 'path' cannot be resolved") from None
    if not resolved.is_relative_to(root):
        raise outside
    try:
        mode = os.stat(resolved).st_mode
    except OSError:
        raise RequestError(f"row {i}: no such audio file in the allowed folder") from None
    if not stat.S_ISREG(mode):  # a FIFO would block the worker; folders and devices are no audio either
        raise RequestError(f"row {i}: 'path' is not a regular file")
    return resolved


def pip_requirements() -> list[str]:
    """Returns ``name==version`` for the serving stack as installed (local version labels like ``+cpu`` dropped)."""
    reqs = []
    for name in REQUIREMENTS:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            log.warning("pip requirements: %s is not installed, left out", name)
            continue
        reqs.append(f"{name}=={version.split('+')[0]}")
    return reqs


def signature() -> ModelSignature:
    """Returns the explicit signature: optional ``path``/``onset_sec``/``offset_sec``/``audio``/``sample_rate``."""
    return ModelSignature(inputs=INPUT_SCHEMA, outputs=OUTPUT_SCHEMA)


def _package_copy(dst: Path) -> Path:
    """Returns a copy of the guitar_cls package under ``dst`` without caches (what ``code_paths`` ships)."""
    src = Path(__file__).resolve().parent
    return Path(shutil.copytree(src, dst / src.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")))


def log_pyfunc_model(
    checkpoint_path: str | Path,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    input_example: pd.DataFrame | None = None,
    splits_csv: str | Path | None = None,
    audio_root: str | Path | None = None,
    max_audio_sec: float = DEFAULT_MAX_AUDIO_SEC,
) -> ModelInfo:
    """Returns the ModelInfo of the checkpoint logged as a ``GuitarNoteModel`` pyfunc model (into the active run,
    or one MLflow starts), registered under ``registered_model_name`` when given.

    ``checkpoint_path`` is a checkpoint file or a run folder (``best.pt`` preferred). The run's splits
    (``splits_csv``, default: a ``splits.csv`` beside the checkpoint, see ``predict.find_splits``) are logged with
    it, so that ``evaluate --split test`` finds the test set.

    ``audio_root`` and ``max_audio_sec`` become the model config (see the module docstring): without a root the
    served model accepts no ``path`` unless ``GUITAR_CLS_AUDIO_ROOT`` is set where it runs. Both keys are always
    logged, so ``load_model(..., model_config={"audio_root": ...})`` can set them later.
    """
    ckpt = checkpoint_file(checkpoint_path)
    artifacts = {CHECKPOINT_ARTIFACT: str(ckpt)}
    splits = Path(splits_csv) if splits_csv is not None else find_splits(ckpt)
    if splits is not None:
        artifacts[SPLITS_ARTIFACT] = str(splits)
    with tempfile.TemporaryDirectory(prefix="guitar_cls_code_") as tmp:
        return _log(GuitarNoteModel(), artifacts, Path(tmp), name, registered_model_name, input_example,
                    audio_root, max_audio_sec)  # fmt: skip


def _log(
    python_model: mlflow.pyfunc.PythonModel,
    artifacts: dict[str, str],
    tmp: Path,
    name: str,
    registered_model_name: str | None,
    input_example: Any,
    audio_root: str | Path | None,
    max_audio_sec: float,
) -> ModelInfo:
    """Logs ``python_model`` with its artifacts, this package's code (copied under ``tmp``), our signature and
    requirements, and the serving limits as model config."""
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=python_model,
        artifacts=artifacts,
        code_paths=[str(_package_copy(tmp))],
        signature=signature(),
        input_example=input_example,
        pip_requirements=pip_requirements(),
        registered_model_name=registered_model_name,
        model_config={"audio_root": str(audio_root or ""), "max_audio_sec": float(max_audio_sec)},
    )


def log_ensemble_model(
    checkpoints: list[str | Path],
    weights: list[float],
    rule: str,
    *,
    name: str = "model",
    registered_model_name: str | None = None,
    input_example: pd.DataFrame | None = None,
    splits_csv: str | Path | None = None,
    audio_root: str | Path | None = None,
    max_audio_sec: float = DEFAULT_MAX_AUDIO_SEC,
    members: list[dict[str, Any]] | None = None,
) -> ModelInfo:
    """Returns the ModelInfo of the checkpoints logged as one ``GuitarNoteEnsemble`` pyfunc model (into the active
    run), registered under ``registered_model_name`` when given; arguments as ``log_pyfunc_model``.

    Args:
        checkpoints: the members' checkpoint files or run folders; each becomes artifact ``member_<i>``.
        weights: one per member (the combination normalises them).
        rule: ``mean`` (of probabilities) or ``logit`` (of log-probabilities), see ``ensemble.combine``.
        members: extra facts per member kept in the JSON (e.g. trial ids).
    """
    if len(checkpoints) != len(weights) or not checkpoints:
        raise ValueError(f"{len(checkpoints)} checkpoints but {len(weights)} weights")
    artifacts = {f"member_{i}": str(checkpoint_file(c)) for i, c in enumerate(checkpoints)}
    extra = members or [{} for _ in checkpoints]
    spec = {
        "rule": rule,
        "members": [{**info, "artifact": key, "weight": float(w)} for (key, w, info) in zip(artifacts, weights, extra)],
    }
    if splits_csv is not None:
        artifacts[SPLITS_ARTIFACT] = str(splits_csv)
    with tempfile.TemporaryDirectory(prefix="guitar_cls_code_") as tmp:
        spec_path = Path(tmp) / ENSEMBLE_FILE
        spec_path.write_text(json.dumps(spec, indent=2))
        artifacts[ENSEMBLE_ARTIFACT] = str(spec_path)
        return _log(GuitarNoteEnsemble(), artifacts, Path(tmp), name, registered_model_name, input_example,
                    audio_root, max_audio_sec)  # fmt: skip


def score_model(model_uri: str, events: pd.DataFrame, y_true: np.ndarray, metric: str = "balanced_accuracy") -> float:
    """Returns ``metric`` (a key of ``classification_metrics``) of the pyfunc model at ``model_uri`` on ``events``
    (``path`` absolute, ``onset_sec``, ``offset_sec``: raw WAV paths, as a client sends them) against ``y_true``.

    The served model reads files only under the folder its operator allows: here the one holding these files.
    """
    from guitar_cls.train.metrics import classification_metrics

    folders = [os.path.dirname(os.path.realpath(f)) for f in events["path"]]
    config = {"audio_root": os.path.commonpath(folders)} if folders else {}
    pred = mlflow.pyfunc.load_model(model_uri, model_config=config).predict(events)
    return float(classification_metrics(y_true, pred[list(PROB_COLUMNS)].to_numpy(float))[metric])
