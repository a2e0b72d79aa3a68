"""The ``--smoke-test`` settings shared by the jobs: the smoke sweep's tiny data and model, one epoch, CPU.

One source: the tiny settings are those of ``search_spaces/smoke.yaml`` (its ``data`` and ``fixed`` sections, read
here as plain YAML: ``train`` does not import ``tune``); a job's smoke test adds its own demo folder, one epoch and
CPU. ``jobs/sweep.py --smoke-test`` runs that space itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SMOKE_SPACE = Path(__file__).resolve().parents[2] / "search_spaces" / "smoke.yaml"
JOB_ONLY: tuple[tuple[str, Any], ...] = (
    ("data.demo_dir", "data/demo-smoke"),
    ("training.epochs", 1),
    ("training.use_gpu", False),
)


def smoke_overrides(space: str | Path = SMOKE_SPACE) -> list[tuple[str, Any]]:
    """Returns the config overrides of a job's ``--smoke-test``: the smoke space's ``data`` (as ``data.<key>``) and
    ``fixed`` entries, as its trials get them, then ``JOB_ONLY``."""
    spec = yaml.safe_load(Path(space).read_text()) or {}
    shared = [(f"data.{k}", v) for k, v in (spec.get("data") or {}).items()] + list((spec.get("fixed") or {}).items())
    return [*shared, *JOB_ONLY]
