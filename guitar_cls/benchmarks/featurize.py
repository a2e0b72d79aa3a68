"""Featurization benchmark: the brief's per-item librosa loader against the Ray Data waveform cache feeding the
batched torch front end, as training consumes it.

Prints one JSON line. All three measurements go from metadata rows to log-mel features:

(a) seed loader: ``benchmarks.brief.BriefSnippets`` (librosa read at 22,050 Hz, peak normalisation, 3-s window,
    librosa log-mel), one item at a time in a torch DataLoader with 2 workers;
(b) first pass: ``cache_dataset`` into an empty temporary cache (Ray Data tasks, one per CPU, read each recording
    once, resample, normalise and write Parquet), then ``load_cache`` and the torch log-mel front end on
    length-sorted padded batches of 32 (``inference.pad_batch``);
(c) cached pass: ``cache_dataset`` hit + ``load_cache`` + the same front-end batches: what every later run and
    every epoch consumes (training computes features per batch on its device, after waveform augmentation).

Ray start-up is excluded from (b) and (c): ``init_ray`` (``ray_init_s``) and a no-op Ray Data job on every CPU that
starts Ray Data's helper actors and imports the pipeline modules (torch, torchaudio) in the worker processes
(``ray_warmup_s``). ``first_pass_incl_warmup_*`` adds the warm-up back: the first pass on cold workers. Neither
touches audio or a cache.

Items are metadata rows (note events) per second of wall time.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from guitar_cls.benchmarks.brief import BriefSnippets
from guitar_cls.config import DataConfig, FeatureConfig
from guitar_cls.data.pipeline import cache_dataset, init_ray, load_cache
from guitar_cls.data.schema import read_metadata
from guitar_cls.features import make_frontend
from guitar_cls.inference import Waves, length_sorted_batches, pad_batch

log = logging.getLogger(__name__)


def run_seed_loader(df: pd.DataFrame, audio_root: Path, workers: int = 2) -> int:
    """Returns the number of feature maps produced by the brief's per-item DataLoader."""
    rows = [
        (str(audio_root / p), float(a), float(b) - float(a), 0)
        for p, a, b in zip(df["source_audio"].astype(str), df["onset_sec"], df["offset_sec"])
    ]
    loader = torch.utils.data.DataLoader(BriefSnippets(rows), batch_size=None, num_workers=workers)
    return sum(1 for _ in loader)


@torch.inference_mode()
def feature_batches(path: Path, feat_cfg: FeatureConfig, sample_rate: int, batch_size: int) -> int:
    """Returns the number of windows read from a waveform cache and featurized in length-sorted padded batches."""
    cache = load_cache(path)
    data = Waves(list(cache["waveform"]), cache["length"].to_numpy())
    frontend = make_frontend(feat_cfg, sample_rate).eval()
    for idx in length_sorted_batches(data.lengths, batch_size):
        frontend(*pad_batch(data, idx, torch.device("cpu")))  # (B, C, F, T), (B,)
    return len(cache)


def import_featurization(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Returns ``batch`` unchanged after importing what a featurization task imports (a worker warm-up)."""
    import torchaudio.functional  # noqa: F401

    import guitar_cls.data.pipeline  # noqa: F401

    return batch


def warm_up_ray(n_cpus: int) -> None:
    """Runs a no-op Ray Data job of ``n_cpus`` one-CPU tasks: Ray Data's helper actors start and every worker process
    imports the pipeline modules."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    old_bars, ctx.enable_progress_bars = ctx.enable_progress_bars, False
    try:
        ray.data.range(n_cpus, override_num_blocks=n_cpus).map_batches(
            import_featurization, batch_size=None, num_cpus=1
        ).materialize()
    finally:
        ctx.enable_progress_bars = old_bars


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmark.py featurize", description=__doc__.splitlines()[0])
    p.add_argument("--metadata", required=True)
    p.add_argument("--audio-root", required=True)
    p.add_argument("--batch-size", type=int, default=32, help="padded feature batch size")
    p.add_argument("--seed-workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="use only the first N events")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import ray

    df = read_metadata(args.metadata)
    if args.limit:
        df = df.iloc[: args.limit].reset_index(drop=True)
    audio_root = Path(args.audio_root)
    feat_cfg = FeatureConfig()
    n = len(df)

    t0 = time.perf_counter()
    run_seed_loader(df, audio_root, args.seed_workers)
    seed_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    init_ray()
    ray_init_s = time.perf_counter() - t0
    ray_cpus = int(ray.cluster_resources().get("CPU", 1))
    t0 = time.perf_counter()
    warm_up_ray(ray_cpus)
    warmup_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="featurize-bench-") as cache_dir:
        data_cfg = DataConfig(cache_dir=cache_dir)
        t0 = time.perf_counter()
        res = cache_dataset(df, audio_root, data_cfg, progress=False)
        build_s = time.perf_counter() - t0
        feature_batches(res.path, feat_cfg, data_cfg.sample_rate, args.batch_size)
        first_s = time.perf_counter() - t0
        assert not res.hit

        t0 = time.perf_counter()
        hit = cache_dataset(df, audio_root, data_cfg, progress=False)
        n_windows = feature_batches(hit.path, feat_cfg, data_cfg.sample_rate, args.batch_size)
        cached_s = time.perf_counter() - t0
        assert hit.hit

    seed_rate, first_rate, cached_rate = n / seed_s, n / first_s, n / cached_s
    print(
        json.dumps(
            {
                "benchmark": "featurize",
                "items": n,
                "windows": n_windows,
                "quarantined": len(res.quarantine),
                "features": feat_cfg.name,
                "seed_loader_items_per_s": round(seed_rate, 2),
                "first_pass_items_per_s": round(first_rate, 2),
                "cached_items_per_s": round(cached_rate, 2),
                "first_pass_ratio": round(first_rate / seed_rate, 2),
                "cached_ratio": round(cached_rate / seed_rate, 2),
                "seed_loader_s": round(seed_s, 3),
                "first_pass_s": round(first_s, 3),
                "first_pass_cache_build_s": round(build_s, 3),
                "cached_s": round(cached_s, 3),
                "first_pass_incl_warmup_items_per_s": round(n / (warmup_s + first_s), 2),
                "first_pass_incl_warmup_ratio": round(n / (warmup_s + first_s) / seed_rate, 2),
                "batch_size": args.batch_size,
                "ray_startup_excluded": "init_ray + no-op Ray Data warm-up job (worker imports)",
                "ray_init_s": round(ray_init_s, 3),
                "ray_warmup_s": round(warmup_s, 3),
                "ray_cpus": ray_cpus,
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0
