"""Cross-domain benchmark: train on one source of recordings, test on the other. Prints one JSON line.

The demo data holds two sources (``subset_id``): ``synth`` (additive string model) and ``samples`` (recorded guitar
samples from a SoundFont). A model that only learned one source's fingerprint fails on the other; this measures it
both ways with the default configuration (or ``--set`` overrides): train and validate (early stopping, grouped split
by recording) on every recording of one source, test on every recording of the other.

    python jobs/benchmark.py domain-gap [--recordings 480] [--metadata M --audio-root R] [--domains synth,samples]
                                        [--members 3] [--set k=v ...]

Without ``--metadata`` it runs on a demo set of ``--recordings`` recordings (default 480: four times the default
demo set, generated once into ``<data.demo_dir>-480``; the default demo set is left alone). The size matters: on
the default 120 recordings (60 per source, ~600 training notes) synth -> samples scored 0.71-0.76 over five runs,
on 480 (~2,400 notes) 0.77-0.86 (README, "What the domain-gap runs show").

The default model is what the shipped sweeps register (``budget.refit_members: 3`` in arch/augment/features.yaml):
the mean of the probabilities of ``--members`` models (default 3) trained alike but for their training seeds
(``training.seed`` .. ``+ N - 1``). On the synthesized -> sampled transfer single models disagree on which recorded
notes they miss, so three of them average out part of it. The main figures are that mean's; ``*_single_model_*``
are the first model's (the configured seed) and ``details`` holds each member's. On 2 cores each model takes ~9 min
at 480 recordings, so the default runs ~55 min; ``--members 1`` is the single model (~17 min) and
``--recordings 120 --members 1`` the quick check (~10 min).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from guitar_cls.config import Config, config_from_dict, load_config
from guitar_cls.data.pipeline import cache_dataset
from guitar_cls.data.schema import LABELS, read_metadata
from guitar_cls.data.source import resolve_data
from guitar_cls.data.splits import make_splits
from guitar_cls.ensemble import combine
from guitar_cls.inference import predict_proba
from guitar_cls.logs import setup_logging
from guitar_cls.train.checkpoint import load_model, save_checkpoint
from guitar_cls.train.loop import fit
from guitar_cls.train.metrics import classification_metrics
from guitar_cls.train.ray_train import split_sets

log = logging.getLogger(__name__)

DEFAULT_MEMBERS = 3  # models averaged per direction: the shipped sweeps' budget.refit_members


def transfer(
    cfg: Config,
    df: pd.DataFrame,
    cache_path: str,
    quarantined: set[int],
    source: str,
    target: str,
    column: str,
    members: int = 1,
) -> dict[str, Any]:
    """Returns the target-domain metrics of the model trained (and early-stopped) on the source domain alone: the
    mean of the probabilities of ``members`` models, training seeds ``training.seed + i`` (one: that model itself),
    and under ``members`` each model's own figures, validation score, epochs and training time."""
    sets = split_sets(cache_path, transfer_rows(cfg, df, quarantined, source, target, column))
    labels = sets["test"].labels
    runs = []
    for i in range(members):
        seed = cfg.training.seed + i
        member_cfg = cfg if i == 0 else config_from_dict(cfg.to_dict(), [("training.seed", seed)])
        t0 = time.perf_counter()
        summary = fit(member_cfg, sets["train"], sets["val"], device=torch.device("cpu"))
        with tempfile.TemporaryDirectory(prefix="domain_gap_") as tmp:
            model, frontend, _ = load_model(save_checkpoint(summary["best_payload"], Path(tmp) / "best.pt"))
        probs = predict_proba(model, frontend, sets["test"], batch_size=cfg.training.batch_size)
        runs.append((seed, summary, probs, _scores(labels, probs), time.perf_counter() - t0))
    mean = combine(np.stack([r[2] for r in runs]), np.ones(members))  # jobs/ensemble.py's equal-weight mean
    out = {
        **_scores(labels, mean),
        "n_train": len(sets["train"]),
        "n_val": len(sets["val"]),
        "n_test": len(sets["test"]),
        "members": [
            {"seed": sd, **sc, "val_balanced_accuracy": round(float(sm["best_metric"]), 4),
             "epochs_run": int(sm["epochs_run"]), "train_s": round(t, 1)}
            for sd, sm, _, sc, t in runs
        ],
    }  # fmt: skip
    return out


def transfer_rows(
    cfg: Config, df: pd.DataFrame, quarantined: set[int], source: str, target: str, column: str
) -> dict[str, list[int]]:
    """Returns the rows ``{train, val, test}`` of the transfer ``source`` -> ``target``: the source's recordings split
    by ``cfg.splits`` (grouped), its own test share training too, and every row of the target as the test."""
    ok = ~df.index.isin(list(quarantined))
    src = df[(df[column] == source) & ok]
    tgt = df[(df[column] == target) & ok]
    if src.empty or tgt.empty:
        raise ValueError(f"no rows with {column} == {source!r} or {target!r} (found {sorted(df[column].unique())})")
    s = cfg.splits
    splits = make_splits(src, (s.train, s.val, s.test), seed=s.seed, group_col=s.group_by)
    return {
        "train": [int(r) for r in splits.index[splits != "val"]],
        "val": [int(r) for r in splits.index[splits == "val"]],
        "test": [int(r) for r in tgt.index],
    }


def _scores(labels: Any, probs: np.ndarray) -> dict[str, Any]:
    """Returns ``{balanced_accuracy, recall, f1}`` (per class) of the probabilities ``(N, 3)``."""
    m = classification_metrics(labels, probs)
    return {
        "balanced_accuracy": round(float(m["balanced_accuracy"]), 4),
        "recall": {label: round(float(m[f"recall/{label}"]), 4) for label in LABELS},
        "f1": {label: round(float(m[f"f1/{label}"]), 4) for label in LABELS},
    }


def demo_of_size(cfg: Config, recordings: int) -> Config:
    """Returns ``cfg`` with a demo set of ``recordings`` recordings: the configured one when it has that size, else
    one of its own beside it (``<data.demo_dir>-<recordings>``), so the default demo set is never regenerated."""
    if recordings == cfg.data.demo_recordings:
        return cfg
    demo_dir = f"{cfg.data.demo_dir.rstrip('/')}-{recordings}"
    # through the config's own checks: a bad --recordings is a ConfigError naming data.demo_recordings
    return config_from_dict(cfg.to_dict(), [("data.demo_dir", demo_dir), ("data.demo_recordings", recordings)])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmark.py domain-gap", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--metadata", help="metadata table (default: a demo set of --recordings recordings)")
    parser.add_argument(
        "--recordings", type=int, default=480, help="recordings of the demo set, half per source (default 480)"
    )
    parser.add_argument("--audio-root")
    parser.add_argument("--domains", default="synth,samples", help="two values of --column: A,B")
    parser.add_argument("--column", default="subset_id", help="the column that names each row's domain")
    parser.add_argument("--config", help="YAML config (default: the package defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument(
        "--members",
        type=int,
        default=DEFAULT_MEMBERS,
        help=f"models per direction, training seeds seed, seed+1, ... (default {DEFAULT_MEMBERS}, as the shipped "
        "sweeps register): the main figures are the mean of their probabilities, *_single_model_* the first's",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke-test", action="store_true", help="12-recording demo set, 1 epoch")
    args = parser.parse_args(argv)
    if args.members < 1:
        parser.error(f"--members must be at least 1, got {args.members}")
    setup_logging()
    overrides: list[str | tuple[str, Any]] = list(args.set)
    if args.metadata:
        overrides.append(("data.metadata", args.metadata))
        if args.audio_root:
            overrides.append(("data.audio_root", args.audio_root))
    tmp = None
    if args.smoke_test:
        tmp = tempfile.TemporaryDirectory(prefix="domain_gap_smoke_")
        overrides += [("data.demo_dir", f"{tmp.name}/demo"), ("data.demo_recordings", 12),
                      ("data.cache_dir", f"{tmp.name}/cache"), ("training.epochs", 1)]  # fmt: skip
    cfg = load_config(args.config, overrides)
    if not args.metadata and not args.smoke_test and cfg.data.metadata is None:
        cfg = demo_of_size(cfg, args.recordings)
    torch.set_num_threads(args.threads)
    a, b = [d.strip() for d in args.domains.split(",")]
    metadata, audio_root = resolve_data(cfg.data)
    df = read_metadata(metadata)
    cache = cache_dataset(df, audio_root, cfg.data)
    bad = set(cache.quarantine["row"].tolist()) if len(cache.quarantine) else set()
    results = {f"{src}_to_{tgt}": transfer(cfg, df, str(cache.path), bad, src, tgt, args.column, args.members)
               for src, tgt in ((a, b), (b, a))}  # fmt: skip
    line: dict[str, Any] = {
        "benchmark": "domain-gap", "metadata": str(metadata), "model": cfg.model.name, "members": args.members
    }  # fmt: skip
    for key, r in results.items():
        line[f"{key}_balanced_accuracy"] = r["balanced_accuracy"]
    for key, r in results.items():
        line[f"{key}_recall"] = r["recall"]
    if args.members > 1:
        for key, r in results.items():
            line[f"{key}_single_model_balanced_accuracy"] = r["members"][0]["balanced_accuracy"]
            line[f"{key}_single_model_recall"] = r["members"][0]["recall"]
    line["details"] = results
    print(json.dumps(line))
    if tmp is not None:
        tmp.cleanup()
    return 0
