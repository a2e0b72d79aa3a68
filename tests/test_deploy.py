"""deploy/ (issue 15.5): the KubeRay RayJob and the Ray cluster-launcher config load, keep GPUs off the head and give
each worker one, and run the README's sweep entrypoint with a space that exists and `--set` keys the config knows."""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import pytest
import yaml

from guitar_cls.config import load_config
from guitar_cls.data.source import data_overrides
from guitar_cls.tune.space import load_space

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
URI_VARS = ("MLFLOW_TRACKING_URI", "GUITAR_CLS_STORAGE")  # read by tracking.tracking_uri and train.run
# Field names of the KubeRay v1 CRD (ray.io_rayjobs.yaml, KubeRay 1.7): a misspelt field is dropped by the API server
RAYJOB_FIELDS = {
    "activeDeadlineSeconds", "backoffLimit", "clusterSelector", "deletionStrategy", "entrypoint", "entrypointNumCpus",
    "entrypointNumGpus", "entrypointResources", "jobId", "managedBy", "metadata", "preRunningDeadlineSeconds",
    "rayClusterSpec", "runtimeEnvYAML", "shutdownAfterJobFinishes", "submissionMode", "submitterConfig",
    "submitterPodTemplate", "suspend", "ttlSecondsAfterFinished",
}  # fmt: skip
CLUSTER_FIELDS = {
    "authOptions", "autoscalerOptions", "enableInTreeAutoscaling", "gcsFaultToleranceOptions", "headGroupSpec",
    "headServiceAnnotations", "historyServerOptions", "managedBy", "networkPolicy", "rayVersion", "suspend",
    "tlsOptions", "upgradeStrategy", "workerGroupSpecs",
}  # fmt: skip
HEAD_FIELDS = {
    "enableIngress", "headService", "ingressOptions", "labels", "rayStartParams", "resources", "serviceType",
    "template",
}  # fmt: skip
WORKER_FIELDS = {
    "groupName", "idleTimeoutSeconds", "labels", "maxReplicas", "minReplicas", "numOfHosts", "rayStartParams",
    "replicas", "resources", "scaleStrategy", "suspend", "template",
}  # fmt: skip


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return yaml.safe_load((DEPLOY / "kuberay-rayjob.yaml").read_text())


@pytest.fixture(scope="module")
def launcher() -> dict:
    return yaml.safe_load((DEPLOY / "cluster-gpu.yaml").read_text())


def _gpus(container: dict) -> set[str]:
    res = container.get("resources") or {}
    return {str(res.get(kind, {}).get("nvidia.com/gpu", 0)) for kind in ("limits", "requests")}


def _ray_minor() -> str:
    import ray

    return ".".join(ray.__version__.split(".")[:2])


def test_rayjob_uses_known_fields_a_cpu_head_and_one_gpu_per_worker(rayjob) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert set(spec) <= RAYJOB_FIELDS and spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert set(cluster) <= CLUSTER_FIELDS and cluster["rayVersion"].startswith(_ray_minor() + ".")
    head = cluster["headGroupSpec"]
    assert set(head) <= HEAD_FIELDS and head["rayStartParams"]["num-gpus"] == "0"
    assert all(_gpus(c) == {"0"} for c in head["template"]["spec"]["containers"])
    assert cluster["workerGroupSpecs"]
    for group in cluster["workerGroupSpecs"]:
        assert set(group) <= WORKER_FIELDS and group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (worker,) = group["template"]["spec"]["containers"]
        assert _gpus(worker) == {"1"} and group["rayStartParams"].get("num-gpus", "1") == "1"
    images = {c["image"] for g in [head, *cluster["workerGroupSpecs"]] for c in g["template"]["spec"]["containers"]}
    assert len(images) == 1  # the submitter pod runs the head's image too: it uploads working_dir from it


def test_rayjob_takes_the_uris_from_placeholder_variables(rayjob) -> None:
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert env["working_dir"] == "/home/ray/guitar_cls"  # where deploy/Dockerfile puts jobs/ and search_spaces/
    values = env["env_vars"]
    assert set(URI_VARS) <= set(values) and all("CHANGE_ME" in values[k] for k in URI_VARS)
    assert values["MLFLOW_TRACKING_URI"].startswith("http://")


def _sweep_args(entrypoint: str) -> dict[str, list[str]]:
    """Returns option -> values of a ``python jobs/sweep.py ...`` command; an option jobs/sweep.py lacks fails."""
    words = shlex.split(entrypoint)
    assert words[:2] == ["python", "jobs/sweep.py"], entrypoint
    declared = set(re.findall(r'add_argument\(\s*"(--[a-z-]+)"', (ROOT / "jobs" / "sweep.py").read_text()))
    args: dict[str, list[str]] = {}
    it = iter(words[2:])
    for word in it:
        assert word in declared, f"jobs/sweep.py has no option {word}"
        args.setdefault(word, []).append(next(it))
    return args


def test_the_entrypoint_runs_a_space_that_exists_with_valid_config_keys(rayjob) -> None:
    args = _sweep_args(rayjob["spec"]["entrypoint"])
    (space,) = args["--space"]
    assert Path(space).parent == Path("search_spaces") and (ROOT / space).is_file()
    load_space(ROOT / space)
    env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])["env_vars"]
    overrides = [
        *args.get("--set", []),
        *data_overrides(args.get("--data", []), args.get("--audio-root", [])),
        ("logging.mlflow_uri", env["MLFLOW_TRACKING_URI"]),
        ("logging.storage_path", env["GUITAR_CLS_STORAGE"]),
    ]
    cfg = load_config(None, overrides)  # ConfigError names an unknown key or a wrong type
    assert cfg.logging.output_dir.startswith("/shared/") and cfg.data.cache_dir.startswith("/shared/")
    assert cfg.data.metadata == "/shared/idmt.csv"  # on the volume every pod mounts at /shared
    mounts = {m["mountPath"] for g in [rayjob["spec"]["rayClusterSpec"]["headGroupSpec"],
                                       *rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
              for c in g["template"]["spec"]["containers"] for m in c.get("volumeMounts", [])}  # fmt: skip
    assert "/shared" in mounts


def _submitted(text: str) -> list[str]:
    """Returns the command after ``--`` of every ``ray job submit`` in ``text`` (Markdown or ``#`` comments), with
    continuation lines joined."""
    lines = [re.sub(r"^\s*#\s?", "", line) for line in text.splitlines()]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [" ".join(m.split()) for m in re.findall(r"ray job submit .*? -- (.*)", joined)]


def test_rayjob_launcher_and_readme_submit_the_same_entrypoint(rayjob) -> None:
    entrypoint = " ".join(rayjob["spec"]["entrypoint"].split())
    assert entrypoint in _submitted((ROOT / "README.md").read_text())
    assert _submitted((DEPLOY / "cluster-gpu.yaml").read_text()) == [entrypoint]


def test_launcher_config_passes_ray_up_validation_with_a_cpu_head_and_1_gpu_workers(launcher, rayjob) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(launcher)))  # what `ray up` checks: ray's schema, node types
    types = launcher["available_node_types"]
    head = launcher["head_node_type"]
    assert types[head]["resources"].get("GPU", 0) == 0
    assert "--num-gpus=0" in " ".join(launcher["head_start_ray_commands"])
    workers = [t for name, t in types.items() if name != head]
    assert workers and all(t["resources"]["GPU"] == 1 for t in workers)
    assert "--num-gpus=1" in " ".join(launcher["worker_start_ray_commands"])
    image = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert launcher["docker"]["image"] == image
    options = launcher["docker"]["run_options"]
    env = dict(o.removeprefix("--env ").split("=", 1) for o in options if o.startswith("--env "))
    assert set(URI_VARS) <= set(env) and all("CHANGE_ME" in env[k] for k in URI_VARS)
    assert "--volume /shared:/shared" in options


def test_the_image_is_rays_gpu_image_with_what_the_entrypoint_reads() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert re.fullmatch(rf"rayproject/ray:{re.escape(_ray_minor())}\.\d+-py311-gpu", base)
    assert "WORKDIR /home/ray/guitar_cls" in text
    copied = {w for line in re.findall(r"^COPY (.*)", text, flags=re.M) for w in line.split()[1:-1]}
    assert {"jobs", "search_spaces", "guitar_cls", "pyproject.toml"} <= copied
