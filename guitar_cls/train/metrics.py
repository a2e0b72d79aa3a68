"""Classification metrics (JSON-able dicts), expected calibration error and the two diagnostic plots.

scikit-learn and matplotlib are imported where they are used: this module is imported by every Ray process of a
trial (the trial's driver and Train controller only pass the training function on), and the two cost seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from guitar_cls.data.schema import LABELS


def _as_arrays(y_true: Any, y_prob: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).reshape(-1)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2 or y_prob.shape[0] != y_true.shape[0]:
        raise ValueError(f"expected y_true [N] and y_prob [N, k], got {y_true.shape} and {y_prob.shape}")
    return y_true, y_prob


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 15) -> float:
    """Returns the top-label ECE: ``sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width bins.

    Confidence is the highest class probability; bin ``b`` holds confidences in ``((b-1)/n_bins, b/n_bins]``.
    """
    y_true, y_prob = _as_arrays(y_true, y_prob)
    if len(y_true) == 0:
        return 0.0
    conf = y_prob.max(axis=1)
    correct = (y_prob.argmax(axis=1) == y_true).astype(np.float64)
    bins = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        in_bin = bins == b
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def classification_metrics(y_true: Any, y_prob: Any) -> dict[str, Any]:
    """Returns metrics of predictions ``y_prob [N, 3]`` (probabilities, in ``LABELS`` order) against ``y_true [N]``.

    Keys: ``accuracy, balanced_accuracy, macro_f1, micro_f1, mcc, ece``, per class ``precision/<label>``,
    ``recall/<label>``, ``f1/<label>``, ``support/<label>``, and ``confusion_matrix`` (rows true, columns predicted,
    ``LABELS`` order even when a class is absent). Every number is a plain Python float (the matrix holds ints).
    Balanced accuracy is the mean recall over classes present in ``y_true``; macro F1 averages all three classes
    (a class absent from both truth and predictions scores 0).
    """
    from sklearn.metrics import confusion_matrix, matthews_corrcoef, precision_recall_fscore_support

    y_true, y_prob = _as_arrays(y_true, y_prob)
    labels = list(range(len(LABELS)))
    y_pred = y_prob.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0.0)
    present = support > 0
    out: dict[str, Any] = {
        "accuracy": float(np.mean(y_pred == y_true)) if len(y_true) else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1.mean()),
        "micro_f1": float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0,  # = accuracy for single-label data
        "mcc": float(matthews_corrcoef(y_true, y_pred)) if len(y_true) else 0.0,
        "ece": expected_calibration_error(y_true, y_prob),
    }
    for i, name in enumerate(LABELS):
        out[f"precision/{name}"] = float(precision[i])
        out[f"recall/{name}"] = float(recall[i])
        out[f"f1/{name}"] = float(f1[i])
        out[f"support/{name}"] = float(support[i])
    out["confusion_matrix"] = [[int(v) for v in row] for row in cm]
    return out


def plot_confusion_matrix(cm: Any, path: str | Path, title: str | None = None) -> Path:
    """Returns ``path`` after writing the confusion matrix (counts and row-normalised shading) as an image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = Figure(figsize=(4.8, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ticks = range(len(LABELS))
    ax.set_xticks(ticks, LABELS, rotation=30, ha="right")
    ax.set_yticks(ticks, LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", color="white" if frac[i, j] > 0.5 else "black")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def plot_reliability(y_true: Any, y_prob: Any, path: str | Path, n_bins: int = 10) -> Path:
    """Returns ``path`` after writing one reliability diagram per class (one-vs-rest, equal-width bins)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y_true, y_prob = _as_arrays(y_true, y_prob)
    fig = Figure(figsize=(4.0 * len(LABELS), 4.0), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(LABELS), squeeze=False)[0]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    for c, (ax, name) in enumerate(zip(axes, LABELS)):
        p = y_prob[:, c]
        hit = (y_true == c).astype(np.float64)
        bins = np.clip(np.ceil(p * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
        centers, observed, counts = [], [], []
        for b in range(n_bins):
            in_bin = bins == b
            if in_bin.any():
                centers.append(p[in_bin].mean())
                observed.append(hit[in_bin].mean())
                counts.append(int(in_bin.sum()))
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect")
        ax.bar(
            edges[:-1],
            np.histogram(p, bins=edges)[0] / max(len(p), 1),
            width=1.0 / n_bins,
            align="edge",
            color="lightgrey",
            label="share of samples",
        )
        ax.plot(centers, observed, marker="o", label="observed")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"predicted P({name})")
        ax.set_ylabel("observed frequency")
        ax.set_title(name)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
