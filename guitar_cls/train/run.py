"""Driver side of a training run: resolve data, split, featurize once, start Ray, train, test.

Used by ``jobs/train.py`` and (for the data part) by the sweep driver.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from guitar_cls.config import Config
from guitar_cls.data.pipeline import CacheResult, cache_dataset, metadata_fingerprint
from guitar_cls.data.schema import MetadataError, read_metadata, validate_metadata
from guitar_cls.data.source import resolve_data
from guitar_cls.data.splits import make_splits, save_splits
from guitar_cls.train.checkpoint import BEST, load_model
from guitar_cls.train.loop import SnippetSet, predict_proba
from guitar_cls.train.metrics import classification_metrics
from guitar_cls.train.ray_train import make_trainer, split_sets

log = logging.getLogger(__name__)


def absolute_paths(cfg: Config) -> Config:
    """Returns ``cfg`` with output, cache, storage and demo paths made absolute (Ray jobs and trials chdir)."""
    out = Path(cfg.logging.output_dir).expanduser().resolve()
    storage = cfg.logging.storage_path or os.environ.get("GUITAR_CLS_STORAGE") or str(out / "ray_results")
    if "://" not in storage:
        storage = str(Path(storage).expanduser().resolve())
    data = dataclasses.replace(
        cfg.data,
        cache_dir=str(Path(cfg.data.cache_dir).expanduser().resolve()),
        demo_dir=str(Path(cfg.data.demo_dir).expanduser().resolve()),
        metadata=str(Path(cfg.data.metadata).expanduser().resolve()) if cfg.data.metadata else None,
        audio_root=str(Path(cfg.data.audio_root).expanduser().resolve()) if cfg.data.audio_root else None,
    )
    logging_cfg = dataclasses.replace(cfg.logging, output_dir=str(out), storage_path=storage)
    return dataclasses.replace(cfg, data=data, logging=logging_cfg)


@dataclass
class PreparedData:
    """Validated metadata, its split assignment and the featurization cache."""

    metadata: pd.DataFrame
    metadata_path: Path
    audio_root: Path
    splits: pd.Series  # "train" | "val" | "test" per metadata row
    cache: CacheResult
    fingerprint: str

    def rows(self, split: str) -> list[int]:
        """Returns the metadata rows of ``split`` that made it through featurization (quarantine excluded)."""
        bad = set(self.cache.quarantine["row"].tolist()) if len(self.cache.quarantine) else set()
        return [int(r) for r in self.splits.index[self.splits == split] if r not in bad]

    def loop_rows(self) -> dict[str, list[int]]:
        return {name: self.rows(name) for name in ("train", "val", "test")}

    def snippet_set(self, split: str) -> SnippetSet:
        return split_sets(str(self.cache.path), {split: self.rows(split)})[split]


def prepare_data(cfg: Config, out_dir: Path) -> PreparedData:
    """Returns the validated, split and featurized data of ``cfg`` (demo data when none is configured).

    Raises:
        MetadataError: the table has bad rows; the message lists them by row.
    """
    metadata_path, audio_root = resolve_data(cfg.data)
    df = read_metadata(metadata_path)
    problems = validate_metadata(df, audio_root)
    if problems:
        lines = "\n".join(f"  row {p.row}: {p.column}: {p.reason}" for p in problems[:30])
        more = f"\n  … and {len(problems) - 30} more" if len(problems) > 30 else ""
        raise MetadataError(f"{metadata_path}: {len(problems)} bad rows (run jobs/check_data.py):\n{lines}{more}")
    s = cfg.splits
    splits = make_splits(df, (s.train, s.val, s.test), seed=s.seed, group_col=s.group_by)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_splits(df, splits, out_dir / "splits.csv")
    cache = cache_dataset(df, audio_root, cfg.data)
    if len(cache.quarantine):
        log.warning("%d rows quarantined (see %s)", len(cache.quarantine), Path(cache.path) / "quarantine.csv")
    counts = {name: int((splits == name).sum()) for name in ("train", "val", "test")}
    log.info(
        "data: %s (%d rows, splits %s), cache %s (%s)",
        metadata_path,
        len(df),
        counts,
        cache.path,
        "hit" if cache.hit else "built",
    )
    return PreparedData(df, Path(metadata_path), Path(audio_root), splits, cache, metadata_fingerprint(df))


def init_ray() -> None:
    """Joins the cluster named by RAY_ADDRESS, or starts a local Ray with the dashboard (ASHA clean-up needs it)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)


def test_metrics(checkpoint: Path, data: SnippetSet) -> dict[str, Any]:
    """Returns the metrics of the checkpoint's model on ``data`` (predicted in this process, on CPU)."""
    model, frontend, cfg = load_model(checkpoint)
    probs = predict_proba(model, frontend, data, batch_size=cfg.training.batch_size)
    return classification_metrics(data.labels, probs)


def train(cfg: Config, name: str | None = None, extra_loop_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains one configuration with Ray Train and returns test metrics plus the best checkpoint path."""
    cfg = absolute_paths(cfg)
    name = name or time.strftime("train-%Y%m%d-%H%M%S")
    out_dir = Path(cfg.logging.output_dir) / "runs" / name
    init_ray()
    data = prepare_data(cfg, out_dir)
    cpus = ray.available_resources().get("CPU", 1)
    loop_config = {
        "cfg": cfg.to_dict(),
        "cache_path": str(data.cache.path),
        "rows": data.loop_rows(),
        **(extra_loop_config or {}),
    }
    trainer = make_trainer(
        cfg,
        loop_config,
        name=name,
        storage_path=cfg.logging.storage_path,
        cpus_per_worker=max(1.0, cpus // cfg.training.num_workers),
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    if result.checkpoint is None:
        raise RuntimeError(f"training {name} reported no checkpoint")
    with result.checkpoint.as_directory() as d:
        ckpt_dir = out_dir / "checkpoint"
        shutil.copytree(d, ckpt_dir, dirs_exist_ok=True)
    best = ckpt_dir / BEST
    metrics = test_metrics(best, data.snippet_set("test"))
    summary = {
        "name": name,
        "checkpoint": str(best),
        "train_wall_s": round(wall, 1),
        "epochs_run": int(result.metrics.get("epoch", -1)) + 1,
        "epochs_reported": [int(e) for e in result.metrics_dataframe["epoch"]],
        "start_epoch": int(result.metrics.get("start_epoch", 0)),
        "best_val_balanced_accuracy": float(result.metrics.get("best/val/balanced_accuracy", float("nan"))),
        "test": metrics,
    }
    (out_dir / "test_metrics.json").write_text(json.dumps(summary, indent=2))
    log.info("test balanced accuracy %.4f  (checkpoint %s)", metrics["balanced_accuracy"], best)
    return summary


__all__ = ["PreparedData", "absolute_paths", "init_ray", "prepare_data", "test_metrics", "train"]
