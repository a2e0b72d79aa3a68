"""Parameter importance of a finished sweep: Optuna's evaluator over a study rebuilt from the record."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import optuna

from guitar_cls.report.data import SweepData, distribution_value, distributions

log = logging.getLogger(__name__)

MIN_IMPORTANCE_TRIALS = 2
FEW_TRIALS = 10  # below this, importance rankings are indicative only


@dataclass
class Importance:
    """Parameter importances (normalised to sum to 1, most important first) or the reason there are none."""

    values: dict[str, float]
    note: str
    n_trials: int


def param_importances(sweep: SweepData) -> Importance:
    """Returns Optuna's parameter importances of the finished trials' best value of the sweep's metric.

    The study is rebuilt from the record (one ``create_trial`` per finished trial, with the space's
    distributions). Optuna's default evaluator (PED-ANOVA) scores conditional params on the trials that used them;
    params that never varied are left out.
    """
    finished = sweep.finished
    n = len(finished)
    if n < MIN_IMPORTANCE_TRIALS:
        return Importance(
            {}, f"Parameter importance needs at least {MIN_IMPORTANCE_TRIALS} finished trials; this sweep has {n}.", n
        )
    dists = distributions(sweep)
    trials, seen = [], {k: set() for k in dists}
    for _, row in finished.iterrows():
        params = {k: v for k, d in dists.items() if (v := distribution_value(d, row.get(k))) is not None}
        for k, v in params.items():
            seen[k].add(str(v))
        trials.append(
            optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=float(row[sweep.best_key])
            )
        )
    varied = [k for k in dists if len(seen[k]) > 1]
    if finished[sweep.best_key].nunique() < 2:
        return Importance(
            {},
            f"All {n} finished trials reached the same best val {sweep.long_metric}: no parameter made a difference "
            "to rank.",
            n,
        )
    if not varied:
        return Importance({}, f"No parameter took more than one value in the {n} finished trials.", n)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction="maximize" if sweep.mode == "max" else "minimize", study_name=sweep.name)
        study.add_trials(trials)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # PED-ANOVA's "few trials" warnings: the note says so
            values = optuna.importance.get_param_importances(study, params=varied)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
        log.warning("parameter importance failed: %s", e)
        return Importance({}, f"Parameter importance could not be computed from {n} trials: {e}", n)
    finally:
        optuna.logging.set_verbosity(verbosity)
    note = (
        f"PED-ANOVA (Optuna's default evaluator) over {n} finished trials; conditional parameters are scored on "
        "the trials that used them."
    )
    if n < FEW_TRIALS:
        note += f" With fewer than {FEW_TRIALS} trials the ranking is indicative only."
    return Importance({k: float(v) for k, v in values.items()}, note, n)
