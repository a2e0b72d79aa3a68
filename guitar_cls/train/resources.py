"""How a Ray cluster's CPUs and GPUs are shared between Train workers and sweep trials, node by node.

A Train worker reserves its CPUs (and GPU) on one node, so the plan is made from each node's resources, not the
cluster's totals: two 1-CPU nodes hold two 1-CPU workers, never one 2-CPU worker. A sweep trial's driver (the Tune
trial that runs the TorchTrainer) mostly waits for its workers: it reserves memory only (``DRIVER_RESOURCES``), so a
trial fits on any node its workers fit on, and a trial whose node was lost can run again on any surviving one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

WORKER_NODES = "worker_nodes"  # a reported metric: the Ray node id of each worker rank, rank 0 first, comma-joined
DRIVER_MEMORY = 512 * 2**20  # bytes of Ray's logical "memory" a trial driver reserves (it holds no CPU)
DRIVER_RESOURCES: dict[str, float] = {"CPU": 0, "memory": DRIVER_MEMORY}
MAX_CPUS_PER_WORKER = 4  # CPU training: more threads per worker gain little for these small CNNs
MAX_CPUS_PER_GPU_WORKER = 8  # data loading and the feature front end beside a GPU


@dataclass
class ResourcePlan:
    """How many trials run at once and what each Train worker reserves and uses."""

    use_gpu: bool
    cpus_per_worker: int  # reserved from Ray per worker
    threads_per_worker: int  # torch threads per worker
    max_concurrent: int  # trials at once: the worker groups the nodes hold side by side


def node_list(value: str | Sequence[str] | None) -> list[str]:
    """Returns the node ids of a ``WORKER_NODES`` metric (a comma-joined string: a list would make Tune's
    TensorBoard logger warn; a list is taken too)."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    return [str(n) for n in items if n]


def node_resources() -> list[dict[str, float]]:
    """Returns the resources (``CPU``, ``GPU``, ``memory``, custom ones) of every alive node of the connected Ray."""
    import ray

    return [dict(n.get("Resources") or {}) for n in ray.nodes() if n.get("Alive")]


def plan_resources(num_workers: int, nodes: Sequence[dict[str, float]] | None = None) -> ResourcePlan:
    """Returns the plan for groups of ``num_workers`` workers on ``nodes`` (default: the connected cluster's).

    GPU cluster (at least ``num_workers`` GPUs): one worker per GPU with the CPUs of its share of a GPU node (at most
    ``MAX_CPUS_PER_GPU_WORKER``), one trial per group of ``num_workers`` GPUs. CPU only: each worker reserves up to
    ``MAX_CPUS_PER_WORKER`` CPUs, no more than the largest node has; every node holds as many workers as fit, and a
    worker's threads are its share of its node (a 2-CPU laptop: one trial, a 2-thread worker; two 1-CPU nodes: two
    trials, one 1-thread worker on each node).
    """
    nodes = node_resources() if nodes is None else list(nodes)
    gpu_nodes = [n for n in nodes if int(n.get("GPU", 0)) >= 1]
    gpus = sum(int(n["GPU"]) for n in gpu_nodes)
    if gpus >= num_workers >= 1:
        share = min(int(n.get("CPU", 0)) // int(n["GPU"]) for n in gpu_nodes)
        per_worker = max(1, min(MAX_CPUS_PER_GPU_WORKER, share))
        return ResourcePlan(True, per_worker, per_worker, max(1, gpus // num_workers))
    cpus = [int(n.get("CPU", 0)) for n in nodes if int(n.get("CPU", 0)) >= 1] or [1]
    per_worker = max(1, min(MAX_CPUS_PER_WORKER, sum(cpus) // max(1, num_workers), max(cpus)))
    slots = [c // per_worker for c in cpus]
    threads = min(c // s for c, s in zip(cpus, slots) if s)
    return ResourcePlan(False, per_worker, max(1, threads), max(1, sum(slots) // max(1, num_workers)))


__all__ = ["DRIVER_RESOURCES", "WORKER_NODES", "ResourcePlan", "node_list", "node_resources", "plan_resources"]
