"""Review list: the scores (entropy, margin, self-confidence, confident class, JS divergence), the ranking tiers, the
table, the job's smoke test and, end to end, flipped labels found at the top of the list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from guitar_cls.review import (
    DISAGREE,
    LABEL_ERROR,
    NO_AUDIO,
    REVIEW_COLUMNS,
    UNCERTAIN,
    confident_class,
    js_divergence,
    normalized_entropy,
    review,
    review_scores,
    review_table,
    self_confidence,
    top2_margin,
)

ROOT = Path(__file__).resolve().parents[1]


def _meta(labels: list[str | None]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "source_audio": [f"rec{i}.wav" for i in range(n)],
            "onset_sec": np.arange(n, dtype=float),
            "offset_sec": np.arange(n, dtype=float) + 0.5,
            "label_category": pd.array(labels, dtype="string"),
        }
    )


# --- scores ---


def test_entropy_and_margin_bounds():
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.7, 0.2, 0.1]])
    np.testing.assert_allclose(normalized_entropy(probs), [0.0, 1.0, np.log(2) / np.log(3), 0.7298], atol=1e-4)
    np.testing.assert_allclose(top2_margin(probs), [1.0, 0.0, 0.0, 0.5])


def test_self_confidence_is_the_labels_probability_and_nan_without_label():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    out = self_confidence(probs, np.array([1, -1]))
    assert out[0] == pytest.approx(0.2) and np.isnan(out[1])


def test_confident_class_needs_the_class_threshold():
    probs = np.array([[0.6, 0.4, 0.0], [0.6, 0.4, 0.0], [0.2, 0.25, 0.55]])
    # class 0 needs 0.7: row 0 falls back to class 1 (0.4 >= 0.3); nothing reaches its threshold in row 2
    assert confident_class(probs, np.array([0.7, 0.3, 0.9])).tolist() == [1, 1, -1]
    assert confident_class(probs, np.array([0.5, 0.3, 0.5])).tolist() == [0, 0, 2]


def test_js_divergence_zero_for_agreement_one_for_opposite_certainties():
    same = np.tile(np.array([[0.2, 0.3, 0.5]]), (3, 4, 1))  # (M, N, K)
    np.testing.assert_allclose(js_divergence(same), 0.0, atol=1e-9)
    opposite = np.array([[[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]])
    np.testing.assert_allclose(js_divergence(opposite), 1.0, atol=1e-6)
    assert js_divergence(same[:1]).tolist() == [0.0] * 4  # one model: no disagreement


def test_label_error_needs_a_confident_prediction_against_the_label():
    probs = np.array(
        [
            [0.95, 0.03, 0.02],  # labelled 0: fine
            [0.85, 0.10, 0.05],  # labelled 0: fine (class 0's threshold: mean 0.9)
            [0.02, 0.96, 0.02],  # labelled 1: fine
            [0.05, 0.05, 0.90],  # labelled 2: fine
            [0.92, 0.04, 0.04],  # labelled 2 but confidently 0 (>= 0.9): a label error
            [0.40, 0.35, 0.25],  # labelled 2, predicted 0 without confidence: not a label error
        ]
    )[None]
    scores = review_scores(probs, np.array([0, 0, 1, 2, 2, 2]))
    assert scores["label_error"].tolist() == [False, False, False, False, True, False]
    untrained = np.full((1, 4, 3), 1 / 3) + np.array([0.01, 0, -0.01])  # argmax 0 everywhere, nothing confident
    assert not review_scores(untrained, np.array([1, 2, 1, 2]))["label_error"].any()


# --- ranking ---


def test_tiers_label_errors_then_disagreement_then_uncertainty_then_rest_and_no_audio_last():
    a = np.array(
        [
            [0.80, 0.15, 0.05],  # 0 rest (sure, agreed, label 0)
            [0.45, 0.40, 0.15],  # 1 uncertain
            [0.90, 0.05, 0.05],  # 2 models disagree
            [0.03, 0.95, 0.02],  # 3 label error (labelled 0), self-confidence 0.03
            [0.20, 0.75, 0.05],  # 4 label error (labelled 0), self-confidence 0.2
            [np.nan] * 3,  # 5 no audio
            [0.97, 0.02, 0.01],  # 6 rest, surer than 0
            [0.05, 0.70, 0.25],  # 7 rest (labelled 1), less sure than 0; sets class 1's threshold to 0.7
        ]
    )
    b = a.copy()
    b[2] = [0.05, 0.05, 0.90]
    table = review_table(_meta(["harmonic"] * 7 + ["dead_note"]), np.stack([a, b]))
    assert table.index.tolist() == [3, 4, 2, 1, 7, 0, 6, 5]
    assert list(table.columns) == list(REVIEW_COLUMNS)
    reasons = table["reason"].to_dict()
    assert reasons[3].startswith(LABEL_ERROR) and reasons[2].startswith(DISAGREE) and reasons[1] == UNCERTAIN
    assert reasons[0] == reasons[7] == "" and reasons[5] == NO_AUDIO and table.loc[5, "predicted"] == ""
    scores = json.loads(table.loc[3, "scores"])
    assert scores["dead_note"] == pytest.approx(0.95) and scores["self_confidence"] == pytest.approx(0.03)
    assert table.loc[3, ["file", "onset", "offset", "label", "predicted"]].tolist() == [
        "rec3.wav",
        3.0,
        3.5,
        "harmonic",
        "dead_note",
    ]


def test_unlabelled_events_are_ranked_by_uncertainty_only():
    probs = np.array([[0.05, 0.9, 0.05], [0.4, 0.35, 0.25], [0.9, 0.05, 0.05]])[None]
    table = review_table(_meta(["harmonic", None, None]), probs)
    assert table.index.tolist() == [0, 1, 2]  # the labelled error first, then the uncertain unlabelled one
    assert table.loc[1, "label"] == "" and table.loc[1, "reason"] == UNCERTAIN
    assert "self_confidence" not in json.loads(table.loc[1, "scores"])


def test_table_checks_shapes_and_labels():
    with pytest.raises(ValueError, match="shape"):
        review_table(_meta(["harmonic"]), np.full((1, 2, 3), 1 / 3))
    with pytest.raises(ValueError, match="bogus"):
        review_table(_meta(["bogus"]), np.full((1, 1, 3), 1 / 3))


# --- the job ---


@pytest.mark.slow
def test_review_job_smoke_test(tmp_path):
    out = tmp_path / "review.csv"
    run = subprocess.run(
        [sys.executable, "jobs/review.py", "--smoke-test", "--out", str(out), "--limit", "10"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    table = pd.read_csv(out, keep_default_na=False)
    assert summary["rows"] == len(table) == 10 and list(table.columns) == list(REVIEW_COLUMNS)
    assert DISAGREE in summary["reasons"]  # two differently seeded untrained models


# --- end to end: flipped labels ---

N_FLIPPED = 20
TOP = 60


def _train_checkpoint(metadata: Path, out: Path) -> tuple[Path, np.ndarray]:
    """Trains a small resnet on the clean labels of 70 % of the recordings; returns (best.pt, train-row mask).
    12 epochs: 17 of the 20 flipped labels in the top 60 (30 epochs found 16 in 1.4x the time)."""
    from guitar_cls.config import config_from_dict
    from guitar_cls.data.audio import load_snippet
    from guitar_cls.data.schema import LABEL_TO_INDEX, read_metadata
    from guitar_cls.train.checkpoint import save_checkpoint
    from guitar_cls.train.loop import SnippetSet, fit

    cfg = config_from_dict(
        {
            "data": {"max_duration": 1.0},
            "model": {"name": "resnet", "params": {"base_width": 8, "blocks": [1, 1, 1, 1]}},
            "features": {"n_mels": 64, "hop_length": 256, "n_fft": 1024},
            "augmentation": {"enabled": False},
            "training": {"epochs": 12, "batch_size": 16, "learning_rate": 3e-3, "use_gpu": False},
        }
    )
    df = read_metadata(metadata)
    waves, lengths = [], []
    for row in df.itertuples():
        windows, n = load_snippet(metadata.parent / row.source_audio, row.onset_sec, row.offset_sec, cfg.data)
        waves.append(windows[0][: n[0]])
        lengths.append(n[0])
    data = SnippetSet(waves, np.array(lengths), df["label_category"].map(LABEL_TO_INDEX).to_numpy(np.int64))
    recordings = np.sort(df["source_audio"].unique().to_numpy(dtype=str))
    np.random.default_rng(0).shuffle(recordings)
    train = df["source_audio"].isin(recordings[: int(0.7 * len(recordings))]).to_numpy()
    summary = fit(cfg, data.subset(np.flatnonzero(train)), data.subset(np.flatnonzero(~train)))
    return save_checkpoint(summary["best_payload"], out / "best.pt"), train


@pytest.mark.slow
def test_flipped_labels_rank_at_the_top(tmp_path_factory):
    """A model trained on clean labels reviews the table with 20 labels flipped: >= 85 % of those on the recordings
    it trained on (it learned their clean labels) and >= 60 % of all in the top 60 of the ~700 events (a random order
    would put about 2 there). How many held-out flips a 12-epoch model finds depends on the CPU's float kernels: the
    same code found 17 of 20 on one 2-core EPYC and 14 (13 of 14 trained-on, 1 of 6 held out) on a newer one."""
    from guitar_cls.data.schema import FLAG_COLUMNS, LABELS, read_metadata
    from guitar_cls.data.synth import make_demo_dataset

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("review_demo")
    metadata = make_demo_dataset(root, n_recordings=60, seed=3)
    checkpoint, train = _train_checkpoint(metadata, root)
    df = read_metadata(metadata)
    rng = np.random.default_rng(7)
    flipped = rng.choice(len(df), N_FLIPPED, replace=False)
    for i in flipped:
        new = rng.choice([name for name in LABELS if name != df.at[i, "label_category"]])
        df.at[i, "label_category"] = new
        for name, column in FLAG_COLUMNS.items():
            df.at[i, column] = name == new
    df.to_csv(root / "noisy.csv", index=False)

    table = review([checkpoint], root / "noisy.csv", root, out=root / "review.csv")
    assert len(table) == len(df) >= 10 * TOP
    rank = table.index.get_indexer(flipped)
    found = int((rank < TOP).sum())
    seen = train[flipped]  # on the recordings the model trained on: it learned their clean labels
    found_seen = int((rank[seen] < TOP).sum())
    print(
        f"flipped labels in the top {TOP}: {found}/{N_FLIPPED}; of the trained-on recordings' {found_seen}/"
        f"{int(seen.sum())} (ranks {sorted(rank[seen].tolist())}, held out {sorted(rank[~seen].tolist())})"
    )
    assert found_seen >= 0.85 * seen.sum() and found >= 0.6 * N_FLIPPED
    top = table.loc[flipped[rank < TOP]]
    # A held-out flip can land in the top for low confidence with the model agreeing with the new (wrong) label, as
    # one did on a CI CPU: the flips in the top must hold as many label errors as 85 % of the trained-on flips, and a
    # label error contradicts the label.
    errors = top[top["reason"].str.startswith(LABEL_ERROR)]
    assert len(errors) >= 0.85 * seen.sum() and (errors["label"] != errors["predicted"]).all()
    written = pd.read_csv(root / "review.csv", keep_default_na=False)
    assert written["file"].tolist() == table["file"].tolist()
