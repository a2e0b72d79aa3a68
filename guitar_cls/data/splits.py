"""Train/val/test splits grouped by recording and stratified by class.

No recording (group) is in two splits, every split holds every class, and the event fractions come close to the
requested ones. A seeded random search over group assignments (many cheap candidates, the best kept) does this
for a dozen recordings as well as for thousands.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from guitar_cls.data.schema import LABELS

log = logging.getLogger(__name__)

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")


class SplitError(ValueError):
    """The requested split cannot keep recordings apart and every class in every split."""


def _score(counts: np.ndarray, assign: np.ndarray, target: np.ndarray) -> tuple[int, float]:
    """Returns (number of (split, class) cells left empty, distance of the split/class shares to the target).

    Args:
        counts: events per group and class, ``(G, L)``.
        assign: split index per group, ``(G,)``.
        target: wanted share of each split, ``(S,)``.
    """
    per_split = np.stack([counts[assign == s].sum(axis=0) for s in range(target.size)])  # (S, L)
    empty = int((per_split == 0).sum())
    total = per_split.sum()
    size_err = np.abs(per_split.sum(axis=1) / max(total, 1) - target).sum()
    class_share = per_split / np.maximum(per_split.sum(axis=0, keepdims=True), 1)  # (S, L) share of each class
    class_err = np.abs(class_share - target[:, None]).mean(axis=1).sum()
    return empty, float(size_err + 0.5 * class_err)


def make_splits(
    df: pd.DataFrame,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    group_col: str = "source_audio",
    label_col: str = "label_category",
    n_candidates: int = 400,
) -> pd.Series:
    """Returns ``"train"|"val"|"test"`` per row (aligned with ``df.index``), grouped by ``group_col``.

    Raises:
        SplitError: fewer groups than splits, or no assignment puts every class present in ``df`` into every split.
    """
    target = np.asarray(fractions, dtype=float)
    if target.size != len(SPLIT_NAMES) or np.any(target <= 0) or abs(target.sum() - 1.0) > 1e-6:
        raise SplitError(f"fractions must be three positive numbers summing to 1, got {tuple(fractions)}")
    labels = [lab for lab in LABELS if (df[label_col] == lab).any()]
    labels += sorted(set(df[label_col].dropna().astype(str)) - set(labels))
    table = pd.crosstab(df[group_col].astype(str), df[label_col].astype(str)).reindex(columns=labels, fill_value=0)
    groups, counts = table.index.to_numpy(), table.to_numpy()  # (G,), (G, L)
    if len(groups) < len(SPLIT_NAMES):
        raise SplitError(f"need at least {len(SPLIT_NAMES)} recordings ({group_col}) to split, got {len(groups)}")
    for j, lab in enumerate(labels):
        holders = int((counts[:, j] > 0).sum())
        if holders < len(SPLIT_NAMES):
            raise SplitError(
                f"class {lab!r} occurs in only {holders} recording(s); every split needs one, so at least "
                f"{len(SPLIT_NAMES)} are required"
            )

    rng = np.random.default_rng(seed)
    sizes = counts.sum(axis=1)
    best: tuple[tuple[int, float], np.ndarray] | None = None
    for _ in range(n_candidates):
        # greedy fill in a random order: each group goes to the split furthest below its target
        order = rng.permutation(len(groups))
        assign = np.empty(len(groups), dtype=int)
        filled = np.zeros(target.size)
        per_class = np.zeros((target.size, counts.shape[1]))
        for g in order:
            # prefer a split that lacks one of this group's classes, then the one furthest below its share
            lacking = ((per_class == 0) & (counts[g] > 0)).sum(axis=1)
            deficit = target * sizes.sum() - filled
            s = int(np.lexsort((-deficit, -lacking * (deficit > 0)))[0])
            assign[g] = s
            filled[s] += sizes[g]
            per_class[s] += counts[g]
        score = _score(counts, assign, target)
        if best is None or score < best[0]:
            best = (score, assign)
    assert best is not None
    (empty, err), assign = best
    if empty:
        raise SplitError(
            f"no grouped split with every class in every split found ({empty} empty split/class cells); "
            f"add recordings or change the fractions {tuple(fractions)}"
        )
    by_group = dict(zip(groups, (SPLIT_NAMES[s] for s in assign)))
    splits = df[group_col].astype(str).map(by_group).rename("split")
    log.info("splits (seed %d): %s", seed, splits.value_counts().to_dict())
    return splits


def save_splits(df: pd.DataFrame, splits: pd.Series, path: str | Path) -> Path:
    """Writes ``source_audio, event_index, split`` as CSV and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = pd.DataFrame(
        {"source_audio": df["source_audio"], "event_index": df["event_index"], "split": splits.loc[df.index]}
    )
    out.to_csv(path, index=False)
    return path
