"""ASHA that writes down whom it stopped: each trial it stops before ``max_t`` is appended to the sweep's record
(``record.ASHA_STOPS``), so the leaderboard says ``asha`` from the decision itself instead of guessing from rungs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler

from guitar_cls.tune.record import append_asha_stop


class RecordingASHA(ASHAScheduler):
    """``ASHAScheduler`` that appends ``(trial_id, epoch)`` to ``record_dir/asha_stops.jsonl`` for each early stop.

    The file is written by the driver as the decision is made, so a resumed sweep (whose restored scheduler starts
    afresh) still knows the stops of its first run.
    """

    def __init__(self, *, record_dir: str | Path | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record_dir = str(record_dir) if record_dir is not None else None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        epoch = int(result.get(self._time_attr, 0) or 0)
        if decision == self.STOP and epoch < self._max_t and self.record_dir is not None:
            append_asha_stop(Path(self.record_dir), trial.trial_id, epoch)
        return decision


__all__ = ["RecordingASHA"]
