"""The ``--smoke-test`` settings shared by the jobs: a tiny demo set, a tiny model, one epoch, CPU."""

from __future__ import annotations

SMOKE_OVERRIDES: list[tuple[str, object]] = [
    ("data.demo_dir", "data/demo-smoke"),
    ("data.demo_recordings", 12),
    ("training.epochs", 1),
    ("training.use_gpu", False),
    ("model.name", "resnet"),
    ("model.params", {"base_width": 8, "blocks": [1, 1, 1, 1]}),
]
