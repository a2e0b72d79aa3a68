"""The MLflow pyfunc model: raw audio in (WAV paths or sample arrays), class probabilities out.

The model folder carries the checkpoint (artifact ``checkpoint``), the run's ``splits.csv`` when there is one
(artifact ``splits``) and a copy of the ``guitar_cls`` package (``code_paths``), so it loads and serves where
guitar_cls is not installed; preprocessing runs inside the model (``predict.Classifier``).

Input: a DataFrame with, per row, either ``path`` (a WAV file on the serving machine; optional ``onset_sec`` and
``offset_sec`` pick one event of a recording) or ``audio`` (list of float samples) and ``sample_rate``. Output: a
DataFrame with ``prob_harmonic, prob_dead_note, prob_general_note, label`` in input order.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types.schema import AnyType, Array, ColSpec, Schema

from guitar_cls.data.schema import LABELS
from guitar_cls.predict import CHECKPOINT_ARTIFACT, PROB_COLUMNS, SPLITS_ARTIFACT, checkpoint_file, find_splits

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
    """Pyfunc wrapper of ``predict.Classifier``; see the module docstring for the input and output frames."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from guitar_cls.predict import Classifier

        self.classifier = Classifier.load(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Returns ``prob_<label>...`` and ``label`` per input row (rows of unusable audio raise ValueError)."""
        frame = pd.DataFrame(model_input).reset_index(drop=True)
        n = len(frame)

        def column(name: str) -> list[Any]:
            return list(frame[name]) if name in frame.columns else [None] * n

        paths, onsets, offsets = column("path"), column("onset_sec"), column("offset_sec")
        audio, rates = column("audio"), column("sample_rate")
        probs = np.zeros((n, len(LABELS)), dtype=np.float64)
        wave_rows = [i for i in range(n) if not _missing(audio[i])]
        file_rows = [i for i in range(n) if _missing(audio[i])]
        for i in wave_rows:
            if _missing(rates[i]):
                raise ValueError(f"row {i}: 'audio' needs a 'sample_rate'")
        for i in file_rows:
            if _missing(paths[i]):
                raise ValueError(f"row {i}: needs either 'path' or 'audio' + 'sample_rate'")
        if wave_rows:
            waves = [(np.asarray(audio[i], dtype=np.float32), int(rates[i])) for i in wave_rows]
            probs[wave_rows] = self.classifier.classify_waves(waves)
        if file_rows:
            probs[file_rows] = self.classifier.classify_files(
                [str(paths[i]) for i in file_rows],
                [np.nan if _missing(onsets[i]) else float(onsets[i]) for i in file_rows],
                [np.nan if _missing(offsets[i]) else float(offsets[i]) for i in file_rows],
            )
        out = pd.DataFrame(probs, columns=list(PROB_COLUMNS))
        out["label"] = [LABELS[j] for j in probs.argmax(axis=1)]
        return out


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
) -> ModelInfo:
    """Returns the ModelInfo of the checkpoint logged as a ``GuitarNoteModel`` pyfunc model (into the active run,
    or one MLflow starts), registered under ``registered_model_name`` when given.

    ``checkpoint_path`` is a checkpoint file or a run folder (``best.pt`` preferred). The run's splits
    (``splits_csv``, default: a ``splits.csv`` beside the checkpoint, see ``predict.find_splits``) are logged with
    it, so that ``evaluate --split test`` finds the test set.
    """
    ckpt = checkpoint_file(checkpoint_path)
    artifacts = {CHECKPOINT_ARTIFACT: str(ckpt)}
    splits = Path(splits_csv) if splits_csv is not None else find_splits(ckpt)
    if splits is not None:
        artifacts[SPLITS_ARTIFACT] = str(splits)
    with tempfile.TemporaryDirectory(prefix="guitar_cls_code_") as tmp:
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=GuitarNoteModel(),
            artifacts=artifacts,
            code_paths=[str(_package_copy(Path(tmp)))],
            signature=signature(),
            input_example=input_example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
        )
