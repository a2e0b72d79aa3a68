"""MLflow tracking from the driver only: one parent run per sweep, nested runs per trial, the model registry.

The ``champion`` alias moves by compare-and-set: a new model is compared with the champion only when both carry the
same data fingerprint and split file (model version tags ``data_hash`` and ``splits_sha256``), and the alias is
re-read under a file lock next to the MLflow store right before it moves; if another sweep moved it meanwhile, the
comparison is made again against the new champion.

The default store is an absolute ``sqlite:///<output_dir>/mlflow.db`` with artifacts in ``<output_dir>/mlartifacts``
(MLflow 3.17 refuses the file store; relative URIs break once Ray changes directories).

What the MLflow UI shows: the experiment is tagged as model training (``EXPERIMENT_KIND_TAG``), so the UI opens on its
runs rather than the GenAI overview; the sweep's parent run carries the metadata table of each split as an MLflow
dataset (context ``train``/``val``/``test``, digest: the metadata fingerprint), each trial run the splits it trained
and validated on; every registered model has a signature and an input example, and its version a description.

Over 500 lines because the parent run, nested trial runs, datasets, registration and the champion's compare-and-set
share one MLflow client and one set of tag names.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from filelock import FileLock
from mlflow.tracking import MlflowClient
from ray import tune

from guitar_cls.config import Config, load_config
from guitar_cls.data.schema import LABELS
from guitar_cls.tune.record import PARENT_RUN_FILE

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHAMPION_POLICY_TAG = "champion_policy"  # the sweep's rule for which trial it registers (best, fastest_within...)
DATA_TAG = "data_hash"  # metadata fingerprint, on the parent run and on registered model versions
SPLITS_TAG = "splits_sha256"  # sha256 of the split file, on registered model versions
CAS_ATTEMPTS = 3  # comparisons against a champion that keeps moving before registration gives up the alias
# The MLflow 3 UI picks an experiment's home page by this tag: model training opens on the runs table, not on GenAI
# traces (the values are those of the UI's ExperimentKind).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
SPLITS = ("train", "val", "test")
TRIAL_SPLITS = ("train", "val")  # what a trial's model saw; the test split only scores the registered champion
DIGEST_CHARS = 36  # MLflow's limit on a dataset digest: the fingerprint's first 36 hex digits (full one in a tag)
CONTEXT_TAG = "mlflow.data.context"
EXAMPLE_SECONDS = 0.2  # length of the input example logged with each model (a plucked tone)


def tracking_uri(cfg: Config) -> str:
    """Returns the MLflow tracking URI: config, then $MLFLOW_TRACKING_URI, then an absolute sqlite file."""
    uri = cfg.logging.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(Path(uri[len("sqlite:///") :]).resolve())
        return uri
    return "sqlite:///" + str(Path(cfg.logging.output_dir).resolve() / "mlflow.db")


def use_default_store() -> str:
    """Points MLflow at the store the jobs write by default, unless this process or ``$MLFLOW_TRACKING_URI`` named one:
    ``tracking_uri`` of the default config, ``sqlite:///<cwd>/outputs/mlflow.db``. Returns the tracking URI in use.

    So that ``models:/guitar-note-classifier@champion`` given to a job after the README's first command finds the
    model that sweep registered (MLflow's own default is a ``mlflow.db`` in the working directory)."""
    if not mlflow.is_tracking_uri_set():
        uri = tracking_uri(load_config(None))
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    return mlflow.get_tracking_uri()


def configure_mlflow(cfg: Config) -> str:
    """Points MLflow at the configured store and returns the experiment id (created with an absolute artifact root)."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient()
    exp = client.get_experiment_by_name(cfg.logging.experiment)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:  # stores from before the tag
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:"):
        artifacts = (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return client.create_experiment(
        cfg.logging.experiment, artifact_location=artifacts, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}
    )


def registry_lock_path(cfg: Config) -> Path:
    """Returns the file lock guarding the ``champion`` alias: beside the sqlite store, else in the output folder."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return db.parent / f"{db.name}.champion.lock"
    return Path(cfg.logging.output_dir).resolve() / "mlflow-champion.lock"


def recorded_parent_tag(cfg: Config, sweep_dir: Path, key: str) -> str | None:
    """Returns tag ``key`` of the sweep's recorded MLflow parent run, or None (no run recorded, run gone, no tag)."""
    id_file = sweep_dir / PARENT_RUN_FILE
    if not id_file.is_file():
        return None
    configure_mlflow(cfg)
    try:
        return MlflowClient().get_run(id_file.read_text().strip()).data.tags.get(key)
    except mlflow.exceptions.MlflowException:
        return None


def file_sha256(path: str | Path) -> str:
    """Returns the sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_commit() -> str:
    """Returns the current git commit of the working tree, or "unknown" (e.g. inside a Ray job's copy)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).resolve().parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _flat_params(config: dict[str, Any]) -> dict[str, str]:
    return {str(k)[:250]: str(v)[:500] for k, v in config.items()}


def confusion_from_metrics(metrics: dict[str, Any], prefix: str = "val") -> np.ndarray | None:
    """Returns the confusion matrix rebuilt from flattened ``<prefix>/cm/<true>/<pred>`` metrics, if present."""
    n = len(LABELS)
    cm = np.zeros((n, n), dtype=np.int64)
    found = False
    for i, t in enumerate(LABELS):
        for j, p in enumerate(LABELS):
            key = f"{prefix}/cm/{t}/{p}"
            if key in metrics:
                cm[i, j] = int(metrics[key])
                found = True
    return cm if found else None


def split_datasets(
    metadata: pd.DataFrame, rows: Mapping[str, list[int]], *, source: str | Path, fingerprint: str
) -> dict[str, mlflow.entities.Dataset]:
    """Returns split -> the MLflow dataset of that split's metadata rows (named ``<table>-<split>``, target
    ``label_category``, source the table's file, digest the table's fingerprint cut to MLflow's ``DIGEST_CHARS``)."""
    source = Path(source).resolve()
    out = {}
    with warnings.catch_warnings():
        # MLflow registers its local-file source twice and says which one it took; the integer-column hint is about
        # model signatures, not data sets
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted", UserWarning)
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        for split, split_rows in rows.items():
            dataset = mlflow.data.from_pandas(
                metadata.loc[list(split_rows)],
                source=str(source),
                targets="label_category",
                name=f"{source.stem}-{split}",
                digest=fingerprint[:DIGEST_CHARS],
            )
            out[split] = dataset._to_mlflow_entity()
    return out


def dataset_inputs(
    datasets: Mapping[str, mlflow.entities.Dataset], splits: tuple[str, ...], fingerprint: str
) -> list[mlflow.entities.DatasetInput]:
    """Returns the run inputs of ``splits``: each split's dataset with its context and the full fingerprint."""
    from mlflow.entities import DatasetInput, InputTag

    return [
        DatasetInput(datasets[s], tags=[InputTag(CONTEXT_TAG, s), InputTag(DATA_TAG, fingerprint)])
        for s in splits
        if s in datasets
    ]


def checkpoint_sample_rate(checkpoint: str | Path) -> int:
    """Returns the sample rate (Hz) the checkpoint's model was trained at."""
    from guitar_cls.train.checkpoint import read_checkpoint

    return int(read_checkpoint(checkpoint)["config"]["data"]["sample_rate"])


def input_example(sample_rate: int, seconds: float = EXAMPLE_SECONDS) -> pd.DataFrame:
    """Returns a one-row request in the ``audio`` + ``sample_rate`` form: a decaying 196 Hz tone.

    MLflow checks an example by loading the model and predicting it, so the ``path`` form (files only under the
    operator's folder, see ``pyfunc``) cannot be exemplified where the model is logged; the signature lists both.
    """
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    wave = 0.5 * np.exp(-t / 0.08) * np.sin(2 * np.pi * 196.0 * t)
    return pd.DataFrame({"audio": [np.round(wave, 5).tolist()], "sample_rate": [int(sample_rate)]})


def version_description(
    *,
    sweep: str,
    metric: str,
    score: float,
    test_metrics: Mapping[str, Any],
    lineage: Mapping[str, str],
    champion: bool,
    reason: str,
) -> str:
    """Returns the registered version's description (Markdown): sweep, test scores, data lineage, champion policy."""
    scores = ", ".join(
        f"{k} {float(v):.4f}"
        for k, v in test_metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.startswith("support/")
    )
    return "\n".join(
        [
            f"Best trial of sweep `{sweep}`.",
            "",
            f"- test {metric} (this model through pyfunc, raw audio): {score:.4f}",
            f"- test metrics of the checkpoint: {scores or 'none recorded'}",
            f"- data fingerprint ({DATA_TAG}): `{lineage.get(DATA_TAG) or 'unknown'}`",
            f"- split file ({SPLITS_TAG}): `{lineage.get(SPLITS_TAG) or 'unknown'}`",
            f"- champion policy: `{CHAMPION}` moves to a model not worse on test {metric} on the same test rows (same "
            f"data fingerprint and split file); across other data or splits it stays unless `--promote`.",
            f"- champion: {'yes' if champion else 'no'} ({reason})",
        ]
    )


class MlflowTrialCallback(tune.Callback):
    """Logs every Tune trial as a nested MLflow run under the sweep's parent run (driver process only).

    ``run_name(trial_id, trial_config)`` names a new run (default: Tune's trial name); ``inputs`` (the splits the
    trial trains and validates on) are logged with it.
    """

    def __init__(
        self,
        parent_run_id: str,
        experiment_id: str,
        tracking: str,
        *,
        run_name: Callable[[str, Mapping[str, Any]], str] | None = None,
        inputs: list[mlflow.entities.DatasetInput] | None = None,
    ) -> None:
        self.parent_run_id = parent_run_id
        self.experiment_id = experiment_id
        self.tracking = tracking
        self.run_name = run_name
        self.inputs = list(inputs or [])
        self._runs: dict[str, str] = {}

    def _client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking, registry_uri=self.tracking)

    def _run_id(self, trial: Any) -> str:
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        client = self._client()
        found = client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}' and tags.trial_id = '{trial.trial_id}'",
            max_results=1,
        )
        if found:  # a resumed sweep continues the trial's run instead of starting a second one
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            name = self.run_name(trial.trial_id, trial.config) if self.run_name else str(trial)
            run = client.create_run(
                self.experiment_id,
                run_name=name,
                tags={"mlflow.parentRunId": self.parent_run_id, "trial_id": trial.trial_id},
            )
            run_id = run.info.run_id
            for key, value in _flat_params(trial.config).items():
                client.log_param(run_id, key, value)
        if self.inputs:  # again on a resumed run: the store keeps one input per dataset and run
            client.log_inputs(run_id, datasets=self.inputs)
        self._runs[trial.trial_id] = run_id
        return run_id

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self._run_id(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = {
            k: float(v)
            for k, v in result.items()
            if isinstance(v, (int, float))
            and not isinstance(v, bool)
            and "/cm/" not in k
            and k not in ("time_this_iter_s", "timestamp", "pid")
        }
        self._client().log_batch(run_id, metrics=[mlflow.entities.Metric(k, v, 0, step) for k, v in metrics.items()])

    def _end(self, trial: Any, status: str) -> None:
        if trial.trial_id not in self._runs and not trial.last_result:
            return
        run_id = self._run_id(trial)
        client = self._client()
        cm = confusion_from_metrics(trial.last_result or {})
        if cm is not None:
            from guitar_cls.train.metrics import plot_confusion_matrix

            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / "val_confusion_matrix.png"
                plot_confusion_matrix(cm.tolist(), path, title=f"{trial} (validation)")
                client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, status=status)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED")


class SweepTracker:
    """The sweep's parent MLflow run: tags, the trial callback, the leaderboard and the champion registration."""

    def __init__(self, cfg: Config, sweep_dir: Path, *, name: str, tags: dict[str, str]) -> None:
        self.cfg = cfg
        self.experiment_id = configure_mlflow(cfg)
        self.uri = mlflow.get_tracking_uri()
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.tags = dict(tags)
        self.datasets: dict[str, mlflow.entities.Dataset] = {}
        id_file = sweep_dir / PARENT_RUN_FILE
        recorded = id_file.read_text().strip() if id_file.is_file() else ""
        if recorded and self._usable(recorded):  # --resume: keep logging into the same parent run
            self.run_id = recorded
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            if recorded:
                log.warning("the parent run %s of sweep %s is gone (deleted, or another store): starting a new one",
                            recorded, name)  # fmt: skip
            run = self.client.create_run(self.experiment_id, run_name=name, tags={**tags, "git_commit": git_commit()})
            self.run_id = run.info.run_id
            sweep_dir.mkdir(parents=True, exist_ok=True)
            id_file.write_text(self.run_id)

    def _usable(self, run_id: str) -> bool:
        """Returns whether ``run_id`` is a live run of this experiment in this store."""
        try:
            run = self.client.get_run(run_id)
        except mlflow.exceptions.MlflowException:
            return False
        return run.info.lifecycle_stage != "deleted" and run.info.experiment_id == self.experiment_id

    def callback(self, run_name: Callable[[str, Mapping[str, Any]], str] | None = None) -> MlflowTrialCallback:
        """Returns the callback logging each trial as a nested run (named by ``run_name``, see MlflowTrialCallback)
        with the train and val datasets of ``log_datasets``."""
        inputs = dataset_inputs(self.datasets, TRIAL_SPLITS, self.tags.get(DATA_TAG, ""))
        return MlflowTrialCallback(self.run_id, self.experiment_id, self.uri, run_name=run_name, inputs=inputs)

    def log_datasets(self, metadata: pd.DataFrame, rows: Mapping[str, list[int]], *, source: str | Path) -> None:
        """Logs each split's metadata rows as a dataset of the parent run (see ``split_datasets``; the fingerprint is
        the ``data_hash`` tag); trial runs from ``callback`` made afterwards get the train and val ones."""
        fingerprint = self.tags.get(DATA_TAG) or ""
        self.datasets = split_datasets(metadata, rows, source=source, fingerprint=fingerprint)
        self.client.log_inputs(self.run_id, datasets=dataset_inputs(self.datasets, SPLITS, fingerprint))

    def trial_run_ids(self) -> dict[str, str]:
        """Returns Tune trial id -> its nested MLflow run id."""
        out: dict[str, str] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'",
                max_results=1000,
                page_token=token,
            )
            out.update({r.data.tags["trial_id"]: r.info.run_id for r in page if "trial_id" in r.data.tags})
            token = page.token
            if not token:
                return out

    def metric_curves(self, run_ids: Mapping[str, str], metric: str) -> dict[str, dict[int, float]]:
        """Returns trial id -> ``epoch + 1`` -> ``metric`` as the trials' MLflow runs recorded it (step = epoch): every
        epoch a trial reported, also those before a ``--resume`` that Tune's own result files lose."""
        out: dict[str, dict[int, float]] = {}
        for trial_id, run_id in run_ids.items():
            history = self.client.get_metric_history(run_id, metric)
            if history:
                out[trial_id] = {int(m.step) + 1: float(m.value) for m in sorted(history, key=lambda m: m.timestamp)}
        return out

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def log_metrics(self, metrics: dict[str, Any], prefix: str = "") -> None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.client.log_metric(self.run_id, prefix + k, float(v))

    def register(
        self,
        checkpoint: Path,
        evaluate: Any,
        splits_csv: Path | None = None,
        *,
        promote: bool = False,
        metric: str = "balanced_accuracy",
        mode: str = "max",
        test_metrics: Mapping[str, Any] | None = None,
        log_model: Callable[..., Any] | None = None,
        selection: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Logs ``checkpoint`` as a pyfunc model under the parent run, registers it and moves ``champion`` to it
        unless the current champion scores better on the same test rows; returns the outcome (with ``reason``,
        ``test_<metric>`` and ``previous_champion_<metric>``).

        The two are compared only when both versions carry the same data fingerprint and split file: otherwise the
        champion may have trained on this sweep's test rows, so the alias stays unless ``promote``. The alias moves
        by compare-and-set (``_set_champion_if``); a champion that moved meanwhile is compared again.

        Args:
            evaluate: ``evaluate(model_uri) -> the test value of metric`` on this sweep's test split through the
                pyfunc.
            promote: move the alias even when the champion was trained on other data or splits.
            metric, mode: the test metric the sweep's space ranks by (``macro_f1`` for ``val/macro_f1``) and
                whether higher (``max``) or lower (``min``) is better.
            test_metrics: the checkpoint's test metrics, for the version's description.
            log_model: logs the model instead of ``pyfunc.log_pyfunc_model`` (same arguments), e.g. an ensemble
                (``ensemble.register_ensemble``); ``checkpoint`` then gives the input example's sample rate.
            selection: how the sweep picked this trial, as version tags ``champion_policy`` (``policy``, e.g.
                ``fastest_within: 0.01``) and ``selection/<key>`` for every other entry (the validation score and
                ``latency_ms``). The ``champion`` alias still moves only by the test-metric rule above.

        The model is logged with the pyfunc signature and an ``audio`` + ``sample_rate`` input example; the version's
        description (``version_description``) carries the test scores, data lineage and champion outcome.
        """
        from guitar_cls.pyfunc import log_pyfunc_model

        name = self.cfg.logging.registered_model
        example = input_example(checkpoint_sample_rate(checkpoint))
        with mlflow.start_run(run_id=self.run_id):
            info = (log_model or log_pyfunc_model)(
                checkpoint, name="model", registered_model_name=name, splits_csv=splits_csv, input_example=example
            )
        version = str(info.registered_model_version)
        lineage = self._tag_version(name, version, splits_csv, selection)
        score = float(evaluate(f"models:/{name}/{version}"))
        self.client.set_model_version_tag(name, version, f"test_{metric}", f"{score:.6f}")
        self.client.log_metric(self.run_id, f"champion_candidate/test_{metric}", score)
        takes_alias, reason, champion_score, current = self._move_champion(
            name, version, score, lineage, evaluate, mode, promote
        )
        description = version_description(
            sweep=self.tags.get("sweep", ""),
            metric=metric,
            score=score,
            test_metrics=test_metrics or {},
            lineage=lineage,
            champion=takes_alias,
            reason=reason,
        )
        self.client.update_model_version(name, version, description=description)
        log.info(
            "registered %s v%s (test %s %.4f); champion %s (%s)",
            name,
            version,
            metric,
            score,
            f"v{version}" if takes_alias else f"stays v{current.version if current else '-'}",
            reason,
        )
        return {
            "model": name,
            "version": version,
            "metric": metric,
            f"test_{metric}": score,
            "champion": takes_alias,
            f"previous_champion_{metric}": champion_score,
            "reason": reason,
            "model_uri": info.model_uri,
        }

    def _tag_version(
        self, name: str, version: str, splits_csv: Path | None, selection: Mapping[str, Any] | None
    ) -> dict[str, str]:
        """Tags the version with its data lineage (returned) and how the sweep selected it."""
        lineage = {DATA_TAG: self.tags.get(DATA_TAG) or "", SPLITS_TAG: ""}
        if splits_csv is not None and Path(splits_csv).is_file():
            lineage[SPLITS_TAG] = file_sha256(splits_csv)
        for key, value in lineage.items():
            self.client.set_model_version_tag(name, version, key, value)
        for key, value in (selection or {}).items():
            tag = CHAMPION_POLICY_TAG if key == "policy" else f"selection/{key}"
            self.client.set_model_version_tag(name, version, tag, "" if value is None else str(value))
        return lineage

    def _move_champion(
        self,
        name: str,
        version: str,
        score: float,
        lineage: dict[str, str],
        evaluate: Any,
        mode: str,
        promote: bool,
    ) -> tuple[bool, str, float | None, Any]:
        """Moves ``champion`` to ``version`` by compare-and-set when it is not worse than the champion on the same
        test rows (or ``promote``); returns (moved, reason, the champion's score or None, the champion compared)."""
        for _ in range(CAS_ATTEMPTS):
            current = self._champion(name)
            champion_score = None
            if current is None:
                takes_alias, reason = True, "no champion yet"
            elif str(current.version) == version:
                takes_alias, reason = True, "already champion"
            elif all(lineage.values()) and all(current.tags.get(k) == v for k, v in lineage.items()):
                champion_score = float(evaluate(f"models:/{name}/{current.version}"))
                takes_alias = score >= champion_score if mode == "max" else score <= champion_score
                reason = f"champion v{current.version} scores {champion_score:.4f} on the same test rows"
            else:
                differs = [k for k, v in lineage.items() if not v or current.tags.get(k) != v]
                takes_alias = promote
                action = "--promote given" if promote else "pass --promote to move it"
                reason = (
                    f"not compared with champion v{current.version}: {' and '.join(differs)} differ (it may have "
                    f"trained on this sweep's test rows); {action}"
                )
            expected = None if current is None else str(current.version)
            if not takes_alias or self._set_champion_if(name, expected, version):
                return takes_alias, reason, champion_score, current
            log.warning("champion of %s moved while comparing (was v%s): comparing again", name, expected)
        reason = f"champion kept moving during {CAS_ATTEMPTS} comparisons: alias left alone"
        return False, reason, champion_score, current

    def _champion(self, name: str) -> Any:
        """Returns the model version holding the ``champion`` alias, or None."""
        try:
            return self.client.get_model_version_by_alias(name, CHAMPION)
        except mlflow.exceptions.MlflowException:
            return None

    def _set_champion_if(self, name: str, expected: str | None, version: str) -> bool:
        """Moves ``champion`` to ``version`` if it still points at ``expected`` (None: no champion); returns whether
        it moved. Under the registry's file lock, so two sweeps on this store cannot interleave read and move."""
        lock = registry_lock_path(self.cfg)
        lock.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock)):
            now = self._champion(name)
            if (None if now is None else str(now.version)) != expected:
                return False
            self.client.set_registered_model_alias(name, CHAMPION, version)
            return True

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
