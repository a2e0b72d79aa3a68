"""Search spaces as data: a YAML file -> a validated ``SearchSpace`` -> the searcher, scheduler and trial configs.

The schema is documented in ``search_spaces/README.md``. Everything is checked when the file is loaded, before any
trial starts; a ``SpaceError`` names the file and the key (``search_spaces/arch.yaml: params.model.params.blocks.when:
...``). Parameter names are dotted config keys (``training.learning_rate``), never ``/`` (Ray would nest those).

The file is read with ``yaml.safe_load`` after a check that no mapping repeats a key (PyYAML would silently keep the
last one, and per-family conditionals are naturally written that way). ``name`` must be a plain folder name (the
sweep writes under ``outputs/sweeps/<name>``), and every model family must be registered (``models.list_models``)
with every ``model.params`` key accepted by its builder.

Optuna's categorical distribution holds scalars only, so list- and mapping-valued choices (``blocks: [1, 1, 1, 1]``)
travel through the searcher as JSON strings; ``trial_overrides`` decodes them again.

Over 500 lines because the schema is one contract: parsing, validation with the key in every error, conditionals,
objectives and champion policies, and the searcher/scheduler built from them must agree; split, each part would
re-state the schema.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import threading
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from guitar_cls.config import Config, ConfigError, config_from_dict

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

ALGORITHMS = ("tpe", "random", "grid", "nsga2")
SCHEDULERS = ("asha", "fifo")
MODES = ("max", "min")
DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
_MODIFIERS = {"choice": ("when",), "uniform": ("when", "step"), "loguniform": ("when",), "int": ("when", "step", "log")}
_TOP_KEYS = ("name", "metric", "mode", "objectives", "champion", "search", "scheduler", "budget", "data", "fixed",
             "params")  # fmt: skip
_SEARCH_KEYS = {
    "tpe": ("algorithm", "seed", "points_to_evaluate", "n_startup_trials"),
    "random": ("algorithm", "seed", "points_to_evaluate"),
    "grid": ("algorithm", "seed"),
    "nsga2": ("algorithm", "seed", "points_to_evaluate", "population_size"),
}
# Metrics a trial reports once, measured before training rather than per epoch (a secondary objective may be one).
TRIAL_CONSTANTS = ("latency_ms",)
CHAMPION_POLICIES = ("best", "fastest_within", "max_latency_ms")
_SCHEDULER_KEYS = {"asha": ("type", "grace_period", "reduction_factor"), "fifo": ("type",)}
_BUDGET_KEYS = (
    "num_samples", "max_epochs", "time_budget_s", "max_concurrent_trials", "refit_epochs", "refit_patience",
    "refit_members",
)  # fmt: skip
# What a refit of several members is scored by on validation: the mean of their probabilities, through
# train.metrics.classification_metrics, so the sweep's metric must be val/<one of these> (or a per-class one).
ENSEMBLE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "micro_f1", "mcc", "ece")
_PER_CLASS_METRIC = re.compile(r"^(precision|recall|f1)/(harmonic|dead_note|general_note)$")
MAX_REFIT_MEMBERS = 10
_KEY_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_METRIC_RE = re.compile(r"^[A-Za-z_]\w*/[A-Za-z_][\w/]*$")
# A sweep name is one folder under outputs/sweeps and the Ray storage: no separators, no leading dot, no "..".
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_MODEL_KEY = "model.name"
_MODEL_PARAMS = "model.params."
# Keys owned by other parts of the schema: the epoch count is the budget's, data settings are shared by every trial
# (the waveform cache is built once per sweep).
_EPOCHS_KEY = "training.epochs"


class SpaceError(ValueError):
    """A search-space file is invalid; the message names the file and the key (``key``: the dotted key alone)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _error(where: str, msg: str) -> SpaceError:
    """Returns the error for key ``where``; ``space_from_dict`` (and so ``load_space``) prefixes the file."""
    return SpaceError(f"{where}: {msg}", key=where)


@dataclass
class Param:
    """One searched config key and its distribution.

    ``low``/``high`` bound ``uniform``, ``loguniform`` and ``int`` (both inclusive); ``choices`` lists the values of
    ``choice``. ``when`` maps an earlier ``choice`` param to the values under which this one is sampled.
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    choices: tuple[Any, ...] = ()
    step: float | int | None = None
    log: bool = False
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def is_active(self, values: Mapping[str, Any]) -> bool:
        """Returns whether every ``when`` condition holds for the (decoded) values sampled so far."""
        return all(k in values and _contains(allowed, values[k]) for k, allowed in self.when.items())

    def contains(self, value: Any) -> bool:
        """Returns whether ``value`` (decoded) can come out of this distribution."""
        if self.kind == "choice":
            return _contains(self.choices, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True

    def encode(self, value: Any) -> Any:
        """Returns ``value`` as the searcher holds it (JSON string for lists and mappings)."""
        return _encode(value)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        """Returns this param's Optuna distribution (choices in the searcher's form, see ``encode``): the one source
        of the searcher's sampling, the grid's domains and the report's importance and axes."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "choice":
            return CategoricalDistribution([_encode(c) for c in self.choices])
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.kind == "loguniform", step=self.step)

    def suggest(self, trial: optuna.Trial) -> Any:
        """Returns the decoded value sampled from ``trial`` under this param's key."""
        from optuna.distributions import CategoricalDistribution, IntDistribution

        d = self.distribution()
        if isinstance(d, CategoricalDistribution):
            return decode_choice(trial.suggest_categorical(self.key, d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.key, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(self.key, d.low, d.high, step=d.step, log=d.log)

    def sample_values(self) -> list[Any]:
        """Returns the values that bound this distribution (every choice, or both ends), for validation."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [float(self.low), float(self.high)]


@dataclass(frozen=True)
class Objective:
    """One objective of a sweep: a reported metric key and whether higher (``max``) or lower (``min``) is better."""

    metric: str
    mode: str


@dataclass(frozen=True)
class ChampionPolicy:
    """Which trial of a sweep is tested and registered.

    ``best``: the best trial on the primary objective; ``fastest_within``: the fastest trial whose primary score is
    within ``value`` of the best (absolute, in the metric's units); ``max_latency_ms``: the best trial whose latency is
    at most ``value`` ms.
    """

    kind: str = "best"
    value: float | None = None

    def describe(self) -> str:
        """Returns the policy as the space writes it (``best``, ``fastest_within: 0.01``)."""
        return self.kind if self.value is None else f"{self.kind}: {self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}


@dataclass
class SearchSettings:
    algorithm: str = "tpe"
    seed: int = 0
    points_to_evaluate: list[dict[str, Any]] = field(default_factory=list)  # decoded values, dotted keys
    n_startup_trials: int | None = None  # TPE's random start (None -> Optuna's default, 10)
    population_size: int | None = None  # NSGA-II's generation size (None -> Optuna's default, 50)


@dataclass
class SchedulerSettings:
    type: str = "asha"
    grace_period: int = 1
    reduction_factor: float = 4.0


@dataclass
class Budget:
    num_samples: int
    max_epochs: int
    time_budget_s: float | None = None
    max_concurrent_trials: int | None = None  # None -> planned from the cluster
    # After the search, the champion trial's configuration trains again for refit_epochs (early stopping after
    # refit_patience epochs without improvement) on the same splits; the better of the two on the sweep's metric is
    # tested and registered. None: off. Trials are cut short to search many; the model users get should not be.
    refit_epochs: int | None = None
    refit_patience: int = 10
    # The refit trains refit_members models (training seeds seed, seed+1, ...) and the mean of their probabilities is
    # what is tested and registered (pyfunc.GuitarNoteEnsemble): on recordings unlike the training data separately
    # trained models miss different notes, so their mean transfers better (README, domain gap), at N x the refit
    # time and the inference cost.
    refit_members: int = 1


@dataclass
class SearchSpace:
    """A validated search space; ``params`` keeps the file's order (conditions refer to earlier params).

    ``metric`` and ``mode`` are the primary objective (``objectives[0]``): the one that picks each trial's best
    epoch, ASHA's pruning and the leaderboard order. ``objectives`` holds every objective the searcher optimises
    (one unless the file lists ``objectives``); ``champion`` says which trial is registered.
    """

    name: str
    metric: str
    mode: str
    search: SearchSettings
    scheduler: SchedulerSettings
    budget: Budget
    data: dict[str, Any]
    fixed: dict[str, Any]
    params: dict[str, Param]
    source: str = "<space>"
    objectives: tuple[Objective, ...] = ()
    champion: ChampionPolicy = field(default_factory=ChampionPolicy)

    def __post_init__(self) -> None:
        if not self.objectives:
            self.objectives = (Objective(self.metric, self.mode),)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def shared_overrides(self) -> list[tuple[str, Any]]:
        """Returns the overrides every trial shares: the ``data`` section, then ``fixed``."""
        return [(f"data.{k}", v) for k, v in self.data.items()] + list(self.fixed.items())

    def constants(self) -> dict[str, Any]:
        """Returns the constant entries every trial config carries (``training.epochs``)."""
        return {_EPOCHS_KEY: self.budget.max_epochs}

    def with_budget(
        self,
        num_samples: int | None = None,
        time_budget_s: float | None = None,
        refit_epochs: int | None = None,
        refit_members: int | None = None,
    ) -> SearchSpace:
        """Returns a copy whose budget uses the given values (``--num-samples``, ``--time-budget``,
        ``--refit-epochs``: 0 turns the refit off, ``--refit-members``) where not None.

        Raises SpaceError naming the file and key for a count below 1 or a time budget that is not positive.
        """

        budget = copy.copy(self.budget)
        try:
            if num_samples is not None:
                budget.num_samples = _int(num_samples, "budget.num_samples (--num-samples)", lo=1)
            if time_budget_s is not None:
                t = _number(time_budget_s, "budget.time_budget_s (--time-budget)")
                if t <= 0:
                    raise _error("budget.time_budget_s (--time-budget)", f"must be positive, got {t}")
                budget.time_budget_s = float(t)
            if refit_epochs is not None:
                n = _int(refit_epochs, "budget.refit_epochs (--refit-epochs)", lo=0)
                budget.refit_epochs = n or None
            if refit_members is not None:
                budget.refit_members = _refit_members(refit_members, "budget.refit_members (--refit-members)")
                _check_ensemble_metric(self.metric, budget, "budget.refit_members (--refit-members)")
        except SpaceError as e:
            raise SpaceError(f"{self.source}: {e}", key=e.key) from None
        out = copy.copy(self)
        out.budget = budget
        return out


@dataclass
class SearchPlan:
    """What the Tuner needs: ``TuneConfig(search_alg=...)`` and ``Tuner(param_space=...)``.

    With ``grid``, Tune runs every combination ``budget.num_samples`` times, so that number means repeats of the grid.
    """

    search_alg: Any
    param_space: dict[str, Any]


_LOCK_TYPE = type(threading.Lock())


class PicklableLock:
    """A ``threading.Lock`` that pickles, as a new unlocked lock.

    Tune pickles the searcher with the Tuner's state (and ``OptunaSearch.save`` pickles the sampler), but Optuna 5.1's
    ``NSGAIISampler`` holds a plain lock (``_thread_lock``, in its genetic-sampler base): the deploy sweep stopped
    before its first trial with "cannot pickle '_thread.lock' object". ``make_searcher`` gives the sampler this one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._lock.__exit__(*exc)

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._lock = threading.Lock()


class DefineByRun:
    """Optuna define-by-run space: samples each param in order, skipping those whose ``when`` does not hold.

    A plain class rather than a closure because Tune pickles the searcher with its space.
    """

    def __init__(self, params: Iterable[Param], constants: Mapping[str, Any] | None = None) -> None:
        self.params = list(params)
        self.constants = dict(constants or {})

    def __call__(self, trial: optuna.Trial) -> dict[str, Any] | None:
        """Returns the constants to merge into the trial config (Ray's define-by-run contract)."""
        values: dict[str, Any] = {}
        for p in self.params:
            if p.is_active(values):
                values[p.key] = p.suggest(trial)
        return dict(self.constants) or None

    def __repr__(self) -> str:
        return f"DefineByRun({[p.key for p in self.params]}, constants={self.constants})"


# ---------------------------------------------------------------------------------------------------- loading


def load_space(path: str | Path) -> SearchSpace:
    """Returns the validated search space in the YAML file ``path``; raises SpaceError naming the file and key."""
    path = Path(path)
    if not path.exists():
        raise SpaceError(f"{path}: search-space file not found")
    text = path.read_text()
    try:
        duplicate = _duplicate_key(yaml.compose(text, Loader=yaml.SafeLoader))
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {e}") from None
    if duplicate is not None:
        where, line, first = duplicate
        raise SpaceError(f"{path}: {where}: duplicate key on line {line} (first on line {first}); YAML keeps only one")
    return space_from_dict(data, source=str(path), default_name=path.stem)


def _duplicate_key(node: yaml.Node | None, prefix: str = "") -> tuple[str, int, int] | None:
    """Returns (dotted key, line, line of its first occurrence) of the first mapping key repeated in a composed YAML
    document, or None. Merge keys (``<<``) are YAML's own overriding and are not counted."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{prefix}.{key}" if prefix and key is not None else (key or prefix)
            if key is not None and key_node.tag != "tag:yaml.org,2002:merge":
                if key in seen:
                    return where, key_node.start_mark.line + 1, seen[key]
                seen[key] = key_node.start_mark.line + 1
            found = _duplicate_key(value_node, where)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{prefix}[{i}]")
            if found:
                return found
    return None


def check_sweep_name(name: Any, where: str = "name") -> str:
    """Returns ``name`` if it is a plain folder name (letters, digits, ``_.-``, at most 100, no leading dot), the
    sweep's folder under ``outputs/sweeps`` and the Ray storage; raises SpaceError naming ``where`` otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or ".." in name:
        raise SpaceError(
            f"{where}: {name!r} is not a plain folder name (letters, digits, '_', '.', '-'; no '/' or '..'): the "
            "sweep would write outside outputs/sweeps"
        )
    return name


def space_from_dict(data: Any, source: str = "<space>", default_name: str = "sweep") -> SearchSpace:
    """Returns the validated search space from a parsed mapping (the YAML schema); ``source`` names it in errors."""
    try:
        return _parse_space(data, source, default_name)
    except SpaceError as e:
        raise SpaceError(f"{source}: {e}", key=e.key) from None


def _parse_space(data: Any, source: str, default_name: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(f"expected a mapping at the top level, got {type(data).__name__}")
    _no_unknown(data, _TOP_KEYS, "")

    name = data.get("name", default_name)
    check_sweep_name(name, "name" if "name" in data else "name (from the file name)")
    objectives = _parse_objectives(data)
    metric, mode = objectives[0].metric, objectives[0].mode
    champion = _parse_champion(data.get("champion", "best"), objectives)

    budget = _parse_budget(_section(data, "budget", required=True))
    _check_ensemble_metric(metric, budget, "budget.refit_members")
    scheduler = _parse_scheduler(_section(data, "scheduler"), budget)
    data_section = _section(data, "data")
    fixed = _section(data, "fixed")
    raw_params = _section(data, "params", required=True)
    if not raw_params:
        raise _error("params", "no parameters to search")

    # Every value is checked against the config with the shared settings applied, so a value that is valid alone
    # but not with the sweep's other settings (f_min above a fixed f_max) is caught here too.
    shared: list[tuple[str, Any]] = []
    for k, v in data_section.items():
        if not isinstance(k, str) or "." in k:
            raise _error(f"data.{k}", "expected a field of the data config (e.g. demo_recordings), not a dotted key")
        shared.append((f"data.{k}", v))
        _check_config(shared, f"data.{k}")
    for k, v in fixed.items():
        _check_key(k, f"fixed.{k}")
        if k == _EPOCHS_KEY:
            raise _error(f"fixed.{k}", "set by budget.max_epochs")
        if k.startswith("data."):
            raise _error(f"fixed.{k}", "data settings go in the `data` section")
        if k == _MODEL_KEY:
            _check_family(v, f"fixed.{k}")
        shared.append((k, v))
        _check_config(shared, f"fixed.{k}")

    params: dict[str, Param] = {}
    for key, spec in raw_params.items():
        where = f"params.{key}"
        _check_key(key, where)
        if key == _EPOCHS_KEY:
            raise _error(where, "set by budget.max_epochs")
        if key.startswith("data."):
            raise _error(where, "data settings are shared by every trial; set them in the `data` section")
        if key in fixed:
            raise _error(where, "also set in `fixed`")
        p = _parse_param(key, spec, params, where)
        if key == _MODEL_KEY:
            for family in p.choices if p.kind == "choice" else ():
                _check_family(family, f"{where}.choice")
        for value in p.sample_values():
            _check_config([*shared, (key, value)], where)
        params[key] = p

    _check_model_kwargs(fixed, params)
    search = _parse_search(_section(data, "search"), params)
    return SearchSpace(
        name=name,
        metric=metric,
        mode=mode,
        search=search,
        scheduler=scheduler,
        budget=budget,
        data=dict(data_section),
        fixed=dict(fixed),
        params=params,
        source=source,
        objectives=objectives,
        champion=champion,
    )


def _parse_objectives(data: dict[str, Any]) -> tuple[Objective, ...]:
    """Returns the space's objectives: ``objectives`` (a list of {metric, mode}) or the single ``metric``/``mode``."""
    if "objectives" not in data:
        if "metric" not in data:
            raise _error("metric", "missing (the reported metric key, e.g. val/balanced_accuracy; or `objectives`)")
        return (_objective(data.get("metric"), data.get("mode"), "metric", "mode"),)
    for key in ("metric", "mode"):
        if key in data:
            raise _error(key, "give either `metric` and `mode` or `objectives`, not both")
    raw = data["objectives"]
    if not isinstance(raw, list) or not raw:
        raise _error("objectives", f"expected a non-empty list of {{metric: ..., mode: max|min}}, got {raw!r}")
    out: list[Objective] = []
    for i, entry in enumerate(raw):
        where = f"objectives[{i}]"
        if not isinstance(entry, dict):
            raise _error(where, f"expected a mapping {{metric: ..., mode: max|min}}, got {entry!r}")
        _no_unknown(entry, ("metric", "mode"), f"{where}.")
        if "metric" not in entry:
            raise _error(f"{where}.metric", "missing")
        obj = _objective(entry["metric"], entry.get("mode"), f"{where}.metric", f"{where}.mode", primary=i == 0)
        if any(o.metric == obj.metric for o in out):
            raise _error(f"{where}.metric", f"{obj.metric!r} is listed twice")
        out.append(obj)
    return tuple(out)


def _objective(metric: Any, mode: Any, metric_where: str, mode_where: str, primary: bool = True) -> Objective:
    """Returns a checked objective. The primary one must be a per-epoch validation metric (it picks the best epoch
    and ASHA prunes on it); a secondary one may also be a per-trial constant (``TRIAL_CONSTANTS``)."""
    constant = isinstance(metric, str) and metric in TRIAL_CONSTANTS
    if not isinstance(metric, str) or not (_METRIC_RE.match(metric) or (constant and not primary)):
        also = "" if primary else f" or one of {list(TRIAL_CONSTANTS)}"
        first = " (the first objective picks each trial's best epoch and drives ASHA)" if constant else ""
        raise _error(metric_where, f"{metric!r} is not a namespaced metric key like val/balanced_accuracy{also}{first}")
    if mode not in MODES:
        raise _error(mode_where, f"{mode!r} is not one of {list(MODES)}")
    return Objective(metric, mode)


def _parse_champion(raw: Any, objectives: Sequence[Objective]) -> ChampionPolicy:
    """Returns the champion policy: ``best``, ``{fastest_within: delta}`` or ``{max_latency_ms: ms}``."""
    if raw == "best" or raw is None:
        return ChampionPolicy()
    if isinstance(raw, str):
        raise _error("champion", f"{raw!r} is not `best`, {{fastest_within: 0.01}} or {{max_latency_ms: 2.0}}")
    if not isinstance(raw, dict) or len(raw) != 1:
        raise _error("champion", f"expected `best` or a mapping with one of {list(CHAMPION_POLICIES[1:])}, got {raw!r}")
    kind, value = next(iter(raw.items()))
    if kind not in CHAMPION_POLICIES[1:]:
        raise _error(f"champion.{kind}", f"unknown policy (known: best, {', '.join(CHAMPION_POLICIES[1:])})")
    value = _number(value, f"champion.{kind}")
    if kind == "fastest_within" and value < 0:
        raise _error("champion.fastest_within", f"must be at least 0 (a margin on {objectives[0].metric}), got {value}")
    if kind == "max_latency_ms" and value <= 0:
        raise _error("champion.max_latency_ms", f"must be positive, got {value}")
    return ChampionPolicy(kind, float(value))


def _check_family(family: Any, where: str) -> None:
    from guitar_cls.models import list_models

    if family not in list_models():
        raise _error(where, f"unknown model family {family!r} (registered: {', '.join(list_models())})")


def _check_model_kwargs(fixed: Mapping[str, Any], params: Mapping[str, Param]) -> None:
    """Raises unless every family the space can pick accepts every ``model.params`` key a trial of that family can
    get (so a misspelled keyword fails here, not at trial time)."""
    from guitar_cls.models import model_params

    if _MODEL_KEY in params:
        families = params[_MODEL_KEY].choices
    else:
        families = (fixed.get(_MODEL_KEY, Config().model.name),)
    for family in families:
        accepted = [k for k in model_params(family) if k not in ("n_classes", "in_channels")]
        for key in [*fixed, *params]:
            if not key.startswith(_MODEL_PARAMS):
                continue
            allowed = params[key].when.get(_MODEL_KEY) if key in params else None
            if allowed is not None and not _contains(allowed, family):
                continue
            kwarg = key[len(_MODEL_PARAMS) :].split(".")[0]
            if kwarg not in accepted:
                raise _error(
                    f"{'params' if key in params else 'fixed'}.{key}",
                    f"model {family!r} has no parameter {kwarg!r} (accepted: {', '.join(accepted)})",
                )


def _section(data: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    if key not in data or data[key] is None:
        if required:
            raise _error(key, "missing")
        return {}
    value = data[key]
    if not isinstance(value, dict):
        raise _error(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _no_unknown(data: Mapping[str, Any], known: Sequence[str], prefix: str) -> None:
    for k in data:
        if k not in known:
            raise _error(f"{prefix}{k}", f"unknown key (known: {', '.join(known)})")


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise _error(where, "expected a dotted config key like training.learning_rate")


def _check_config(overrides: list[tuple[str, Any]], where: str) -> None:
    try:
        config_from_dict({}, overrides)
    except ConfigError as e:
        raise _error(where, f"{overrides[-1][1]!r} rejected by the config ({e})") from None


def _int(value: Any, where: str, lo: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _error(where, f"expected an integer, got {value!r}")
    if lo is not None and value < lo:
        raise _error(where, f"must be at least {lo}, got {value}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _error(where, f"expected a number, got {value!r}")
    return value


def _parse_budget(data: dict[str, Any]) -> Budget:
    _no_unknown(data, _BUDGET_KEYS, "budget.")
    for k in ("num_samples", "max_epochs"):
        if k not in data:
            raise _error(f"budget.{k}", "missing")
    budget = Budget(
        num_samples=_int(data["num_samples"], "budget.num_samples", lo=1),
        max_epochs=_int(data["max_epochs"], "budget.max_epochs", lo=1),
    )
    if data.get("time_budget_s") is not None:
        t = _number(data["time_budget_s"], "budget.time_budget_s")
        if t <= 0:
            raise _error("budget.time_budget_s", f"must be positive, got {t}")
        budget.time_budget_s = float(t)
    if data.get("max_concurrent_trials") is not None:
        budget.max_concurrent_trials = _int(data["max_concurrent_trials"], "budget.max_concurrent_trials", 1)
    if data.get("refit_epochs") is not None:
        budget.refit_epochs = _int(data["refit_epochs"], "budget.refit_epochs", lo=1)
    if "refit_patience" in data:
        budget.refit_patience = _int(data["refit_patience"], "budget.refit_patience", lo=1)
    if "refit_members" in data:
        budget.refit_members = _refit_members(data["refit_members"], "budget.refit_members")
    return budget


def _refit_members(value: Any, where: str) -> int:
    n = _int(value, where, lo=1)
    if n > MAX_REFIT_MEMBERS:
        raise _error(where, f"at most {MAX_REFIT_MEMBERS} (each is a full training), got {n}")
    return n


def _check_ensemble_metric(metric: str, budget: Budget, where: str) -> None:
    """Raises SpaceError at ``where`` when several refit members are asked for but ``metric`` is not one the mean of
    their probabilities can be scored by on validation (``ENSEMBLE_METRICS``)."""
    key = metric.split("/", 1)[1] if metric.startswith("val/") else ""
    if budget.refit_members > 1 and key not in ENSEMBLE_METRICS and not _PER_CLASS_METRIC.match(key):
        raise _error(where, f"{budget.refit_members} members are scored by the mean of their probabilities, which "
                     f"gives val/{{{', '.join(ENSEMBLE_METRICS)}}} or a per-class one, not {metric}")  # fmt: skip


def _parse_scheduler(data: dict[str, Any], budget: Budget) -> SchedulerSettings:
    kind = data.get("type", "asha")
    if kind not in SCHEDULERS:
        raise _error("scheduler.type", f"{kind!r} is not one of {list(SCHEDULERS)}")
    _no_unknown(data, _SCHEDULER_KEYS[kind], "scheduler.")
    out = SchedulerSettings(type=kind)
    if kind == "asha":
        out.grace_period = _int(data.get("grace_period", 1), "scheduler.grace_period", lo=1)
        if out.grace_period > budget.max_epochs:
            raise _error("scheduler.grace_period", f"{out.grace_period} exceeds budget.max_epochs {budget.max_epochs}")
        rf = _number(data.get("reduction_factor", 4), "scheduler.reduction_factor")
        if rf <= 1:
            raise _error("scheduler.reduction_factor", f"must be above 1, got {rf}")
        out.reduction_factor = float(rf)
    return out


def _parse_param(key: str, spec: Any, earlier: Mapping[str, Param], where: str) -> Param:
    if not isinstance(spec, dict):
        raise _error(where, f"expected a distribution mapping like {{choice: [...]}}, got {spec!r}")
    kinds = [k for k in spec if k in DISTRIBUTIONS]
    if len(kinds) != 1:
        raise _error(where, f"expected exactly one of {list(DISTRIBUTIONS)}, got {sorted(map(str, spec))}")
    kind = kinds[0]
    _no_unknown(spec, (kind, *_MODIFIERS[kind]), f"{where}.")
    arg = spec[kind]
    p = Param(key=key, kind=kind)
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise _error(f"{where}.choice", "expected a non-empty list of values")
        if len({_canon(v) for v in arg}) != len(arg):
            raise _error(f"{where}.choice", f"duplicate values in {arg!r}")
        p.choices = tuple(arg)
    else:
        if not isinstance(arg, list) or len(arg) != 2:
            raise _error(f"{where}.{kind}", f"expected [low, high], got {arg!r}")
        if kind == "int":
            lo, hi = (_int(v, f"{where}.int") for v in arg)
        else:
            lo, hi = (_number(v, f"{where}.{kind}") for v in arg)
        if lo >= hi:
            raise _error(f"{where}.{kind}", f"low {lo} must be below high {hi}")
        if kind == "loguniform" and lo <= 0:
            raise _error(f"{where}.loguniform", f"low {lo} must be positive")
        p.low, p.high = lo, hi
        if spec.get("log") is not None:
            if not isinstance(spec["log"], bool):
                raise _error(f"{where}.log", f"expected true/false, got {spec['log']!r}")
            p.log = spec["log"]
            if p.log and lo < 1:
                raise _error(f"{where}.log", f"a log-scaled int needs low >= 1, got {lo}")
        if spec.get("step") is not None:
            step = (
                _int(spec["step"], f"{where}.step", lo=1) if kind == "int" else _number(spec["step"], f"{where}.step")
            )
            if step <= 0:
                raise _error(f"{where}.step", f"must be positive, got {step}")
            n = (hi - lo) / step
            if not math.isclose(n, round(n), abs_tol=1e-9):
                raise _error(f"{where}.step", f"{hi} - {lo} is not a multiple of {step}")
            if p.log and step != 1:
                raise _error(f"{where}.step", "log and step cannot be combined")
            p.step = step
    if spec.get("when") is not None:
        p.when = _parse_when(spec["when"], earlier, f"{where}.when")
    return p


def _parse_when(when: Any, earlier: Mapping[str, Param], where: str) -> dict[str, tuple[Any, ...]]:
    if not isinstance(when, dict) or not when:
        raise _error(where, f"expected a mapping {{earlier_param: value or [values]}}, got {when!r}")
    out = {}
    for parent, allowed in when.items():
        if parent not in earlier:
            raise _error(f"{where}.{parent}", "refers to a param that is not defined earlier in `params`")
        pp = earlier[parent]
        if pp.kind != "choice":
            raise _error(f"{where}.{parent}", f"conditions can only refer to `choice` params, {parent} is {pp.kind}")
        # A list is a set of alternatives unless it is itself one of the parent's (list-valued) choices.
        values = [allowed] if not isinstance(allowed, list) or _contains(pp.choices, allowed) else allowed
        for v in values:
            if not _contains(pp.choices, v):
                raise _error(f"{where}.{parent}", f"{v!r} is not one of its choices {list(pp.choices)}")
        out[parent] = tuple(values)
    return out


def _parse_search(data: dict[str, Any], params: Mapping[str, Param]) -> SearchSettings:
    algorithm = data.get("algorithm", "tpe")
    if algorithm not in ALGORITHMS:
        raise _error("search.algorithm", f"{algorithm!r} is not one of {list(ALGORITHMS)}")
    _no_unknown(data, _SEARCH_KEYS[algorithm], "search.")
    out = SearchSettings(algorithm=algorithm, seed=_int(data.get("seed", 0), "search.seed"))
    if data.get("n_startup_trials") is not None:
        out.n_startup_trials = _int(data["n_startup_trials"], "search.n_startup_trials", lo=0)
    if data.get("population_size") is not None:
        out.population_size = _int(data["population_size"], "search.population_size", lo=2)
    if algorithm == "grid":
        for p in params.values():
            if p.when:
                raise _error(f"params.{p.key}.when", "conditions need an Optuna algorithm (tpe, random, nsga2)")
    points = data.get("points_to_evaluate") or []
    if not isinstance(points, list):
        raise _error("search.points_to_evaluate", "expected a list of mappings")
    for i, point in enumerate(points):
        out.points_to_evaluate.append(_check_point(point, params, f"search.points_to_evaluate[{i}]"))
    return out


def _check_point(point: Any, params: Mapping[str, Param], where: str) -> dict[str, Any]:
    if not isinstance(point, dict) or not point:
        raise _error(where, f"expected a non-empty mapping of param -> value, got {point!r}")
    for key, value in point.items():
        if key not in params:
            raise _error(f"{where}.{key}", f"not a param of this space (params: {', '.join(params)})")
        p = params[key]
        if not p.contains(value):
            raise _error(f"{where}.{key}", f"{value!r} is outside its distribution")
        if not p.is_active(point):
            # Optuna would silently drop it; the point would not be the trial the author meant.
            raise _error(f"{where}.{key}", f"its condition {dict(p.when)} does not hold in this point")
    return dict(point)


def _contains(options: Iterable[Any], value: Any) -> bool:
    return _canon(value) in {_canon(o) for o in options}


def _canon(value: Any) -> Any:
    """Returns a hashable form in which 1 == 1.0 but True != 1, the way a YAML author reads values."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return (type(value).__name__, value)
    if isinstance(value, (int, float)):
        return ("num", float(value))
    if isinstance(value, (list, tuple)):
        return ("list", tuple(_canon(v) for v in value))
    if isinstance(value, Mapping):
        return ("map", tuple(sorted((str(k), _canon(v)) for k, v in value.items())))
    return ("other", repr(value))


def _encode(value: Any) -> Any:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def decode_choice(value: Any) -> Any:
    """Returns a value as the config takes it: a JSON-encoded list or mapping (the searcher's form) decoded."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


# ---------------------------------------------------------------------------------------------------- builders


def make_searcher(space: SearchSpace, max_concurrent: int | None = None) -> SearchPlan:
    """Returns the search algorithm and the Tuner's param space for ``space``.

    tpe/random/nsga2: ``OptunaSearch`` over a ``DefineByRun`` space with metric and mode given to the searcher itself
    (a define-by-run searcher ignores TuneConfig's) and an empty param space; with several objectives, metric and
    mode are lists (Optuna's multi-objective study: TPE and NSGA-II model the Pareto front, random ignores it).
    grid: ``BasicVariantGenerator`` over a param space with ``grid_search`` for every ``choice`` param and random
    domains for the rest (it ignores the objectives; the record still keeps them).

    ``max_concurrent`` (default ``budget.max_concurrent_trials``) matters for grid only: Tune ignores
    ``TuneConfig.max_concurrent_trials`` for a ``BasicVariantGenerator``, so the limit must be given to it here. For
    Optuna, Tune applies ``TuneConfig.max_concurrent_trials`` itself.
    """
    if space.search.algorithm == "grid":
        return _grid_plan(space, max_concurrent or space.budget.max_concurrent_trials or 0)
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    if space.search.algorithm == "tpe":
        kw = {} if space.search.n_startup_trials is None else {"n_startup_trials": space.search.n_startup_trials}
        # group=True splits the joint model by which params a trial actually used (the arch conditionals).
        with warnings.catch_warnings():  # `group` is marked experimental; it is the point here
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler: optuna.samplers.BaseSampler = optuna.samplers.TPESampler(
                multivariate=True, group=True, seed=space.search.seed, **kw
            )
    elif space.search.algorithm == "nsga2":
        kw = {} if space.search.population_size is None else {"population_size": space.search.population_size}
        sampler = optuna.samplers.NSGAIISampler(seed=space.search.seed, **kw)
        if isinstance(getattr(sampler, "_thread_lock", None), _LOCK_TYPE):  # Optuna 5.1's genetic samplers
            sampler._thread_lock = PicklableLock()  # type: ignore[attr-defined]
    else:
        sampler = optuna.samplers.RandomSampler(seed=space.search.seed)
    points = [{k: space.params[k].encode(v) for k, v in pt.items()} for pt in space.search.points_to_evaluate]
    metric: str | list[str] = space.metric
    mode: str | list[str] = space.mode
    if space.multi_objective:  # Ray tells Optuna each objective's last reported value when the trial ends
        metric, mode = [o.metric for o in space.objectives], [o.mode for o in space.objectives]
    searcher = OptunaSearch(
        space=DefineByRun(space.params.values(), space.constants()),
        metric=metric,
        mode=mode,
        sampler=sampler,
        points_to_evaluate=points or None,
    )
    return SearchPlan(search_alg=searcher, param_space={})


def _grid_plan(space: SearchSpace, max_concurrent: int) -> SearchPlan:
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    param_space: dict[str, Any] = {}
    for p in space.params.values():
        d = p.distribution()
        if isinstance(d, CategoricalDistribution):
            param_space[p.key] = tune.grid_search(list(d.choices))
        elif isinstance(d, FloatDistribution):
            if d.log:
                param_space[p.key] = tune.loguniform(d.low, d.high)
            else:
                param_space[p.key] = tune.quniform(d.low, d.high, d.step) if d.step else tune.uniform(d.low, d.high)
        elif d.log:
            param_space[p.key] = tune.lograndint(d.low, d.high + 1)
        else:
            param_space[p.key] = tune.qrandint(d.low, d.high, d.step)
    param_space.update(space.constants())
    search_alg = BasicVariantGenerator(max_concurrent=max_concurrent, random_state=space.search.seed)
    return SearchPlan(search_alg=search_alg, param_space=param_space)


def make_scheduler(space: SearchSpace, record_dir: str | Path | None = None) -> Any:
    """Returns the trial scheduler; metric and mode are left to ``TuneConfig`` (giving both raises in Tune), which
    gets the primary objective: ASHA is single-objective, so a multi-objective sweep prunes on the first one only.

    ASHA is ``asha.RecordingASHA``: with ``record_dir`` (the sweep folder) it records each trial it stops there.
    """
    from ray.tune.schedulers import FIFOScheduler

    from guitar_cls.tune.asha import RecordingASHA

    s = space.scheduler
    if s.type == "asha":
        return RecordingASHA(
            record_dir=record_dir,
            time_attr="training_iteration",
            max_t=space.budget.max_epochs,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )
    if s.type == "fifo":
        return FIFOScheduler()
    raise ValueError(f"unsupported scheduler: {s.type}")


def trial_overrides(trial_config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Returns ``(dotted_key, value)`` overrides from a Tune trial config.

    Keys are dotted; mappings nested by Ray (``a/b`` keys) are flattened with dots; JSON-encoded lists and
    mappings are decoded.
    """
    out: list[tuple[str, Any]] = []

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, Mapping):
                walk(v, key)
            else:
                out.append((key.replace("/", "."), decode_choice(v)))

    walk(trial_config, "")
    return out


def trial_config(
    base_cfg_dict: Mapping[str, Any] | None, space: SearchSpace, trial_params: Mapping[str, Any]
) -> Config:
    """Returns the trial's Config: base, then the space's ``data`` and ``fixed``, the trial params and the epochs.

    When the space picks a model family other than the base config's, the base ``model.params`` are dropped:
    keyword arguments of one family mean nothing to another.
    """
    base = config_from_dict(copy.deepcopy(dict(base_cfg_dict or {}))).to_dict()
    overrides = [*space.shared_overrides(), *trial_overrides(trial_params), *space.constants().items()]
    model_name = dict(overrides).get("model.name")
    if model_name is not None and model_name != base["model"]["name"] and base["model"]["params"]:
        log.debug(
            "dropping base model.params %s of %s for %s", base["model"]["params"], base["model"]["name"], model_name
        )
        base["model"]["params"] = {}
    return config_from_dict(base, overrides)
