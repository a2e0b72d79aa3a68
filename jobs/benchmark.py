"""Benchmarks that print one JSON line each.

Usage: python jobs/benchmark.py NAME [options], NAME one of: duration-baseline, featurize, train, profile, latency,
segmentation, domain-gap, search, gpu
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "duration-baseline": "guitar_cls.benchmarks.duration",
    "featurize": "guitar_cls.benchmarks.featurize",
    "train": "guitar_cls.benchmarks.train",
    "profile": "guitar_cls.benchmarks.profile",
    "latency": "guitar_cls.benchmarks.latency",
    "segmentation": "guitar_cls.benchmarks.segmentation",
    "domain-gap": "guitar_cls.benchmarks.domain_gap",
    "search": "guitar_cls.benchmarks.search",
    "gpu": "guitar_cls.benchmarks.gpu",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: benchmark.py {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
