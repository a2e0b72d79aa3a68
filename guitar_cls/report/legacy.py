"""Stop reasons for sweeps recorded before ``trials.json`` (their ``leaderboard.csv`` says nothing about why a trial
ended): inferred from the rules as they were, so that old records still give the report they gave.

A trial that stopped before ``max_epochs`` is ``early_stop`` when its own validation history shows
``training.early_stopping_patience`` epochs without improvement, ``asha`` when it stopped at an ASHA rung
(``grace_period * reduction_factor**k``), else ``budget`` (the time budget ran out). A trial cut by the time budget
exactly at a rung reads as ``asha``: those files do not tell the two apart. Sweeps recorded since then carry the
reason itself (``tune.record``).
"""

from __future__ import annotations

import math

import pandas as pd

from guitar_cls.report.data import defaults, setting
from guitar_cls.train.loop import METRIC
from guitar_cls.tune.space import SearchSpace


def asha_rungs(space: SearchSpace | None, max_epochs: int) -> set[int]:
    """Returns the epochs at which ASHA may stop a trial (empty without ASHA)."""
    if space is None or space.scheduler.type != "asha":
        return set()
    s = space.scheduler
    n = int(math.log(max_epochs / s.grace_period) / math.log(s.reduction_factor) + 1)
    milestones = {math.ceil(s.grace_period * s.reduction_factor**k - 1e-9) for k in range(n)}
    return {m for m in milestones if m < max_epochs}


def epochs_without_improvement(values: pd.Series) -> int:
    """Returns how many epochs at the end of ``values`` did not improve on the best before them (the loop's rule)."""
    best, since = -math.inf, 0
    for v in values.dropna():
        if v > best + 1e-6:
            best, since = v, 0
        else:
            since += 1
    return since


def infer_stop_reasons(
    board: pd.DataFrame, curves: dict[str, pd.DataFrame], space: SearchSpace | None, max_epochs: int
) -> list[str]:
    """Returns each board row's stop reason (``tune.record.STOP_REASONS``) as the rules above infer it."""
    patience_default = defaults(space)["training"]["early_stopping_patience"]
    rungs = asha_rungs(space, max_epochs)
    reasons = []
    for _, row in board.iterrows():
        curve = curves.get(row["trial_id"])
        epochs = int(row["epochs"]) if pd.notna(row["epochs"]) else 0
        patience = int(setting(row, "training.early_stopping_patience", space, patience_default))
        if row["status"] == "ERROR":
            reasons.append("error")
        elif epochs >= max_epochs:
            reasons.append("completed")
        elif curve is not None and METRIC in curve and epochs_without_improvement(curve[METRIC]) >= patience:
            reasons.append("early_stop")
        elif epochs in rungs:
            reasons.append("asha")
        else:
            reasons.append("budget")
    return reasons
