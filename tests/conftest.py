"""Shared fixtures: a tiny demo data set (real WAV + XML files) and a local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The README's test command runs two pytest-xdist workers, ``-n 2 --dist loadfile --no-loadscope-reorder``: the tests
# of one file run in one worker, in order (a file's module fixtures start once; the cluster tests build on each
# other), and the files are handed out in collection order, these first — they take minutes each, and one of them
# started last would leave the other worker idle at the end.
# (Not `--dist loadgroup`: its xdist_group marks are ignored under pytest 9.2 — xdist 3.8 tags a group by rewriting
# `item._nodeid`, which pytest 9 no longer reads.)
_FIRST = ("test_jobs.py", "test_cluster.py", "test_ray_train.py")


def pytest_configure(config: pytest.Config) -> None:
    """In a pytest-xdist worker, its own torch work uses one thread: two workers with two threads each on two cores
    spin against each other. The processes the tests start (jobs, Ray workers) choose their threads themselves."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a pytest-xdist worker, the files of ``_FIRST`` come first (the order in which the files are handed out)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: _FIRST.index(item.path.name) if item.path.name in _FIRST else len(_FIRST))


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Returns the metadata.csv of a 12-recording demo data set (every class in every split)."""
    from guitar_cls.data.synth import make_demo_dataset

    out = tmp_path_factory.mktemp("tiny_demo")
    return make_demo_dataset(out, n_recordings=12, seed=1)


@pytest.fixture(scope="session")
def ray_local():
    """Starts one local Ray instance (dashboard on, 2 CPUs) for the whole session."""
    import ray

    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def _isolated_mlflow_uris():
    """Each test starts with MLflow's process-wide tracking and registry URIs as the session had them, and whatever a
    test sets (``configure_mlflow`` pins both) is put back after it: a registry URI left pinned to one test's store
    made a later test load another store's ``models:/…/1``."""
    import mlflow_uris

    with mlflow_uris.restored():
        yield
