"""Issue 15 (items 1-4): a real two-node Ray cluster on this machine, results in a real S3-protocol object store
(moto's server on 127.0.0.1), runs and the registry on a real MLflow tracking server (``mlflow server`` on 127.0.0.1,
sqlite store, artifact proxy) and the loss of a node mid-trial.

One module-scoped fixture starts the object store and the cluster once: a head (``ray start --head``, 1 CPU, custom
resource ``node_a``, 127.0.0.1) and a second node (``ray start --address``, 1 CPU, ``node_b``, 127.0.0.2: another
loopback address, as a second machine would have its own), each with its own ports and temp dir. Every
Ray process inherits the object store's endpoint and credentials (``AWS_*``), as nodes with an instance role would.
The tests run in order and share the cluster, the demo data and its waveform cache (a local folder, which both
nodes see); the last one stops the second node for good.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import mlflow_server
import pytest
import test_jobs as jobs
import yaml

from guitar_cls.data.pipeline import _free_port
from guitar_cls.tune.record import SweepRecord, read_curves

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "guitar-cls"
STORAGE = f"s3://{BUCKET}/ray_results"
HEAD_IP, SECOND_IP = "127.0.0.1", "127.0.0.2"
# a node that stops answering is dead after ~3 s instead of Ray's ~15 s (3 failed checks, one a second)
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
pytestmark = pytest.mark.slow


@dataclass
class Cluster:
    """The running two-node cluster and object store, and what the tests share."""

    tmp: Path
    env: dict[str, str]  # for every command: the object store's endpoint and credentials, no token auth
    gcs: str  # head's GCS address (RAY_ADDRESS for a driver on this machine)
    dashboard: str  # the job server's URL
    temp_dirs: dict[str, str]  # node resource -> that node's Ray temp dir
    node_ids: dict[str, str] = field(default_factory=dict)  # node resource -> Ray node id
    demo: Path = Path()

    def sets(self, *extra: str, output: str = "outputs") -> list[str]:
        """Returns the jobs' --set arguments: an output folder, the shared demo data and cache, results in S3."""
        items = [f"logging.output_dir={self.tmp / output}", f"data.demo_dir={self.demo}",
                 f"data.cache_dir={self.tmp / 'cache'}", f"logging.storage_path={STORAGE}", *extra]  # fmt: skip
        return [arg for item in items for arg in ("--set", item)]

    def driver_env(self) -> dict[str, str]:
        """Returns the environment of a driver on this machine that joins the cluster (as `ray job submit` does)."""
        return {**self.env, "RAY_ADDRESS": self.gcs}


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{proc.args} exited {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def _start_node(ray: str, env: dict[str, str], temp: str, args: list[str]) -> None:
    """Runs ``ray start`` for a 1-CPU node with its own temp dir and ports (the defaults clash on one machine)."""
    ports = {
        "node-manager-port": _free_port(),
        "object-manager-port": _free_port(),
        "metrics-export-port": _free_port(),
        "dashboard-agent-listen-port": _free_port(),
        "dashboard-agent-grpc-port": _free_port(),
        "runtime-env-agent-port": _free_port(),
    }
    cmd = [ray, "start", "--num-cpus=1", "--object-store-memory=150000000", "--disable-usage-stats",
           f"--temp-dir={temp}", *[f"--{k}={v}" for k, v in ports.items()], *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _alive_nodes(dashboard: str) -> dict[str, str]:
    """Returns node resource (``node_a``/``node_b``) -> node id of every alive node, from the State API."""
    with urllib.request.urlopen(f"{dashboard}/api/v0/nodes?detail=1&limit=100", timeout=10) as resp:
        nodes = json.loads(resp.read())["data"]["result"]["result"]
    out = {}
    for n in nodes:
        if n["state"] == "ALIVE":
            for key in ("node_a", "node_b"):
                if key in (n.get("resources_total") or {}):
                    out[key] = n["node_id"]
    return out


def _s3(env: dict[str, str]):
    """Returns a boto3 S3 client of the object store named in ``env``."""
    import boto3

    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"])  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[Cluster]:
    """Starts moto's S3 server (bucket ``BUCKET``) and the two nodes; kills them all (by temp dir) at the end."""
    tmp = tmp_path_factory.mktemp("cluster")
    bin_dir = Path(sys.executable).parent
    s3_port = _free_port()
    moto = subprocess.Popen([str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    env = jobs._env(tmp)
    env |= {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    parent = tempfile.mkdtemp(prefix="raycl", dir="/tmp")  # short: Ray's socket paths must stay under 107 chars
    temps = {k: os.path.join(parent, k[-1]) for k in ("node_a", "node_b")}
    gcs, dash = _free_port(), _free_port()
    # Ray's processes find their cluster's State API here (Train's placement-group cleaner: with two Ray instances on
    # one machine, e.g. another test's, it cannot tell which is its own and a lost node's placement group leaks)
    env["RAY_API_SERVER_ADDRESS"] = f"http://{HEAD_IP}:{dash}"
    ray = str(bin_dir / "ray")
    try:
        _start_node(ray, env, temps["node_a"], [
            "--head", f"--node-ip-address={HEAD_IP}", f"--port={gcs}", '--resources={"node_a": 1}',
            "--include-dashboard=true", f"--dashboard-host={HEAD_IP}", f"--dashboard-port={dash}",
            f"--ray-client-server-port={_free_port()}", f"--system-config={json.dumps(HEALTH_CHECKS)}",
        ])  # fmt: skip
        _start_node(
            ray,
            env,
            temps["node_b"],
            [f"--address={HEAD_IP}:{gcs}", f"--node-ip-address={SECOND_IP}", '--resources={"node_b": 1}'],
        )
        _wait_http(f"http://127.0.0.1:{s3_port}/", moto, 60)  # started first, ready by now
        _s3(env).create_bucket(Bucket=BUCKET)
        c = Cluster(tmp, env, f"{HEAD_IP}:{gcs}", f"http://{HEAD_IP}:{dash}", temps, demo=tmp / "demo")
        deadline = time.time() + 60
        while len(c.node_ids) < 2 and time.time() < deadline:
            try:
                c.node_ids = _alive_nodes(c.dashboard)
            except OSError:
                pass
            time.sleep(1)
        assert len(c.node_ids) == 2, c.node_ids
        yield c
    finally:
        jobs._kill_cluster(parent)  # both nodes; not `ray stop`: that would stop every Ray instance on the machine
        moto.terminate()
        moto.wait(timeout=30)


@pytest.fixture(scope="module")
def tracking(cluster) -> Iterator[tuple[str, Path]]:
    """Yields the URL of the MLflow tracking server every node logs to, and the folder its proxy stores artifacts in
    (the README's "Scaling out": runs and the registry on one server when several machines log)."""
    with mlflow_server.serve(cluster.tmp / "mlflow-server") as served:
        yield served


@pytest.fixture()
def s3_env(cluster, monkeypatch) -> None:
    """This process reads the object store like the cluster's nodes (its endpoint and credentials)."""
    for key, value in cluster.env.items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)


def _keys(env: dict[str, str], prefix: str) -> list[str]:
    """Returns the object keys under ``prefix`` in the bucket (listed through the S3 API)."""
    keys = []
    for page in _s3(env).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _space(cluster: Cluster, name: str, fixed: dict | None = None, **budget: int) -> Path:
    """Writes the smoke space with ``budget`` and ``fixed`` entries replaced and returns its path."""
    spec = yaml.safe_load((ROOT / "search_spaces" / "smoke.yaml").read_text())
    spec["budget"].update(budget)
    spec["fixed"].update(fixed or {})
    path = cluster.tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _manifest(cluster: Cluster) -> Path:
    (manifest,) = (cluster.tmp / "cache").glob("*/manifest.json")
    return manifest


def test_a_submitted_sweep_runs_its_trials_on_both_nodes_with_results_in_s3(cluster, s3_env, tracking):
    """Two trials at once (the plan: one 1-CPU worker per node) through `ray job submit`; the Tune experiment and
    every checkpoint in S3; every run and the champion on the tracking server, its model files through the server's
    artifact proxy (nothing in the output folder); the record, --resume (a Tuner restored from S3) and the report
    work from there."""
    url, artifacts = tracking
    space = _space(cluster, "two-nodes", max_concurrent_trials=2)
    submit = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", cluster.dashboard,
              "--working-dir", str(ROOT), "--", "python", "jobs/sweep.py", "--space", str(space), "--name",
              "two-nodes", *cluster.sets(f"logging.mlflow_uri={url}")]  # fmt: skip
    for _ in range(15):  # the dashboard agent takes a few seconds to accept jobs after `ray start`
        proc = subprocess.run(submit, cwd=ROOT, env=cluster.env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in proc.stderr:
            break
        time.sleep(2)
    assert proc.returncode == 0 and "succeeded" in proc.stdout, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert "waveform cache miss" in proc.stdout  # built once, here, by the job's driver

    sweep_dir = cluster.tmp / "outputs" / "sweeps" / "two-nodes"
    record = SweepRecord.read(sweep_dir)
    assert [t.status for t in record.trials] == ["TERMINATED", "TERMINATED"]
    nodes = [n for t in record.trials for n in t.worker_nodes]
    assert sorted(nodes) == sorted(cluster.node_ids.values())  # one trial's worker on each node
    assert all(t.checkpoint_path.startswith(f"{STORAGE}/train-") for t in record.trials)
    keys = _keys(cluster.env, "ray_results/")
    assert any(k.startswith("ray_results/two-nodes/") for k in keys)
    for t in record.trials:  # each trial's best checkpoint is an object in the bucket
        assert t.checkpoint_path.removeprefix(f"s3://{BUCKET}/") + "/best.pt" in keys
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["storage_path"] == STORAGE and Path(summary["checkpoint"]).is_file()  # a local copy, tested
    assert not (cluster.tmp / "outputs" / "ray_results").exists()
    jobs.check_registered_champion(cluster.tmp / "outputs", "two-nodes", uri=url)  # registered by the submitted job
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url, registry_uri=url)
    champion = client.get_model_version_by_alias("guitar-note-classifier", "champion")
    assert client.get_run(champion.run_id).data.tags["sweep"] == "two-nodes"
    experiment = client.get_experiment_by_name("guitar-note-classifier").experiment_id
    runs = client.search_runs([experiment], "tags.trial_id != ''")  # one run per trial, both nodes' on the server
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(t.trial_id for t in record.trials)
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert logged.artifact_location.startswith("mlflow-artifacts:")  # proxied: no node saw the server's folder
    outputs = cluster.tmp / "outputs"
    assert list(artifacts.rglob("MLmodel")) and not (outputs / "mlartifacts").exists()
    assert not (outputs / "mlflow.db").exists()

    from guitar_cls.tune.sweep import SweepNameInUse, run_sweep

    fresh = [("logging.output_dir", str(cluster.tmp / "elsewhere")), ("logging.storage_path", STORAGE)]
    with pytest.raises(SweepNameInUse, match=f"{STORAGE}/two-nodes"):  # the name is taken in S3 alone
        run_sweep(space, overrides=fresh, name="two-nodes")

    curves = read_curves(f"{STORAGE}/two-nodes")  # Tune's per-epoch results, read back from S3
    resume = [sys.executable, "jobs/sweep.py", "--space", str(space), "--name", "two-nodes", "--resume",
              "--no-register", *cluster.sets(f"logging.mlflow_uri={url}")]  # fmt: skip
    resumed = subprocess.run(resume, cwd=ROOT, env=cluster.driver_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    assert f"resuming sweep two-nodes from {STORAGE}/two-nodes" in resumed.stderr
    summary = jobs._last_json(resumed.stdout)
    assert summary["trials"] == 2 and summary["errors"] == 0
    again = read_curves(f"{STORAGE}/two-nodes")
    assert (
        {k: len(v) for k, v in again.items()}
        == {k: len(v) for k, v in curves.items()}
        == {t.trial_id: 2 for t in record.trials}
    )  # finished trials are not run again

    from guitar_cls.report import build_report

    report = build_report("two-nodes", cluster.tmp / "report", output_dir=cluster.tmp / "outputs",
                          evaluate_champion=False)  # fmt: skip
    text = report.path.read_text()
    assert "## Learning curves" in text and "No per-epoch results found" not in text  # curves read from S3


def test_the_two_ddp_ranks_of_one_training_run_on_different_nodes(cluster):
    """`jobs/train.py --set training.num_workers=2`: one 1-CPU rank per node (gloo between 127.0.0.1 and
    127.0.0.2), checkpoints in S3; the waveform cache the sweep built is read, never rebuilt."""
    manifest = _manifest(cluster)
    built = manifest.stat().st_mtime_ns
    cmd = [sys.executable, "jobs/train.py", "--smoke-test", "--name", "ddp", *cluster.sets("training.num_workers=2")]
    proc = subprocess.run(cmd, cwd=ROOT, env=cluster.driver_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    line = jobs._last_json(proc.stdout)
    assert sorted(line["worker_nodes"]) == sorted(cluster.node_ids.values())
    assert line["epochs_reported"] == [0] and 0.0 <= line["test/balanced_accuracy"] <= 1.0
    assert any(k.startswith("ray_results/ddp/checkpoint_") for k in _keys(cluster.env, "ray_results/ddp/"))
    assert "waveform cache hit" in proc.stderr and "waveform cache miss" not in proc.stderr
    assert manifest.stat().st_mtime_ns == built


class _Blocker:
    """A driver on this machine holding an actor that takes the head's CPU and all its memory resource: until it is
    released, a new trial's driver and its worker can only go to the second node."""

    SCRIPT = """
import ray, sys
ray.init()
head = next(n for n in ray.nodes() if n["Alive"] and "node_a" in n["Resources"])
@ray.remote
class Hold:
    def ready(self):
        return True
hold = Hold.options(num_cpus=1, memory=head["Resources"]["memory"], resources={"node_a": 1}).remote()
ray.get(hold.ready.remote())
print("held", flush=True)
sys.stdin.read()
"""

    def __init__(self, cluster: Cluster) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", self.SCRIPT], env=cluster.driver_env(), text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # the driver exits and its actor with it
            self.proc.wait(timeout=60)


def _kill_node(marker: str) -> None:
    """SIGKILLs every process whose command line names ``marker`` (a node's temp dir): the node is lost at once."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker.encode() in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


def _first_epoch_logged(db: Path) -> str | None:
    """Returns the trial id whose MLflow run has epoch 0's metrics (Tune has the result, Train the checkpoint)."""
    import sqlite3

    if not db.is_file():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            row = con.execute(
                "select t.value from metrics m join tags t on t.run_uuid = m.run_uuid and t.key = 'trial_id' "
                "where m.key = 'epoch' limit 1"
            ).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def test_a_trial_survives_losing_its_node_and_resumes_from_its_checkpoint(cluster, s3_env):
    """The trial starts on the second node (the head held), that node is killed during epoch 1: Tune runs the trial
    again (``training.max_failures``) on the head, Train resumes it from its checkpoint in S3, one MLflow run."""
    manifest = _manifest(cluster)
    built = manifest.stat().st_mtime_ns
    patience = {"training.early_stopping_patience": 10}  # all 6 epochs run, whatever the scores
    space = _space(cluster, "node-loss", patience, num_samples=1, max_epochs=6)  # epochs of ~1 s: time to kill
    out = cluster.tmp / "outputs-node-loss"  # its own MLflow store: the only trial there is this sweep's
    cmd = [sys.executable, "jobs/sweep.py", "--space", str(space), "--name", "node-loss", "--no-register",
           *cluster.sets(output=out.name)]  # fmt: skip
    blocker = _Blocker(cluster)
    sweep = subprocess.Popen(cmd, cwd=ROOT, env=cluster.driver_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(sweep.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 240
        trial = None
        while trial is None and time.time() < deadline and sweep.poll() is None:
            trial = _first_epoch_logged(out / "mlflow.db")
            time.sleep(0.3)
        assert trial, "epoch 0 never reported:\n" + "".join(output)[-5000:]
        _kill_node(cluster.temp_dirs["node_b"])  # raylet, object store, workers: all at once, during epoch 1
        blocker.release()  # the head takes the rerun trial
        sweep.wait(timeout=300)
    finally:
        blocker.release()
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
            sweep.wait()
    reader.join(timeout=10)
    text = "".join(output)
    assert sweep.returncode == 0, text[-6000:]
    summary = jobs._last_json(text)
    assert summary["trials"] == 1 and summary["errors"] == 0

    (t,) = SweepRecord.read(out / "sweeps" / "node-loss").trials
    assert (t.trial_id, t.status, t.stop_reason, t.epochs) == (trial, "TERMINATED", "completed", 6), t
    assert t.worker_nodes == [cluster.node_ids["node_a"]]  # finished on the surviving node
    curve = read_curves(f"{STORAGE}/node-loss")[trial]
    epochs = curve["epoch"].tolist()  # an epoch whose result was in flight when the node died may be missing
    assert epochs[0] == 0 and epochs[-1] == 5 and epochs == sorted(set(epochs)), epochs
    assert curve["start_epoch"].iloc[-1] >= 1  # resumed from a checkpoint, not from scratch
    assert curve["worker_nodes"].iloc[0] == cluster.node_ids["node_b"]  # epoch 0 ran on the node that was lost
    assert "A run snapshot was found in storage folder" in text  # the rerun trial's Train run restored from S3

    import mlflow

    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.trial_id = '{trial}'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # its run continued, not a second one
    assert manifest.stat().st_mtime_ns == built
