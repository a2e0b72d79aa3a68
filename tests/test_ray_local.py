"""The local Ray that jobs start (``pipeline.init_ray``) beside another Ray instance on the same machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from guitar_cls.data import pipeline
from guitar_cls.data.pipeline import _free_port

PROBE = """
import os, ray
from guitar_cls.data.pipeline import init_ray
init_ray()

@ray.remote(num_cpus=0)
def probe():
    from ray.util.state import list_actors  # what Train's placement-group cleaner asks
    list_actors()  # raises "Found multiple active Ray instances" when the worker cannot tell its cluster
    return os.environ.get("RAY_ADDRESS")

address = ray.get(probe.remote())
print("PROBE", address, ray.get_runtime_context().gcs_address)
"""


def test_free_port_never_returns_a_port_twice(monkeypatch):
    """The OS may give a closed probe socket's port out again; ``ray start`` refuses one port named for two
    components (the head's GCS and metrics-export ports once came out equal in CI)."""
    import socket

    offered = iter([40001, 40001, 40002, 40001, 40003])

    class Probe:  # what the OS would answer: the same free port again, twice
        def __init__(self) -> None:
            self.port = next(offered)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def bind(self, address) -> None:
            pass

        def getsockname(self):
            return ("0.0.0.0", self.port)

    monkeypatch.setattr(pipeline, "_PORTS_GIVEN", set())
    monkeypatch.setattr(socket, "socket", Probe)
    assert [_free_port(), _free_port(), _free_port()] == [40001, 40002, 40003]


@pytest.mark.slow
def test_workers_find_their_own_cluster_beside_another_ray():
    """Ray's state API in a worker searches the machine for a cluster and fails when it finds two; Train's
    placement-group cleaner then dies, and a trial stopped by Tune keeps its CPUs reserved for good."""
    temp_dir = tempfile.mkdtemp(prefix="/tmp/rt")  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    other = subprocess.Popen(
        [Path(sys.executable).with_name("ray"), "start", "--head", "--block", "--num-cpus=0",
         f"--port={_free_port()}", f"--temp-dir={temp_dir}", "--include-dashboard=false",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not list(Path(temp_dir).glob("session_*/logs/gcs_server.out")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert other.poll() is None, "the other Ray instance did not start"
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-3000:]
        line = next(x for x in done.stdout.splitlines() if x.startswith("PROBE"))
        _, worker_address, gcs_address = line.split()
        assert worker_address == gcs_address
    finally:
        other.terminate()
        other.wait(timeout=60)
