"""Where a training step's time goes: the real ``train_one_epoch`` and validation pass of a config, timed by section.

Sections are timed with ``time.perf_counter`` (CPU ops run synchronously; on CUDA each boundary synchronises), or
with process CPU time (``--clock cpu``, for a machine shared with other jobs), through hooks on the loop's own
pieces, so what is measured is the code that trains, not a copy of it: ``collate``
(batching and padding), each waveform augmentation (``aug/<effect>``, plus ``aug/other``: drawing and row
bookkeeping), ``frontend`` (features), ``spec_augment``, ``mixup``, ``forward`` (model, under the loop's autocast),
``loss``, ``backward`` (loss to the last parameter gradient), ``optimizer`` (the step) and ``other`` (zero_grad,
gradient clipping, the loss read-back, the loop itself). Validation is one ``split_metrics`` pass over the validation
split (``val/collate``, ``val/frontend``, ``val/forward`` inside it), then a second one as in every later epoch (the
validation features are cached after the first).

    python jobs/benchmark.py profile [--steps 30] [--warmup 3] [--threads 2] [--set training.amp=false ...]

Prints one JSON line: milliseconds per training step by section, each section's share of a step, the
forward+backward share, and validation seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from guitar_cls.config import Config, load_config
from guitar_cls.train import loop

log = logging.getLogger(__name__)


class Sections:
    """Accumulates seconds of ``clock`` per named section; nested sections each count their own full time."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.device = device
        self.clock = clock
        self.enabled = True
        self._open: dict[str, list[float]] = defaultdict(list)

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return self.clock()

    def start(self, name: str) -> None:
        self._open[name].append(self._now())

    def stop(self, name: str) -> None:
        t0 = self._open[name].pop()
        if self.enabled:
            self.seconds[name] += self._now() - t0

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Returns ``fn`` timed as ``name``."""

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self(name):
                return fn(*args, **kwargs)

        return timed

    def hook_module(self, name: str, module: nn.Module) -> list[Any]:
        """Times every call of ``module`` as ``name``; returns the hook handles."""
        return [
            module.register_forward_pre_hook(lambda *_: self.start(name)),
            module.register_forward_hook(lambda *_: self.stop(name)),
        ]

    def reset(self) -> None:
        self.seconds.clear()


@contextlib.contextmanager
def _patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    """Sets ``obj.name = value`` for the duration (the loop's module globals, an instance's bound methods)."""
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


@contextlib.contextmanager
def instrument(parts: loop.TrainParts, sections: Sections) -> Iterator[None]:
    """Times the pieces of ``train_one_epoch`` / ``split_metrics`` for ``parts`` while active."""
    handles: list[Any] = []
    marks: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        for fn_name in ("collate", "spec_augment", "mixup"):
            stack.enter_context(_patched(loop, fn_name, sections.wrap(fn_name, getattr(loop, fn_name))))
        aug = parts.augment
        effects = ["cut_short", "time_stretch", *[f"_{e}" for e in getattr(aug, "EFFECTS", ())]]
        for attr in effects:
            if callable(getattr(aug, attr, None)):
                name = "aug/" + attr.lstrip("_")
                stack.enter_context(_patched(aug, attr, sections.wrap(name, getattr(aug, attr))))
        handles += sections.hook_module("augment", aug)
        handles += sections.hook_module("frontend", parts.frontend)
        handles += sections.hook_module("forward", parts.model)
        handles += sections.hook_module("loss", parts.loss)

        def loss_done(*_: Any) -> None:
            marks["backward_start"] = sections._now()

        def grad_done(_: torch.Tensor) -> None:
            marks["backward_end"] = sections.clock()

        def step_start(*_: Any) -> None:
            if sections.device.type == "cuda":  # gradient hooks fire when the kernels are queued, not done
                marks["backward_end"] = sections._now()
            if "backward_start" in marks and "backward_end" in marks and sections.enabled:
                sections.seconds["backward"] += marks["backward_end"] - marks["backward_start"]
            marks.clear()
            sections.start("optimizer")

        handles.append(parts.loss.register_forward_hook(loss_done))
        handles += [
            p.register_post_accumulate_grad_hook(grad_done) for p in parts.model.parameters() if p.requires_grad
        ]
        handles.append(parts.optimizer.register_step_pre_hook(step_start))
        handles.append(parts.optimizer.register_step_post_hook(lambda *_: sections.stop("optimizer")))
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _val_sections(sections: Sections, parts: loop.TrainParts, data: loop.SnippetSet, batch_size: int) -> float:
    """Returns the seconds of one ``split_metrics`` pass; its collate/frontend/forward go to ``val/...``."""
    seconds = dict(sections.seconds)
    t0 = sections.clock()
    loop.split_metrics(parts, data, "val", batch_size)
    total = sections.clock() - t0
    for name in ("collate", "frontend", "forward"):
        sections.seconds["val/" + name] = sections.seconds.get(name, 0.0) - seconds.get(name, 0.0)
        sections.seconds[name] = seconds.get(name, 0.0)
    return total


def profile_training(cfg: Config, steps: int = 30, warmup: int = 3, clock: str = "wall") -> dict[str, Any]:
    """Returns the per-step section breakdown of ``steps`` training steps (after ``warmup``) and one validation pass.

    ``clock`` "wall" times with ``time.perf_counter``; "cpu" with ``time.process_time`` (CPU seconds of all of this
    process's threads: with one thread, the work done regardless of other processes sharing the cores).
    """
    from guitar_cls.train.ray_train import split_sets  # Ray: here, not at import (benchmarks/gpu.py runs without it)
    from guitar_cls.train.run import prepare_data

    with tempfile.TemporaryDirectory(prefix="guitar_cls_profile_") as tmp:
        prepared = prepare_data(cfg, Path(tmp))
    rows = {name: list(prepared.splits.index[prepared.splits == name]) for name in ("train", "val")}
    sets = split_sets(str(prepared.cache.path), rows)
    return profile_sets(cfg, sets["train"], sets["val"], steps, warmup, clock)


def profile_sets(
    cfg: Config, train: loop.SnippetSet, val: loop.SnippetSet, steps: int = 30, warmup: int = 3, clock: str = "wall"
) -> dict[str, Any]:
    """``profile_training`` on given training and validation sets, on ``loop.pick_device(cfg.training)``."""
    tc = cfg.training
    device = loop.pick_device(tc)
    torch.manual_seed(tc.seed)
    rng = np.random.default_rng(tc.seed)
    batches = loop.bucket_batches(train.lengths, tc.batch_size, shuffle=True, rng=rng, bucket=tc.bucket_batches)
    parts = loop.build_parts(cfg, train.class_counts(), len(batches), device)
    generator = torch.Generator().manual_seed(tc.seed)
    sections = Sections(device, time.perf_counter if clock == "wall" else time.process_time)
    with instrument(parts, sections):
        sections.enabled = False
        loop.train_one_epoch(parts, train, cfg, batches[:warmup], generator)
        sections.enabled = True
        timed = batches[warmup : warmup + steps]
        t0 = sections.clock()
        loop.train_one_epoch(parts, train, cfg, timed, generator)
        step_s = (sections.clock() - t0) / len(timed)
        train_sections = {k: v / len(timed) for k, v in sections.seconds.items()}
        sections.reset()
        val_s = _val_sections(sections, parts, val, tc.batch_size)  # the first epoch's (fills the feature cache)
        val_sections = dict(sections.seconds)
        val_again_s = _val_sections(sections, parts, val, tc.batch_size)  # every later epoch's
    effects = {k: v for k, v in train_sections.items() if k.startswith("aug/")}
    train_sections["aug/other"] = train_sections.get("augment", 0.0) - sum(effects.values())
    top = ["collate", "augment", "frontend", "spec_augment", "mixup", "forward", "loss", "backward", "optimizer"]
    train_sections["other"] = step_s - sum(train_sections.get(k, 0.0) for k in top)
    ms = {k: round(1000 * v, 2) for k, v in sorted(train_sections.items())}
    share = {k: round(v / step_s, 3) for k, v in sorted(train_sections.items()) if not k.startswith("aug/")}
    fwd_bwd = (train_sections.get("forward", 0.0) + train_sections.get("backward", 0.0)) / step_s
    return {
        "model": f"{cfg.model.name} {json.dumps(cfg.model.params, sort_keys=True)}",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "clock": clock,
        "amp": str(parts.amp_dtype).replace("torch.", "") if parts.amp_dtype else None,
        "channels_last": parts.channels_last,
        "batch_size": tc.batch_size,
        "steps": len(timed),
        "step_ms": round(1000 * step_s, 2),
        "train_samples_per_s": round(tc.batch_size / step_s, 1),
        "forward_backward_share": round(fwd_bwd, 3),
        "step_ms_by_section": ms,
        "step_share_by_section": share,
        "val_samples": len(val),
        "val_s": round(val_s, 3),
        "val_s_by_section": {k: round(v, 3) for k, v in sorted(val_sections.items()) if k.startswith("val/")},
        "val_later_epochs_s": round(val_again_s, 3),
        "val_share_of_epoch": round(val_again_s / (val_again_s + step_s * len(batches)), 3),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="YAML file updating the package defaults")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall", help="cpu: process CPU time (for a shared machine)"
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.config, ["training.use_gpu=false", *args.set])
    torch.set_num_threads(args.threads)
    print(json.dumps(profile_training(cfg, args.steps, args.warmup, args.clock)))
    return 0
