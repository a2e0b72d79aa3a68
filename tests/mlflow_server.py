"""A real MLflow tracking server for tests (issue 15.3): ``mlflow server`` on 127.0.0.1 with a sqlite backend and the
artifact proxy, as the README's "Scaling out" runs it for a cluster. tests/test_cluster.py's submitted sweep logs to
it from both nodes, registers its champion there and loads it back through the proxy."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from procs import stop_group

from guitar_cls.data.pipeline import _free_port


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[tuple[str, Path]]:
    """Yields the URL of an ``mlflow server`` on 127.0.0.1 (sqlite store in ``folder``, artifacts proxied into
    ``folder/server-artifacts``) and that artifact folder; the server's process group is ended afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    artifacts = folder / "server-artifacts"
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--serve-artifacts",  # clients read and write artifacts through the server, never its folder
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # no GenAI job runner: it starts a runner and seven huey consumers, which slow the server's start for nothing here
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    log_path = folder / "server.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180  # ~10 s on an idle 2-core machine; minutes beside a loaded cluster
        while True:
            assert proc.poll() is None, f"mlflow server exited {proc.returncode}:\n{_tail(log_path)}"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5):
                    break
            except OSError:
                assert time.time() < deadline, f"{url}/health did not answer:\n{_tail(log_path)}"
                time.sleep(0.5)
        yield url, artifacts
    finally:
        stop_group(proc, grace_s=5)  # a throwaway store
        log.close()
