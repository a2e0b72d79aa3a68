"""Training-throughput benchmark: the brief's per-item pipeline against ours, same model, same samples, one run.

Baseline (the brief's loader): a torch Dataset whose ``__getitem__`` reads the snippet with librosa (offset and
duration, 22,050 Hz), peak-normalises, pads to the 3-s window and computes the librosa log-mel, in a DataLoader with
2 workers. Ours: processed waveforms from the featurization cache, length-bucketed batches (``train_ratio``; also
measured with random batches, the training default, as ``train_ratio_random_batches``), the batched torch front
end, the training defaults' precision (``training.amp: null``: bf16 autocast where the CPU has native bf16). Both
train the brief's ResNet (``base_width=64``) for one epoch with augmentation off; then both train the default
config's own model (``default_model_*``: the baseline's loader with that model, against ours with random batches).
Ours is timed per epoch, like the baseline's loop; its once-per-run setup (reading the cache, building the model and
optimizer) is reported apart (``ours_setup_s``) and added back in ``train_ratio_random_batches_incl_setup``.

    python jobs/benchmark.py train [--metadata M --audio-root R] [--limit 256] [--base-width 64] [--set k=v ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from guitar_cls.benchmarks.brief import BriefSnippets
from guitar_cls.config import Config, ModelConfig, load_config
from guitar_cls.data.pipeline import cache_dataset
from guitar_cls.data.schema import LABEL_TO_INDEX, read_metadata
from guitar_cls.data.source import data_overrides, resolve_data
from guitar_cls.models import build_model
from guitar_cls.train.loop import bucket_batches, build_parts, resolve_precision, train_one_epoch
from guitar_cls.train.ray_train import split_sets


def _epoch_baseline(model: torch.nn.Module, loader: DataLoader) -> float:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    n, t0 = 0, time.perf_counter()
    for x, y in loader:
        loss = torch.nn.functional.cross_entropy(model(x, None), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metadata")
    parser.add_argument("--audio-root")
    parser.add_argument("--limit", type=int, default=256, help="samples per epoch (same for both pipelines)")
    parser.add_argument("--base-width", type=int, default=64, help="ResNet width (64 = the brief's model)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for ours")
    args = parser.parse_args(argv)
    cfg = load_config(
        None,
        [
            *data_overrides([args.metadata] if args.metadata else [], [args.audio_root] if args.audio_root else []),
            "augmentation.enabled=false",
            f"training.batch_size={args.batch_size}",
            "training.use_gpu=false",
            "training.epochs=1",
            "training.scheduler=none",
            *args.set,
        ],
    )
    brief = dataclasses.replace(cfg, model=ModelConfig("resnet", {"base_width": args.base_width}))
    torch.set_num_threads(args.threads)
    sub, items, cache = _bench_data(cfg, args.limit)

    def baseline(model_cfg: ModelConfig) -> float:
        torch.manual_seed(0)
        model = build_model(model_cfg.name, in_channels=1, **model_cfg.params)
        loader = DataLoader(
            BriefSnippets(items), batch_size=args.batch_size, shuffle=True, num_workers=2, persistent_workers=False
        )
        return _epoch_baseline(model, loader)

    setup_s: list[float] = []

    def ours(run_cfg: Config, bucket: bool) -> float:
        t0 = time.perf_counter()
        data = split_sets(str(cache.path), {"bench": list(sub.index)})["bench"]
        torch.manual_seed(0)
        parts = build_parts(run_cfg, data.class_counts(), 1, torch.device("cpu"))
        batches = bucket_batches(
            data.lengths, args.batch_size, shuffle=True, rng=np.random.default_rng(0), bucket=bucket
        )
        t1 = time.perf_counter()  # once per training run, not per epoch: reported apart
        setup_s.append(t1 - t0)
        train_one_epoch(parts, data, run_cfg, batches, torch.Generator().manual_seed(0))
        return len(data) / (time.perf_counter() - t1)

    brief_base = baseline(brief.model)
    bucketed, random_batches = ours(brief, True), ours(brief, False)
    default_base = baseline(cfg.model)
    default_random = ours(cfg, False)
    with_setup = len(sub) / (len(sub) / random_batches + setup_s[1])
    amp_dtype, _ = resolve_precision(cfg.training, torch.device("cpu"))
    line = {
        "samples": len(sub),
        "model": f"resnet base_width={args.base_width}",
        "ours_precision": str(amp_dtype or torch.float32).replace("torch.", ""),
        "baseline_samples_per_s": round(brief_base, 2),
        "ours_samples_per_s": round(bucketed, 2),
        "train_ratio": round(bucketed / brief_base, 2),
        "ours_random_batches_samples_per_s": round(random_batches, 2),
        "train_ratio_random_batches": round(random_batches / brief_base, 2),
        "ours_setup_s": round(setup_s[1], 2),
        "train_ratio_random_batches_incl_setup": round(with_setup / brief_base, 2),
        "default_model": f"{cfg.model.name} {json.dumps(cfg.model.params, sort_keys=True)}",
        "default_model_baseline_samples_per_s": round(default_base, 2),
        "default_model_ours_random_batches_samples_per_s": round(default_random, 2),
        "default_model_train_ratio_random_batches": round(default_random / default_base, 2),
    }
    print(json.dumps(line))
    return 0


def _bench_data(cfg: Config, limit: int) -> tuple[pd.DataFrame, list[tuple[str, float, float, int]], Any]:
    """Returns the benchmark's ``limit`` random rows, the brief loader's items for them, and the waveform cache of the
    whole table (built once, shared by every run, see the featurize benchmark)."""
    metadata, audio_root = resolve_data(cfg.data)
    df = read_metadata(metadata)
    sub = df.iloc[np.random.default_rng(0).permutation(len(df))[:limit]]
    items = [
        (
            str(Path(audio_root) / r.source_audio),
            float(r.onset_sec),
            float(r.duration_sec),
            LABEL_TO_INDEX[r.label_category],
        )
        for r in sub.itertuples()
    ]
    return sub, items, cache_dataset(df, audio_root, cfg.data)
