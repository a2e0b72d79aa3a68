"""Ray Train V2 glue: the per-worker function (shared by ``jobs/train.py`` and every sweep trial) and the trainer.

Workers read their split from the shared featurization cache (``load_cache``), so nothing is featurized twice; the
cache folder and ``storage_path`` must be on storage every node sees when the cluster has several nodes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from guitar_cls.config import Config, config_from_dict
from guitar_cls.data.pipeline import load_cache
from guitar_cls.train.checkpoint import BEST, LATEST, save_checkpoint
from guitar_cls.train.loop import METRIC, SnippetSet, fit, pick_device
from guitar_cls.train.resources import WORKER_NODES

log = logging.getLogger(__name__)


def worker_nodes(world_size: int) -> list[str]:
    """Returns the Ray node id of every worker rank (gathered over the process group when there are several)."""
    node = ray.get_runtime_context().get_node_id()
    if world_size == 1:
        return [node]
    gathered: list[str | None] = [None] * world_size
    torch.distributed.all_gather_object(gathered, node)
    return [str(n) for n in gathered]


def split_sets(cache_path: str, rows: dict[str, list[int]]) -> dict[str, SnippetSet]:
    """Returns one SnippetSet per split name from the cache, selecting metadata ``rows`` of each split."""
    frame = load_cache(cache_path)
    out = {}
    for name, wanted in rows.items():
        part = frame[frame["row"].isin(np.asarray(wanted))].sort_values(["row", "window"])
        out[name] = SnippetSet.from_frame(part)
    return out


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: trains ``config["cfg"]`` with DDP, reporting metrics and a checkpoint every epoch.

    ``config`` keys: ``cfg`` (Config as dict), ``cache_path``, ``rows`` ({"train": [...], "val": [...]}),
    ``report_extra`` (constant metrics added to every report, beside ``WORKER_NODES``: the ranks' Ray node ids),
    ``metric``/``mode`` (what picks the best checkpoint and drives early stopping; default ``METRIC``, max),
    ``fail_marker`` (tests: a file path; when set and missing, the worker creates it and kills itself during epoch 1,
    to exercise recovery).
    """
    cfg: Config = config_from_dict(config["cfg"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(max(1, int(config.get("threads_per_worker", 1))))
    sets = split_sets(config["cache_path"], {k: config["rows"][k] for k in ("train", "val")})
    work = Path(tempfile.mkdtemp(prefix="guitar_cls_worker_"))
    best_local = work / BEST
    resume = None
    restored = ray.train.get_checkpoint()
    log.info("rank %d: checkpoint to resume from: %s", rank, restored)
    if restored is not None:
        with restored.as_directory() as d:
            resume = torch.load(Path(d) / LATEST, map_location="cpu", weights_only=True)
            if (Path(d) / BEST).exists():
                shutil.copy(Path(d) / BEST, best_local)
    extra = {**config.get("report_extra", {}), WORKER_NODES: ",".join(worker_nodes(ctx.get_world_size()))}
    fail_marker = config.get("fail_marker")

    def report(metrics: dict[str, float], latest: dict[str, Any], best: dict[str, Any] | None) -> None:
        if fail_marker and metrics["epoch"] >= 1 and not os.path.exists(fail_marker):
            # Dies in epoch 1 before reporting it, once the controller has committed epoch 0's checkpoint (the
            # call blocks until every in-flight report is processed).
            ray.train.get_all_reported_checkpoints(timeout_s=120)
            Path(fail_marker).touch()
            log.warning("fail_marker set: killing this worker in epoch %d", metrics["epoch"])
            os._exit(1)
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if rank == 0:
                save_checkpoint(latest, Path(d) / LATEST)
                if best is not None:
                    save_checkpoint(best, best_local)
                if best_local.exists():
                    shutil.copy(best_local, Path(d) / BEST)
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report({**metrics, **extra}, checkpoint=checkpoint)

    device = pick_device(cfg.training)
    fit(
        cfg,
        sets["train"],
        sets["val"],
        report=report,
        resume=resume,
        wrap_model=ray.train.torch.prepare_model if ctx.get_world_size() > 1 else None,
        device=device,
        metric=config.get("metric", METRIC),
        mode=config.get("mode", "max"),
    )
    shutil.rmtree(work, ignore_errors=True)


def cluster_has_gpu() -> bool:
    """Returns True when the connected Ray cluster offers at least one GPU."""
    return ray.cluster_resources().get("GPU", 0) > 0


def make_trainer(
    cfg: Config,
    loop_config: dict[str, Any],
    *,
    name: str,
    storage_path: str,
    cpus_per_worker: float = 1.0,
    threads_per_worker: int | None = None,
    callbacks: list[Any] | None = None,
) -> ray.train.torch.TorchTrainer:
    """Returns a TorchTrainer running ``train_loop_per_worker`` with ``cfg.training``'s workers and failures.

    ``cpus_per_worker`` is what each worker reserves from Ray; ``threads_per_worker`` (default: the same) is how many
    torch threads it uses.
    """
    tc = cfg.training
    use_gpu = cluster_has_gpu() if tc.use_gpu is None else tc.use_gpu
    threads = threads_per_worker or max(1, int(cpus_per_worker))
    loop_config = {**loop_config, "threads_per_worker": threads}
    if use_gpu:
        loop_config["cfg"] = {**loop_config["cfg"], "training": {**loop_config["cfg"]["training"], "use_gpu": True}}
    resources = {"CPU": cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return ray.train.torch.TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=tc.num_workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            failure_config=ray.train.FailureConfig(max_failures=tc.max_failures, controller_failure_limit=2),
            callbacks=callbacks or [],
        ),
    )


__all__ = [
    "METRIC",
    "WORKER_NODES",
    "cluster_has_gpu",
    "make_trainer",
    "split_sets",
    "train_loop_per_worker",
    "worker_nodes",
]
