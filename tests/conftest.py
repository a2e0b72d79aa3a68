"""Shared fixtures: a tiny demo data set (real WAV + XML files) and a local Ray instance."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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


@pytest.fixture(scope="session")
def interrupted_sweep(tmp_path_factory: pytest.TempPathFactory):
    """The smoke sweep Ctrl-C'd, resumed and SIGKILLed mid-trial, then resumed to its end, once for the session
    (``test_jobs.run_interrupted_sweep``): the Ctrl-C test (tests/test_jobs.py) and the killed-driver test
    (tests/test_faults.py) each check their part of it."""
    import test_jobs

    return test_jobs.run_interrupted_sweep(tmp_path_factory.mktemp("interrupted-sweep"))


@pytest.fixture(autouse=True)
def _isolated_mlflow_uris():
    """Each test starts with MLflow's process-wide tracking and registry URIs as the session had them, and whatever a
    test sets (``configure_mlflow`` pins both) is put back after it: a registry URI left pinned to one test's store
    made a later test load another store's ``models:/…/1``."""
    import mlflow_uris

    with mlflow_uris.restored():
        yield
