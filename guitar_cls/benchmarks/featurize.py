"""Featurization benchmark: the brief's per-item librosa loader against the Ray Data feature cache.

Prints one JSON line. All three measurements go from metadata rows to log-mel features:

(a) seed loader: ``librosa.load(offset, duration, sr=22050)``, peak normalisation, pad/truncate to 0.5-3 s,
    ``librosa.feature.melspectrogram`` + ``power_to_db``, one item at a time in a torch DataLoader with 2 workers;
(b) first pass: ``cache_dataset(..., features_cfg=log-mel)`` into an empty temporary cache (Ray Data tasks, one
    per CPU, read each recording once, resample, normalise, run the torch log-mel front end and write Parquet), then
    ``load_cache(with_features=True)`` and padded batches of 32 (``pad_features``);
(c) cached pass: ``cache_dataset`` hit + ``load_cache(with_features=True, with_waveforms=False)`` + the same
    padded batches: what an epoch on fixed features consumes.

Ray start-up is excluded from (b) and (c): ``ray.init`` (``ray_init_s``) and a no-op Ray Data job on every CPU that
starts Ray Data's helper actors and imports the pipeline modules (torch, torchaudio) in the worker processes
(``ray_warmup_s``). ``first_pass_incl_warmup_*`` adds the warm-up back: the first pass on cold workers. Neither
touches audio or a cache. The JSON also gives the cached pass that reads the waveforms too
(``cached_with_waveforms_ratio``).

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
import torch

from guitar_cls.config import DataConfig, FeatureConfig
from guitar_cls.data.pipeline import cache_dataset, load_cache, pad_features
from guitar_cls.data.schema import read_metadata

log = logging.getLogger(__name__)


class SeedLoaderDataset(torch.utils.data.Dataset):
    """The brief's per-item loader: one librosa read + resample + mel spectrogram per event."""

    def __init__(
        self, paths: list[str], onsets: np.ndarray, durations: np.ndarray, data_cfg: DataConfig, feat_cfg: FeatureConfig
    ) -> None:
        self.paths, self.onsets, self.durations = paths, onsets, durations
        self.data_cfg, self.feat_cfg = data_cfg, feat_cfg

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        import librosa

        d, f = self.data_cfg, self.feat_cfg
        duration = min(float(self.durations[i]), d.max_duration)
        y, sr = librosa.load(self.paths[i], sr=d.sample_rate, offset=float(self.onsets[i]), duration=duration)
        y = y / max(float(np.abs(y).max()), 1e-9)
        min_n = int(round(d.min_duration * sr))
        if y.size < min_n:
            y = np.pad(y, (0, min_n - y.size))
        mel = librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=f.n_fft, hop_length=f.hop_length, n_mels=f.n_mels, fmin=f.f_min, fmax=f.f_max
        )
        return librosa.power_to_db(mel, ref=np.max, top_db=f.top_db)


def run_seed_loader(df, audio_root: Path, data_cfg: DataConfig, feat_cfg: FeatureConfig, workers: int = 2) -> int:
    """Returns the number of feature maps produced by the per-item DataLoader."""
    ds = SeedLoaderDataset(
        [str(audio_root / p) for p in df["source_audio"].astype(str)],
        df["onset_sec"].to_numpy(float),
        (df["offset_sec"] - df["onset_sec"]).to_numpy(float),
        data_cfg,
        feat_cfg,
    )
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers, collate_fn=lambda x: x)
    return sum(1 for _ in loader)


def feature_batches(path: Path, batch_size: int, with_waveforms: bool = False) -> int:
    """Returns the number of windows read from a feature cache and padded into length-sorted batches."""
    cache = load_cache(path, with_features=True, with_waveforms=with_waveforms)
    feats = cache["features"].to_numpy()
    n_frames = 0
    order = np.argsort(cache["n_frames"].to_numpy(), kind="stable")  # length-bucketed, as training batches
    for start in range(0, len(order), batch_size):
        batch, frame_lengths = pad_features(list(feats[order[start : start + batch_size]]))  # (B, C, F, T), (B,)
        n_frames += int(frame_lengths.sum())
    return len(cache)


def import_featurization(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Returns ``batch`` unchanged after importing what a featurization task imports (a worker warm-up)."""
    import torchaudio.functional  # noqa: F401

    import guitar_cls.data.pipeline  # noqa: F401
    import guitar_cls.features  # noqa: F401

    return batch


def warm_up_ray(n_cpus: int) -> None:
    """Runs a no-op Ray Data job of ``n_cpus`` one-CPU tasks: Ray Data's helper actors start and every worker process
    imports the featurization modules."""
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
    run_seed_loader(df, audio_root, DataConfig(), feat_cfg, args.seed_workers)
    seed_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(log_to_driver=False, configure_logging=False)
    ray_init_s = time.perf_counter() - t0
    ray_cpus = int(ray.cluster_resources().get("CPU", 1))
    t0 = time.perf_counter()
    warm_up_ray(ray_cpus)
    warmup_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="featurize-bench-") as cache_dir:
        data_cfg = DataConfig(cache_dir=cache_dir)
        t0 = time.perf_counter()
        res = cache_dataset(df, audio_root, data_cfg, features_cfg=feat_cfg, progress=False)
        build_s = time.perf_counter() - t0
        feature_batches(res.path, args.batch_size)
        first_s = time.perf_counter() - t0
        assert not res.hit

        t0 = time.perf_counter()
        hit = cache_dataset(df, audio_root, data_cfg, features_cfg=feat_cfg, progress=False)
        n_windows = feature_batches(hit.path, args.batch_size)
        cached_s = time.perf_counter() - t0
        assert hit.hit

        t0 = time.perf_counter()
        feature_batches(hit.path, args.batch_size, with_waveforms=True)
        cached_waves_s = time.perf_counter() - t0

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
                "cached_with_waveforms_ratio": round(n / cached_waves_s / seed_rate, 2),
                "batch_size": args.batch_size,
                "ray_startup_excluded": "ray.init + no-op Ray Data warm-up job (worker imports)",
                "ray_init_s": round(ray_init_s, 3),
                "ray_warmup_s": round(warmup_s, 3),
                "ray_cpus": ray_cpus,
                "cpus": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0
