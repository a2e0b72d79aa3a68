"""MLflow's process-wide tracking and registry URIs, put back exactly after a block of test code."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def restored() -> Iterator[None]:
    """Puts back MLflow's tracking and registry URIs (an unset one stays unset: get/set_registry_uri would pin it) and
    both variables ``mlflow.set_tracking_uri``/``set_registry_uri`` export (a variable that was unset is removed:
    ``monkeypatch.delenv`` of an unset variable records nothing to undo, and a stopped server's URL left there by
    tests/test_cluster.py made every later registration call that server)."""
    import mlflow

    holders = ((mlflow.tracking._tracking_service.utils, "_tracking_uri"),
               (mlflow.tracking._model_registry.utils, "_registry_uri"))  # fmt: skip
    uris = [getattr(module, attr) for module, attr in holders]
    env = {var: os.environ.get(var) for var in VARIABLES}
    try:
        yield
    finally:
        for (module, attr), uri in zip(holders, uris):
            setattr(module, attr, uri)
        for var, value in env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
