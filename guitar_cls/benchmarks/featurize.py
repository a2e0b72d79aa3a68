"""Featurization benchmark: the brief's per-item librosa loader against the Ray Data cache + batched frontend.

Prints one JSON line. All three measurements go from metadata rows to log-mel features:

(a) seed loader: ``librosa.load(offset, duration, sr=22050)``, peak normalisation, pad/truncate to 0.5-3 s,
    ``librosa.feature.melspectrogram`` + ``power_to_db``, one item at a time in a torch DataLoader with 2 workers;
(b) first pass: ``cache_dataset`` into an empty temporary cache, ``load_cache`` and the log-mel FeatureFrontend on
    length-sorted batches (Ray is started before the clock; its start-up time is reported separately);
(c) cached pass: ``cache_dataset`` hit + ``load_cache`` + the same frontend.

(b) runs with cold Ray worker processes (they import torch on their first task); the JSON also gives the same
first pass repeated into a fresh cache directory with warm workers (``first_pass_warm_workers_*``).

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
from guitar_cls.data.audio import pad_windows
from guitar_cls.data.pipeline import cache_dataset, load_cache
from guitar_cls.data.schema import read_metadata
from guitar_cls.features import make_frontend

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


def featurize_cache(path: Path, frontend: torch.nn.Module, batch_size: int, min_samples: int) -> int:
    """Returns the number of windows turned into log-mels, in length-sorted batches of ``batch_size``."""
    cache = load_cache(path)
    order = np.argsort(cache["length"].to_numpy(), kind="stable")
    waves = cache["waveform"].to_numpy()
    n_frames = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            wave, lengths = pad_windows(list(waves[idx]), min_samples)
            feats, frame_lengths = frontend(wave, lengths)
            n_frames += int(frame_lengths.sum())
    return len(cache)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmark.py featurize", description=__doc__.splitlines()[0])
    p.add_argument("--metadata", required=True)
    p.add_argument("--audio-root", required=True)
    p.add_argument("--batch-size", type=int, default=128, help="frontend batch size")
    p.add_argument("--seed-workers", type=int, default=2)
    p.add_argument("--limit", type=int, default=None, help="use only the first N events")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the frontend (default: all CPUs)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    import ray

    df = read_metadata(args.metadata)
    if args.limit:
        df = df.iloc[: args.limit].reset_index(drop=True)
    audio_root = Path(args.audio_root)
    feat_cfg = FeatureConfig()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    n = len(df)

    t0 = time.perf_counter()
    run_seed_loader(df, audio_root, DataConfig(), feat_cfg, args.seed_workers)
    seed_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    if not ray.is_initialized():
        ray.init(log_to_driver=False, configure_logging=False)
    ray_start_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="featurize-bench-") as cache_dir:
        data_cfg = DataConfig(cache_dir=cache_dir)
        frontend = make_frontend(feat_cfg, data_cfg.sample_rate)
        min_samples = int(round(data_cfg.min_duration * data_cfg.sample_rate))

        t0 = time.perf_counter()
        res = cache_dataset(df, audio_root, data_cfg, progress=False)
        t_cache = time.perf_counter() - t0
        featurize_cache(res.path, frontend, args.batch_size, min_samples)
        first_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        hit = cache_dataset(df, audio_root, data_cfg, progress=False)
        n_windows = featurize_cache(hit.path, frontend, args.batch_size, min_samples)
        cached_s = time.perf_counter() - t0
        assert hit.hit

    # the same first pass again in a fresh cache dir, now that Ray's worker processes have imported torch & co.
    with tempfile.TemporaryDirectory(prefix="featurize-bench-") as cache_dir:
        t0 = time.perf_counter()
        res2 = cache_dataset(df, audio_root, DataConfig(cache_dir=cache_dir), progress=False)
        featurize_cache(res2.path, frontend, args.batch_size, min_samples)
        warm_s = time.perf_counter() - t0

    seed_rate, first_rate, cached_rate = n / seed_s, n / first_s, n / cached_s
    print(
        json.dumps(
            {
                "benchmark": "featurize",
                "items": n,
                "windows": n_windows,
                "quarantined": len(res.quarantine),
                "seed_loader_items_per_s": round(seed_rate, 2),
                "first_pass_items_per_s": round(first_rate, 2),
                "cached_items_per_s": round(cached_rate, 2),
                "first_pass_ratio": round(first_rate / seed_rate, 2),
                "cached_ratio": round(cached_rate / seed_rate, 2),
                "seed_loader_s": round(seed_s, 3),
                "first_pass_s": round(first_s, 3),
                "first_pass_cache_build_s": round(t_cache, 3),
                "cached_s": round(cached_s, 3),
                "first_pass_warm_workers_items_per_s": round(n / warm_s, 2),
                "first_pass_warm_workers_ratio": round(n / warm_s / seed_rate, 2),
                "ray_start_s": round(ray_start_s, 3),
                "ray_startup_excluded": True,
                "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        )
    )
    return 0
