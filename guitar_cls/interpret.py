"""What the model looks at: Grad-CAM over the features, mel-band importance by occlusion, t-SNE of embeddings.

Grad-CAM is hook based and family agnostic: the target is the model's last convolutional feature map, found as the
output of the last module to finish in the forward pass with a 4-D output (``[B, D, F', T']``, global pools
excluded) — the final stage of a ResNet, ``features`` of a torchvision network — i.e. what the pooling consumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor, nn

from guitar_cls.data.audio import pad_windows
from guitar_cls.data.schema import LABELS
from guitar_cls.features import frame_mask
from guitar_cls.models.blocks import MaskedGlobalPool

if TYPE_CHECKING:
    from guitar_cls.predict import Classifier

_POOLS = (MaskedGlobalPool, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@contextlib.contextmanager
def last_feature_map(model: nn.Module) -> Iterator[list[Tensor]]:
    """Yields a list that, after a forward pass, ends with the model's last 4-D feature map ``[B, D, F', T']``."""
    outputs: list[Tensor] = []

    def keep(module: nn.Module, args: tuple[Tensor, ...], out: object) -> None:
        if isinstance(out, Tensor) and out.dim() == 4 and not isinstance(module, _POOLS):
            outputs.append(out)

    handles = [m.register_forward_hook(keep) for m in model.modules() if m is not model]
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


def grad_cam(
    model: nn.Module, feats: Tensor, lengths: Tensor | None, target: Sequence[int] | None = None
) -> np.ndarray:
    """Returns Grad-CAM maps ``(B, F, T)`` in ``[0, 1]`` (each scaled by its max; frames past ``lengths`` are 0).

    Args:
        feats: ``(B, C, F, T)`` features; lengths: valid frames ``(B,)``.
        target: the class per snippet to explain (default: the predicted one).
    """
    model.eval()
    with torch.enable_grad(), last_feature_map(model) as maps:
        logits = model(feats, lengths)  # (B, K)
        if not maps:
            raise RuntimeError(f"{type(model).__name__}: no 4-D feature map found for Grad-CAM")
        fmap = maps[-1]  # (B, D, F', T')
        cls = logits.argmax(dim=1) if target is None else torch.as_tensor(target, device=logits.device)
        score = logits.gather(1, cls.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, fmap)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # (B, D, 1, 1): channel importance
    cam = torch.relu((weights * fmap).sum(dim=1, keepdim=True)).detach()  # (B, 1, F', T')
    cam = nn.functional.interpolate(cam, size=feats.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    if lengths is not None:
        cam = cam * frame_mask(lengths.to(cam.device), cam.shape[-1])[:, None, :]
    peak = cam.flatten(1).amax(dim=1).clamp(min=1e-12).view(-1, 1, 1)
    return (cam / peak).cpu().numpy()


@torch.no_grad()
def band_importance(
    model: nn.Module,
    frontend: nn.Module,
    waves: Tensor | Sequence[np.ndarray],
    lengths: Tensor | Sequence[int],
    labels: Sequence[int] | np.ndarray,
    n_bands: int = 16,
    batch_size: int = 32,
) -> np.ndarray:
    """Returns ``(n_bands,)``: the mean drop of the true-class probability when one band of feature bins (mel bands
    for log-mel, low to high) is occluded (set to 0, the silence/padding level), averaged over the snippets.

    Args:
        waves: a zero-padded batch ``(B, N)`` or a list of 1-D waves; lengths: valid samples ``(B,)``.
    """
    if not isinstance(waves, Tensor):
        waves, _ = pad_windows(list(waves))
    lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    model.eval()
    frontend.eval()
    drops = np.zeros(n_bands, dtype=np.float64)
    for start in range(0, len(labels_t), batch_size):
        sl = slice(start, start + batch_size)
        feats, frames = frontend(waves[sl], lengths[sl])  # (B, C, F, T)
        rows = torch.arange(feats.shape[0])
        base = torch.softmax(model(feats, frames), dim=-1)[rows, labels_t[sl]]
        edges = np.linspace(0, feats.shape[2], n_bands + 1).round().astype(int)
        for b in range(n_bands):
            occluded = feats.clone()
            occluded[:, :, edges[b] : edges[b + 1], :] = 0.0
            prob = torch.softmax(model(occluded, frames), dim=-1)[rows, labels_t[sl]]
            drops[b] += float((base - prob).sum())
    return drops / max(len(labels_t), 1)


@torch.no_grad()
def embeddings(
    model: nn.Module, frontend: nn.Module, waves: Sequence[np.ndarray], lengths: Sequence[int], batch_size: int = 32
) -> np.ndarray:
    """Returns the penultimate embeddings ``(N, D)`` (``model.embed``) of 1-D waves with valid ``lengths``."""
    model.eval()
    out = []
    for start in range(0, len(waves), batch_size):
        batch, _ = pad_windows(list(waves[start : start + batch_size]))
        n = torch.as_tensor(np.asarray(lengths[start : start + batch_size]), dtype=torch.long)
        out.append(model.embed(*frontend(batch, n)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def plot_tsne(emb: np.ndarray, labels: Sequence[int] | np.ndarray, path: str | Path, seed: int = 0) -> Path:
    """Returns ``path`` after writing a 2-D t-SNE scatter of embeddings ``(N, D)`` coloured by class."""
    from sklearn.manifold import TSNE

    labels = np.asarray(labels)
    perplexity = float(min(30.0, max(2.0, (len(emb) - 1) / 3)))
    method = "exact" if len(emb) < 500 else "barnes_hut"  # exact is faster (and exact) on small sets
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", method=method, random_state=seed).fit_transform(emb)
    fig = Figure(figsize=(5.5, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, name in enumerate(LABELS):
        sel = labels == i
        ax.scatter(xy[sel, 0], xy[sel, 1], s=12, alpha=0.8, label=f"{name} ({int(sel.sum())})")
    ax.set_title(f"t-SNE of embeddings (n={len(emb)}, perplexity {perplexity:.0f})")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_gradcam(feats: np.ndarray, cam: np.ndarray, path: str | Path, title: str = "", hop_sec: float = 0.0) -> Path:
    """Returns ``path`` after writing features ``(F, T)`` with the Grad-CAM map ``(F, T)`` overlaid."""
    fig = Figure(figsize=(7.0, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    extent = (0.0, feats.shape[1] * hop_sec, 0, feats.shape[0]) if hop_sec else None
    ax.imshow(feats, origin="lower", aspect="auto", cmap="magma", extent=extent)
    ax.imshow(cam, origin="lower", aspect="auto", cmap="jet", alpha=0.35, vmin=0.0, vmax=1.0, extent=extent)
    ax.set_xlabel("time (s)" if hop_sec else "frame")
    ax.set_ylabel("feature bin (low to high)")
    ax.set_title(title)
    return _save(fig, path)


def explain_snippet(
    model: nn.Module, frontend: nn.Module, wave: np.ndarray, length: int, path: str | Path, title: str = ""
) -> Path:
    """Returns ``path`` after writing the Grad-CAM figure of one prepared window (predicted class explained)."""
    batch, n = pad_windows([wave[:length]])
    with torch.no_grad():
        feats, frames = frontend(batch, n)  # (1, C, F, T)
    cam = grad_cam(model, feats, frames)[0]
    hop_sec = getattr(frontend, "hop_length", 0) / getattr(frontend, "sample_rate", 1) if frontend else 0.0
    return plot_gradcam(feats[0].mean(dim=0).numpy(), cam, path, title=title, hop_sec=hop_sec)


def explain_file(
    clf: Classifier,
    path: str | Path,
    out: str | Path,
    onset_sec: float | None = None,
    offset_sec: float | None = None,
) -> Path:
    """Returns ``out`` after writing the features of a note file (or of the ``[onset, offset)`` event of a recording)
    with the Grad-CAM map of the predicted class overlaid (first window of a long note)."""
    from guitar_cls.predict import file_windows

    windows, lengths = file_windows(path, onset_sec, offset_sec, clf.cfg.data)
    probs = clf.classify_windows([([windows[0]], [lengths[0]])])[0]
    where = "" if onset_sec is None or np.isnan(float(onset_sec)) else f" @ {float(onset_sec):.2f}s"
    title = f"{Path(path).name}{where}: {LABELS[int(probs.argmax())]} ({probs.max():.2f})"
    members = getattr(clf, "members", None)  # an ensemble: the map of its first member (the label is the ensemble's)
    if members:  # its windows are the first member's already (EnsembleClassifier.cfg is that member's)
        title += f"; map of member 1 of {len(members)}"
        clf = members[0]
    return explain_snippet(clf.model, clf.frontend, windows[0], lengths[0], out, title)


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
