"""Self-describing checkpoints: ``load_model(path)`` rebuilds the model and its feature front end from the file alone.

A checkpoint is a plain dict of tensors, numbers and strings (loadable with ``weights_only=True``): model name and
keyword arguments, the full config, the state dicts of model/optimizer/scheduler, epoch and best metric.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from guitar_cls.config import Config, config_from_dict
from guitar_cls.data.schema import LABELS
from guitar_cls.inference import build_from_config, model_kwargs

FORMAT_VERSION = 1
LATEST = "model.pt"  # the latest epoch (what a resumed run continues from)
BEST = "best.pt"  # the best epoch on the validation metric (what gets evaluated and registered)
SPLITS_FILE = "splits.csv"  # a run's split assignment, in its folder (beside ``checkpoint/``); logged with the model


def make_payload(
    model: nn.Module,
    cfg: Config,
    in_channels: int,
    *,
    epoch: int,
    metrics: dict[str, float],
    best_metric: float,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    extra: dict[str, Any] | None = None,
    train_model: nn.Module | None = None,
) -> dict[str, Any]:
    """Returns the checkpoint dict for ``model`` (unwrapped from DDP) after ``epoch``.

    ``train_model``: the raw network the optimizer trains when ``model`` is its weight average (``training.ema_decay``);
    its weights go to ``train_state_dict`` so that a resumed run continues both.
    """
    return {
        "format": FORMAT_VERSION,
        "labels": list(LABELS),
        "model_name": cfg.model.name,
        "model_kwargs": model_kwargs(cfg, in_channels),
        "config": cfg.to_dict(),
        "state_dict": _cpu_state(model),
        "train_state_dict": _cpu_state(train_model) if train_model is not None else None,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "epoch": int(epoch),
        "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))},
        "best_metric": float(best_metric),
        "extra": extra or {},
    }


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "module", model)  # DDP
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Writes ``payload`` atomically (temp file + rename) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def checkpoint_file(path: str | Path) -> Path:
    """Returns the checkpoint file of a file or a run folder (``best.pt``, else ``model.pt``)."""
    path = Path(path)
    if path.is_dir():
        path = path / BEST if (path / BEST).exists() else path / LATEST
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def find_splits(checkpoint: str | Path) -> Path | None:
    """Returns the ``splits.csv`` of the run a checkpoint file came from, if any: beside it (a pyfunc model's
    artifacts) or in the folder above (``runs/<name>/checkpoint/best.pt`` -> ``runs/<name>/splits.csv``)."""
    checkpoint = Path(checkpoint)
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / SPLITS_FILE).is_file():
            return folder / SPLITS_FILE
    return None


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Returns the checkpoint dict at ``path`` (a file, or a folder holding best.pt / model.pt)."""
    path = checkpoint_file(path)
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a guitar_cls checkpoint (format {FORMAT_VERSION})")
    if tuple(payload["labels"]) != LABELS:
        raise ValueError(f"{path}: label order {payload['labels']} differs from {list(LABELS)}")
    return payload


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, nn.Module, Config]:
    """Returns (model in eval mode, feature front end, config) rebuilt from a checkpoint file or folder."""
    payload = read_checkpoint(path)
    cfg = config_from_dict(payload["config"])
    if payload["model_name"] != cfg.model.name:
        raise ValueError(f"{path}: model {payload['model_name']!r} but its config names {cfg.model.name!r}")
    model, frontend = build_from_config(cfg, kwargs=payload["model_kwargs"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), frontend.to(device).eval(), cfg
