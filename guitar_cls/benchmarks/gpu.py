"""The training path on a GPU machine that lacks Ray and MLflow: checks and timings of what Ray Train runs in each
worker (``train.loop``), one JSON line each.

A lent GPU machine may hold torch but not the rest of the stack (Ray's wheel is too large to carry there), so the data
travel as one file: ``--export`` writes the default demo set's processed waveforms (float16) and the rows of both
domain-gap transfers, here, where Ray builds the cache; the checks then need only torch, torchaudio, numpy, pandas,
pyarrow, pyyaml, scipy and soundfile.

    python jobs/benchmark.py gpu --export outputs/gpu_check.npz        # here (Ray), about 1 min with the set cached
    python jobs/benchmark.py gpu outputs/gpu_check.npz [--device cuda] [--checks a,b] [--seeds 42,7,1] [--set k=v]

Checks (default all): ``env``; ``augment`` (every waveform augmentation, SpecAugment and mixup at p=1 for one epoch);
``fit`` (synth -> samples for each seed and samples -> synth for the first, as ``domain-gap`` does, tested on CPU in
fp32 like a registered model); ``agree`` (the first model's probabilities on the device, fp32 and the training
autocast, against CPU fp32); ``strides`` (per architecture: weights whose gradient strides differ from theirs under
channels-last, plain ``.to(channels_last)`` against ``loop.to_channels_last``); ``ddp`` (one epoch per architecture
through ``fit`` wrapped in DDP, one rank, NCCL on CUDA and gloo on CPU: "Grad strides" warnings counted; PyTorch
warns once per process, so a count after the first warning reads 0 whatever happened: use ``--checks ddp`` alone, or
``strides`` for per-model figures);
``throughput`` (training samples/s per architecture, layout and batch size, augmentation off, then the default with
augmentation); ``profile`` (``benchmark.py profile``'s sections for the default config). README "On a GPU" holds the
figures of an H200.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guitar_cls.config import Config, load_config
from guitar_cls.data.pipeline import _free_port  # no Ray at import
from guitar_cls.inference import build_from_config, predict_proba
from guitar_cls.train import loop
from guitar_cls.train.checkpoint import load_model, save_checkpoint
from guitar_cls.train.metrics import classification_metrics

CHECKS = ("env", "augment", "fit", "agree", "strides", "ddp", "throughput", "profile")
DOMAINS = ("synth", "samples")
ARCHS = {  # the arch sweep's three families at its seeded sizes
    "resnet": [],
    "efficientnet_b0": ["model.name=efficientnet_b0", "model.params={width_mult: 0.5, depth_mult: 0.33}"],
    "mobilenet_v3_small": ["model.name=mobilenet_v3_small", "model.params={width_mult: 0.75}"],
}
AUGMENTATIONS = ("gain", "noise", "cut_short", "time_stretch", "pitch_shift", "saturation", "eq", "reverb", "overlay",
                 "band_limit", "spec_augment", "mixup")  # fmt: skip


def write_check_data(path: str | Path, waves: list[np.ndarray], labels: np.ndarray, rows: dict[str, list[int]]) -> Path:
    """Writes the check's data: ``waves`` (float16), their ``labels`` and named lists of indices into them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = np.array([len(w) for w in waves], dtype=np.int64)
    tmp = path.with_name(path.name + ".tmp.npz")
    named = {f"rows_{k}": np.asarray(v, np.int64) for k, v in rows.items()}
    np.savez(tmp, audio=np.concatenate(waves).astype(np.float16), lengths=lengths,
             labels=np.asarray(labels, dtype=np.int64), **named)  # fmt: skip
    tmp.replace(path)
    return path


def read_check_data(path: str | Path) -> dict[str, loop.SnippetSet]:
    """Returns the named sets of a ``write_check_data`` file."""
    with np.load(path) as z:
        audio, lengths, labels = z["audio"], z["lengths"], z["labels"]
        names = {k[len("rows_") :]: z[k] for k in z.files if k.startswith("rows_")}
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    waves = [audio[s : s + n].astype(np.float32) for s, n in zip(starts, lengths)]
    return {k: loop.SnippetSet([waves[i] for i in idx], lengths[idx], labels[idx]) for k, idx in names.items()}


def export(cfg: Config, path: str) -> Path:
    """Writes ``cfg``'s data (the demo set by default) with the rows of both transfers between ``DOMAINS``."""
    from guitar_cls.benchmarks.domain_gap import transfer_rows  # Ray: only here
    from guitar_cls.data.pipeline import cache_dataset, load_cache
    from guitar_cls.data.schema import read_metadata
    from guitar_cls.data.source import resolve_data

    metadata, audio_root = resolve_data(cfg.data)
    df = read_metadata(metadata)
    cache = cache_dataset(df, audio_root, cfg.data)
    bad = set(cache.quarantine["row"].tolist()) if len(cache.quarantine) else set()
    frame = load_cache(cache.path).set_index("row").sort_index()
    index = {int(r): i for i, r in enumerate(frame.index)}
    rows = {}
    for source, target in (DOMAINS, DOMAINS[::-1]):
        for split, ids in transfer_rows(cfg, df, bad, source, target, "subset_id").items():
            if split != "test":
                rows[f"{source}_{split}"] = [index[r] for r in ids]
    waves = [np.asarray(w, dtype=np.float32) for w in frame["waveform"]]
    return write_check_data(path, waves, frame["label"].to_numpy(), rows)


def _target(sets: dict[str, loop.SnippetSet], domain: str) -> loop.SnippetSet:
    """Returns every row of ``domain`` (its training and validation rows): the test set of a transfer into it."""
    a, b = sets[f"{domain}_train"], sets[f"{domain}_val"]
    lengths, labels = np.concatenate([a.lengths, b.lengths]), np.concatenate([a.labels, b.labels])
    return loop.SnippetSet(a.waves + b.waves, lengths, labels)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _epoch_rate(parts: loop.TrainParts, data: loop.SnippetSet, cfg: Config, seed: int) -> float:
    """Returns the training samples/s of one epoch of random batches."""
    batches = loop.bucket_batches(data.lengths, cfg.training.batch_size, shuffle=True,
                                  rng=np.random.default_rng(seed), bucket=False)  # fmt: skip
    _sync(parts.device)
    t0 = time.perf_counter()
    loop.train_one_epoch(parts, data, cfg, batches, torch.Generator().manual_seed(seed))
    _sync(parts.device)
    return len(data) / (time.perf_counter() - t0)


def _mismatched(model: torch.nn.Module, feats: torch.Tensor, frames: torch.Tensor, amp: torch.dtype | None) -> int:
    """Returns how many weights get a gradient with other strides than theirs in one training-mode step."""
    model.train().zero_grad()
    ctx = torch.autocast(feats.device.type, dtype=amp) if amp else torch.autocast(feats.device.type, enabled=False)
    with ctx:
        out = model(feats.contiguous(memory_format=torch.channels_last), frames)
    out.float().sum().backward()
    return sum(p.grad is not None and p.grad.stride() != p.stride() for p in model.parameters())


def run_checks(
    sets: dict[str, loop.SnippetSet], device: torch.device, checks: list[str], seeds: list[int], overrides: list[str]
) -> list[dict[str, Any]]:
    """Runs ``checks`` in order on ``device``; returns their records (each also printed as a JSON line)."""
    on_gpu = ["training.use_gpu=true"] if device.type == "cuda" else ["training.use_gpu=false"]
    base = load_config(None, [*on_gpu, *overrides])
    amp, _ = loop.resolve_precision(base.training, device)
    out: list[dict[str, Any]] = []

    def emit(record: dict[str, Any]) -> None:
        out.append({"benchmark": "gpu", "device": str(device), **record})
        print(json.dumps(out[-1]), flush=True)

    def cfg_with(*kv: str) -> Config:
        return load_config(None, [*on_gpu, *overrides, *kv])

    train, val = sets["synth_train"], sets["synth_val"]
    models: list[tuple[torch.nn.Module, torch.nn.Module]] = []
    for check in checks:
        if check == "env":
            info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
            if device.type == "cuda":
                info.update(gpu=torch.cuda.get_device_name(device), cudnn=torch.backends.cudnn.version())
            emit({"check": "env", **info, "amp": str(amp), **{k: len(v) for k, v in sets.items()}})
        elif check == "augment":
            on = [f"augmentation.{k}.{f}={v}" for k in AUGMENTATIONS for f, v in (("enabled", "true"), ("p", 1.0))]
            cfg = cfg_with(*on)
            parts = loop.build_parts(cfg, train.class_counts(), 1, device)
            t0 = time.perf_counter()
            batches = loop.bucket_batches(train.lengths, 32, shuffle=True, rng=np.random.default_rng(0), bucket=False)
            m = loop.train_one_epoch(parts, train, cfg, batches, torch.Generator().manual_seed(0))
            emit({"check": "augment", "loss": round(m["train/loss"], 4), "finite": bool(np.isfinite(m["train/loss"])),
                  "s": round(time.perf_counter() - t0, 2), "channels_last": parts.channels_last})  # fmt: skip
        elif check == "fit":
            runs = [(a, b, sd) for a, b in (DOMAINS, DOMAINS[::-1]) for sd in (seeds if a == DOMAINS[0] else seeds[:1])]
            for source, target, seed in runs:
                cfg = cfg_with(f"training.seed={seed}")
                t0 = time.perf_counter()
                summary = loop.fit(cfg, sets[f"{source}_train"], sets[f"{source}_val"], device=device)
                seconds = time.perf_counter() - t0
                with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
                    model, frontend, _ = load_model(save_checkpoint(summary["best_payload"], Path(tmp) / "best.pt"))
                test = _target(sets, target)
                m = classification_metrics(test.labels, predict_proba(model, frontend, test, 32))
                if source == DOMAINS[0] and not models:
                    models.append((model, frontend))
                emit({"check": "fit", "direction": f"{source}_to_{target}", "seed": seed,
                      "balanced_accuracy": round(float(m["balanced_accuracy"]), 4),
                      "recall": {k[7:]: round(float(v), 3) for k, v in m.items() if k.startswith("recall/")},
                      "val": round(float(summary["best_metric"]), 4), "epochs_run": summary["epochs_run"],
                      "train_s": round(seconds, 1), "n_train": len(sets[f"{source}_train"]), "n_test": len(test),
                      "median_epoch_s": round(float(np.median([h["epoch_s"] for h in summary["history"]])), 2),
                      })  # fmt: skip
        elif check == "agree" and models:
            model, frontend = models[0]
            test = _target(sets, DOMAINS[1])
            cpu = predict_proba(model.cpu(), frontend.cpu(), test, 32)
            model, frontend = model.to(device), frontend.to(device)
            rec: dict[str, Any] = {"check": "agree", "n": len(test)}
            for name, dtype in (("fp32", None), ("amp", amp)):
                probs = predict_proba(model, frontend, test, 32, device, dtype)
                rec[f"{name}_max_abs_diff"] = round(float(np.abs(probs - cpu).max()), 5)
                rec[f"{name}_same_class"] = round(float((probs.argmax(1) == cpu.argmax(1)).mean()), 4)
            emit(rec)
        elif check == "strides":
            waves, lengths, _ = loop.collate(train, np.arange(min(16, len(train))), device)
            for arch, kv in ARCHS.items():
                cfg = cfg_with(*kv)
                counts = {}
                for how in ("plain", "aligned"):
                    torch.manual_seed(0)
                    model, frontend = (m.to(device) for m in build_from_config(cfg, pretrained=False))
                    with torch.no_grad():
                        feats, frames = frontend(waves, lengths)
                    if how == "plain":
                        model = model.to(memory_format=torch.channels_last)
                    else:
                        model = loop.to_channels_last(model, feats[:2], frames[:2], amp)
                    counts[how] = _mismatched(model, feats, frames, amp)
                emit({"check": "strides", "model": arch, "params": sum(1 for _ in model.parameters()),
                      "mismatched_plain": counts["plain"], "mismatched_aligned": counts["aligned"]})  # fmt: skip
        elif check == "ddp":
            import torch.distributed as dist
            from torch.nn.parallel import DistributedDataParallel as DDP

            backend = "nccl" if device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
            wrap = functools.partial(DDP, device_ids=[device.index or 0] if device.type == "cuda" else None)
            try:
                for arch, kv in ARCHS.items():
                    cfg = cfg_with(*kv, "training.epochs=1")
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        summary = loop.fit(cfg, train.subset(np.arange(min(96, len(train)))), val, device=device,
                                           wrap_model=wrap)  # fmt: skip
                    keys = summary["best_payload"]["state_dict"]
                    emit({"check": "ddp", "backend": backend, "model": arch, "epochs_run": summary["epochs_run"],
                          "grad_stride_warnings": sum("Grad strides" in str(w.message) for w in caught),
                          "unwrapped_checkpoint": not any(k.startswith("module.") for k in keys)})  # fmt: skip
            finally:
                dist.destroy_process_group()
        elif check == "throughput":
            for arch, kv in ARCHS.items():
                for layout in ("contiguous", "channels_last"):
                    for bs in (32, 128):
                        cfg = cfg_with(*kv, "augmentation.enabled=false", f"training.batch_size={bs}",
                                       f"training.channels_last={str(layout == 'channels_last').lower()}")  # fmt: skip
                        torch.manual_seed(0)
                        parts = loop.build_parts(cfg, train.class_counts(), 1, device)
                        rates = [_epoch_rate(parts, train, cfg, seed) for seed in range(3)]
                        emit({"check": "throughput", "model": arch, "layout": layout, "batch_size": bs,
                              "augmentation": False, "channels_last": parts.channels_last,
                              "samples_per_s": [round(r, 1) for r in rates]})  # fmt: skip
            for bs in (32, 128):
                cfg = cfg_with(f"training.batch_size={bs}")
                parts = loop.build_parts(cfg, train.class_counts(), 1, device)
                rates = [_epoch_rate(parts, train, cfg, seed) for seed in range(4)]
                emit({"check": "throughput", "model": "resnet", "batch_size": bs, "augmentation": True,
                      "channels_last": parts.channels_last, "samples_per_s": [round(r, 1) for r in rates]})  # fmt: skip
        elif check == "profile":
            from guitar_cls.benchmarks.profile import profile_sets

            for bs in (32, 128):
                n_batches = -(-len(train) // bs)
                warmup = min(10, n_batches // 2)  # the rest of one epoch is timed
                cfg = cfg_with(f"training.batch_size={bs}")
                emit({"check": "profile", **profile_sets(cfg, train, val, n_batches - warmup, warmup)})
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py gpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data", help="the file --export wrote (read), or is to write")
    parser.add_argument("--export", action="store_true", help="write the data file from the configured data (Ray)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--checks", default=",".join(CHECKS), help=f"comma-separated, in order: {', '.join(CHECKS)}")
    parser.add_argument("--seeds", default="42,7,1", help="training seeds of the synth -> samples fits")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--threads", type=int, default=min(8, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    if args.export:
        print(json.dumps({"benchmark": "gpu", "exported": str(export(load_config(None, args.set), args.data))}))
        return 0
    checks = [c.strip() for c in args.checks.split(",") if c.strip()]
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        parser.error(f"unknown checks {unknown} (choose from {', '.join(CHECKS)})")
    if not Path(args.data).is_file():
        parser.error(f"{args.data} does not exist: write it with --export where Ray is installed")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", device.index or 0)
    sets = read_check_data(args.data)
    missing = sorted({f"{d}_{s}" for d in DOMAINS for s in ("train", "val")} - set(sets))
    if missing:
        parser.error(f"{args.data} lacks the rows {missing}: write it again with --export")
    run_checks(sets, device, checks, [int(s) for s in args.seeds.split(",")], args.set)
    return 0
