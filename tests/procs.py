"""Ending the processes tests start in their own process group (``start_new_session=True``): a server, a sweep."""

from __future__ import annotations

import os
import signal
import subprocess


def stop_group(proc: subprocess.Popen, grace_s: float) -> None:
    """Ends ``proc`` and its children (its own process group): TERM, then KILL if still running after ``grace_s``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
