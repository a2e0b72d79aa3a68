"""Grouped, stratified splits: no recording leaks, every class everywhere, ratios, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from guitar_cls.data.schema import LABELS, read_metadata
from guitar_cls.data.splits import SplitError, make_splits, save_splits


def _table(n_groups: int, seed: int = 0) -> pd.DataFrame:
    """Returns a synthetic table: recordings of 4-20 events, some single-class drills, some mixed."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        kind = g % 4
        for i in range(int(rng.integers(4, 21))):
            label = LABELS[kind] if kind < 3 and g % 8 < 4 else str(rng.choice(LABELS, p=[0.25, 0.25, 0.5]))
            rows.append({"source_audio": f"r{g:03d}.wav", "event_index": i, "label_category": label})
    return pd.DataFrame(rows)


def _check(df: pd.DataFrame, splits: pd.Series) -> None:
    assert splits.index.equals(df.index)
    assert set(splits) == {"train", "val", "test"}
    assigned = splits.notna().groupby(df["source_audio"]).all()  # every event of every recording has a split
    assert assigned.all(), f"events without a split in {list(assigned[~assigned].index)}"
    per_group = splits.groupby(df["source_audio"]).nunique()
    assert (per_group == 1).all(), "a recording is in two splits"
    present = pd.crosstab(splits, df["label_category"])
    assert (present > 0).all().all(), present


@pytest.mark.parametrize("n_groups", [12, 40, 200])
def test_no_leak_all_classes_and_close_ratios(n_groups):
    df = _table(n_groups)
    splits = make_splits(df, (0.7, 0.15, 0.15), seed=3)
    _check(df, splits)
    share = splits.value_counts(normalize=True)
    tol = 0.08 if n_groups == 12 else 0.03
    assert share["train"] == pytest.approx(0.7, abs=tol)
    assert share["val"] == pytest.approx(0.15, abs=tol) and share["test"] == pytest.approx(0.15, abs=tol)


def test_tiny_demo_splits(tiny_demo):
    df = read_metadata(tiny_demo)
    _check(df, make_splits(df))


def test_deterministic_per_seed_and_seed_matters():
    df = _table(60)
    a, b = make_splits(df, seed=7), make_splits(df, seed=7)
    pd.testing.assert_series_equal(a, b)
    assert not make_splits(df, seed=8).equals(a)


def test_index_alignment_with_a_shuffled_index():
    df = _table(30).sample(frac=1.0, random_state=1)
    splits = make_splits(df, group_col="source_audio")
    _check(df, splits)


def test_impossible_split_raises_a_clear_error():
    df = _table(20)
    df.loc[df["label_category"] == "harmonic", "source_audio"] = "only_one_or_two.wav"
    with pytest.raises(SplitError, match="harmonic"):
        make_splits(df)
    with pytest.raises(SplitError, match="fractions"):
        make_splits(_table(20), (0.8, 0.3, 0.1))
    with pytest.raises(SplitError, match="at least 3"):
        make_splits(_table(2))


def test_save_splits(tmp_path):
    df = _table(12)
    splits = make_splits(df)
    path = save_splits(df, splits, tmp_path / "s" / "splits.csv")
    back = pd.read_csv(path)
    assert list(back.columns) == ["source_audio", "event_index", "split"]
    assert back["split"].tolist() == splits.tolist()
