"""Where the data comes from: a configured metadata table, or the demo set generated on first use."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from guitar_cls.config import DataConfig
from guitar_cls.data.synth import make_demo_dataset

log = logging.getLogger(__name__)

DEMO_METADATA = "metadata.csv"


def _absolute(path: str | Path) -> Path:
    """Returns ``path`` made absolute against the current working directory (``~`` expanded)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def resolve_data(data_cfg: DataConfig) -> tuple[Path, Path]:
    """Returns the absolute (metadata path, audio root) of the configured data.

    With ``data.metadata`` set, the audio root is ``data.audio_root`` or the metadata file's folder. With it unset,
    the demo set under ``data.demo_dir`` is used and generated first when missing; generation writes to a temporary
    sibling folder that is renamed into place, so an interrupted run never leaves half a data set behind.

    Raises:
        FileNotFoundError: the configured metadata file does not exist.
    """
    if data_cfg.metadata is not None:
        metadata = _absolute(data_cfg.metadata)
        if not metadata.is_file():
            raise FileNotFoundError(f"data.metadata: {metadata} does not exist")
        root = _absolute(data_cfg.audio_root) if data_cfg.audio_root is not None else metadata.parent
        return metadata, root
    demo = _absolute(data_cfg.demo_dir)
    metadata = demo / DEMO_METADATA
    if not metadata.is_file():
        _generate_demo(demo, data_cfg.demo_recordings, data_cfg.demo_seed)
    root = _absolute(data_cfg.audio_root) if data_cfg.audio_root is not None else demo
    return metadata, root


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
            shutil.rmtree(demo)
        tmp.rename(demo)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
