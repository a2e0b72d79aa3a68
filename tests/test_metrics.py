"""Metrics on a hand-made example, ECE on calibrated and overconfident toys, and the plots."""

from __future__ import annotations

import json

import numpy as np
import pytest

from guitar_cls.train.metrics import (
    classification_metrics,
    expected_calibration_error,
    plot_confusion_matrix,
    plot_reliability,
)


def _probs(pred: list[int], conf: float = 0.8) -> np.ndarray:
    out = np.full((len(pred), 3), (1 - conf) / 2)
    out[np.arange(len(pred)), pred] = conf
    return out


def test_metrics_of_a_hand_made_example() -> None:
    # true:  H H H H D D G G G G      (H=harmonic, D=dead_note, G=general_note)
    # pred:  H H H D D G G G G H
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
    m = classification_metrics(y_true, _probs(y_pred))
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    assert m["micro_f1"] == pytest.approx(7 / 10)
    # recalls 3/4, 1/2, 3/4; precisions 3/4, 1/2, 3/4 (columns 4, 2, 4)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    assert m["recall/dead_note"] == pytest.approx(1 / 2)
    assert m["precision/harmonic"] == pytest.approx(3 / 4)
    assert m["f1/general_note"] == pytest.approx(3 / 4)
    assert m["macro_f1"] == pytest.approx((3 / 4 + 1 / 2 + 3 / 4) / 3)
    assert m["support/harmonic"] == 4.0
    # MCC (multiclass, Gorodkin): c = 7 correct, s = 10 samples, t = true counts (4, 2, 4), p = pred counts (4, 2, 4)
    c, s, t, p = 7, 10, np.array([4, 2, 4]), np.array([4, 2, 4])
    mcc = (c * s - t @ p) / np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    assert m["mcc"] == pytest.approx(mcc)
    # every prediction has confidence 0.8 while 70 % are right
    assert m["ece"] == pytest.approx(0.1)
    json.dumps(m)
    assert all(type(v) is float for k, v in m.items() if k != "confusion_matrix")


def test_absent_class_keeps_the_fixed_label_order() -> None:
    m = classification_metrics([0, 0, 2, 2], _probs([0, 2, 2, 2]))
    assert m["confusion_matrix"] == [[1, 0, 1], [0, 0, 0], [0, 0, 2]]
    assert m["support/dead_note"] == 0.0 and m["recall/dead_note"] == 0.0
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 1) / 2)  # over the classes present


def test_ece_perfectly_calibrated_is_zero() -> None:
    # 10 predictions at confidence 0.8 of which 8 are right, 10 at 0.6 of which 6 are right
    y_pred = [0] * 10 + [1] * 10
    y_true = [0] * 8 + [1] * 2 + [1] * 6 + [2] * 4
    probs = np.vstack([_probs(y_pred[:10], 0.8), _probs(y_pred[10:], 0.6)])
    assert expected_calibration_error(y_true, probs) == pytest.approx(0.0, abs=1e-12)


def test_ece_overconfident() -> None:
    y_true = [0, 1] * 10
    probs = _probs([0] * 20, conf=0.98)  # always sure, half right
    assert expected_calibration_error(y_true, probs) == pytest.approx(0.98 - 0.5)


def test_plots_are_written(tmp_path) -> None:
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 60)
    probs = rng.dirichlet(np.ones(3), 60)
    cm = classification_metrics(y_true, probs)["confusion_matrix"]
    a = plot_confusion_matrix(cm, tmp_path / "cm.png", title="val")
    b = plot_reliability(y_true, probs, tmp_path / "sub" / "rel.png")
    for path in (a, b):
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
