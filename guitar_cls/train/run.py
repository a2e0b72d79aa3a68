"""Driver side of a training run: resolve data, split, featurize once, start Ray (``pipeline.init_ray``), train,
test.

Used by ``jobs/train.py`` and (for the data part) by the sweep driver.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from guitar_cls.config import Config
from guitar_cls.data.pipeline import CacheResult, cache_dataset, init_ray, metadata_fingerprint
from guitar_cls.data.schema import MetadataError, write_metadata
from guitar_cls.data.source import DEMO, DataTable, TableProblem, load_tables, resolve_tables
from guitar_cls.data.splits import make_splits, save_splits
from guitar_cls.inference import predict_proba
from guitar_cls.train.checkpoint import BEST, SPLITS_FILE, load_model
from guitar_cls.train.loop import METRIC, SnippetSet, best_key
from guitar_cls.train.metrics import classification_metrics
from guitar_cls.train.ray_train import make_trainer, split_sets
from guitar_cls.train.resources import WORKER_NODES, node_list, plan_resources

log = logging.getLogger(__name__)

COMBINED_METADATA = "metadata.csv"  # several tables, combined, beside splits.csv: evaluate the run's splits with it


def _absolute_entries(value: str | list[str | None] | None, keep: tuple[str, ...] = ()) -> str | list | None:
    """Returns a path (or list of paths) made absolute and resolved; None entries and ``keep`` names unchanged."""
    if isinstance(value, list):
        return [_absolute_entries(v, keep) for v in value]
    if value is None or value in keep:
        return value
    return str(Path(value).expanduser().resolve())


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
        metadata=_absolute_entries(cfg.data.metadata, keep=(DEMO,)),
        audio_root=_absolute_entries(cfg.data.audio_root),
    )
    logging_cfg = dataclasses.replace(cfg.logging, output_dir=str(out), storage_path=storage)
    return dataclasses.replace(cfg, data=data, logging=logging_cfg)


@dataclass
class PreparedData:
    """Validated metadata, its split assignment and the featurization cache.

    With several tables ``metadata`` is their combination (``source.combine_tables``), written to
    ``metadata_path`` beside splits.csv, and ``audio_root`` the folder its ``source_audio`` paths are relative to.
    """

    metadata: pd.DataFrame
    metadata_path: Path
    audio_root: Path
    splits: pd.Series  # "train" | "val" | "test" per metadata row
    cache: CacheResult
    fingerprint: str
    tables: tuple[DataTable, ...] = ()  # the configured tables the rows come from

    def describe(self) -> dict[str, Any]:
        """Returns the data's paths for a run summary: metadata, audio_root and every source table."""
        return {
            "metadata": str(self.metadata_path),
            "audio_root": str(self.audio_root),
            "tables": [{"metadata": str(t.metadata), "audio_root": str(t.audio_root)} for t in self.tables],
        }

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

    Several tables are combined (``source.load_tables``) and split together, grouped by recording across all of
    them; the combined table is written to ``out_dir/metadata.csv`` beside ``splits.csv``.

    Raises:
        MetadataError: a table has bad rows; the message lists them by table and row.
    """
    tables = resolve_tables(cfg.data)
    data = load_tables(tables)
    if data.problems:
        raise MetadataError(_problem_report(tables, data.problems))
    df, audio_root = data.metadata, data.audio_root
    s = cfg.splits
    splits = make_splits(df, (s.train, s.val, s.test), seed=s.seed, group_col=s.group_by)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_splits(df, splits, out_dir / SPLITS_FILE)
    metadata_path = tables[0].metadata if len(tables) == 1 else _write_atomically(df, out_dir / COMBINED_METADATA)
    cache = cache_dataset(df, audio_root, cfg.data)
    if len(cache.quarantine):
        log.warning("%d rows quarantined (see %s)", len(cache.quarantine), Path(cache.path) / "quarantine.csv")
    counts = {name: int((splits == name).sum()) for name in ("train", "val", "test")}
    log.info(
        "data: %s (%d rows, splits %s), cache %s (%s)",
        metadata_path if len(tables) == 1 else f"{len(tables)} tables combined in {metadata_path}",
        len(df),
        counts,
        cache.path,
        "hit" if cache.hit else "built",
    )
    return PreparedData(df, Path(metadata_path), Path(audio_root), splits, cache, metadata_fingerprint(df), tables)


def _problem_report(tables: list[DataTable], problems: list[TableProblem], limit: int = 30) -> str:
    """Returns the MetadataError message: the bad rows by table (one table: by row, under the file's name)."""
    shown = problems[:limit]
    more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
    if len(tables) == 1:
        lines = "\n".join(f"  row {p.problem.row}: {p.problem.column}: {p.problem.reason}" for p in shown)
        return f"{tables[0].metadata}: {len(problems)} bad rows (run jobs/check_data.py):\n{lines}{more}"
    lines = "\n".join(f"  {p.table} row {p.problem.row}: {p.problem.column}: {p.problem.reason}" for p in shown)
    n_bad = len({p.table for p in problems})
    return (
        f"{len(problems)} bad rows in {n_bad} of {len(tables)} tables (run jobs/check_data.py on each):\n{lines}{more}"
    )


def _write_atomically(df: pd.DataFrame, path: Path) -> Path:
    """Writes the metadata table to ``path`` through a temporary sibling (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    write_metadata(df, tmp)
    os.replace(tmp, path)
    return path


def test_metrics(checkpoint: Path | Sequence[Path], data: SnippetSet) -> dict[str, Any]:
    """Returns the metrics of the checkpoint's model on ``data`` (predicted in this process, on CPU); of several
    checkpoints, those of the mean of their probabilities (``ensemble.combine``, equal weights: a refit's seeds)."""
    probs = []
    for path in [checkpoint] if isinstance(checkpoint, (str, Path)) else checkpoint:
        model, frontend, cfg = load_model(path)
        probs.append(predict_proba(model, frontend, data, batch_size=cfg.training.batch_size))
    if len(probs) == 1:
        return classification_metrics(data.labels, probs[0])
    from guitar_cls.ensemble import combine

    return classification_metrics(data.labels, combine(np.stack(probs), np.ones(len(probs))))


def run_trainer(
    cfg: Config, data: PreparedData, name: str, out_dir: Path, loop_extra: dict[str, Any] | None = None
) -> tuple[Path, Any, float]:
    """Trains ``cfg`` on ``data``'s cache and splits with Ray Train (run ``name`` in the configured storage), copies
    its last checkpoint folder to ``out_dir/checkpoint`` and returns (the ``best.pt`` there, the Ray result, wall
    seconds). ``loop_extra``: more ``train_loop_per_worker`` settings (``metric``/``mode``)."""
    plan = plan_resources(cfg.training.num_workers)
    loop_config = {
        "cfg": cfg.to_dict(),
        "cache_path": str(data.cache.path),
        "rows": data.loop_rows(),
        **(loop_extra or {}),
    }
    trainer = make_trainer(
        cfg,
        loop_config,
        name=name,
        storage_path=cfg.logging.storage_path,
        cpus_per_worker=plan.cpus_per_worker,
        threads_per_worker=plan.threads_per_worker,
    )
    t0 = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - t0
    if result.checkpoint is None:
        raise RuntimeError(f"training {name} reported no checkpoint")
    with result.checkpoint.as_directory() as d:
        ckpt_dir = out_dir / "checkpoint"
        shutil.copytree(d, ckpt_dir, dirs_exist_ok=True)
    return ckpt_dir / BEST, result, wall


def train(cfg: Config, name: str | None = None, extra_loop_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Trains one configuration with Ray Train and returns test metrics plus the best checkpoint path."""
    cfg = absolute_paths(cfg)
    name = name or time.strftime("train-%Y%m%d-%H%M%S")
    out_dir = Path(cfg.logging.output_dir) / "runs" / name
    init_ray()
    data = prepare_data(cfg, out_dir)
    best, result, wall = run_trainer(cfg, data, name, out_dir, extra_loop_config)
    metrics = test_metrics(best, data.snippet_set("test"))
    summary = {
        "name": name,
        "checkpoint": str(best),
        "train_wall_s": round(wall, 1),
        "epochs_run": int(result.metrics.get("epoch", -1)) + 1,
        "epochs_reported": [int(e) for e in result.metrics_dataframe["epoch"]],
        "start_epoch": int(result.metrics.get("start_epoch", 0)),
        WORKER_NODES: node_list(result.metrics.get(WORKER_NODES)),
        "best_val_balanced_accuracy": float(result.metrics.get(best_key(METRIC), float("nan"))),
        **data.describe(),
        "test": metrics,
    }
    (out_dir / "test_metrics.json").write_text(json.dumps(summary, indent=2))
    log.info("test balanced accuracy %.4f  (checkpoint %s)", metrics["balanced_accuracy"], best)
    return summary


__all__ = ["PreparedData", "absolute_paths", "init_ray", "prepare_data", "run_trainer", "test_metrics", "train"]
