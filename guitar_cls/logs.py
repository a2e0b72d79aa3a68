"""Logging set-up shared by the jobs."""

from __future__ import annotations

import logging


def setup_logging(level: str = "INFO") -> None:
    """Configures the root logger once with a compact time-stamped format."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("matplotlib", "PIL", "numba", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
