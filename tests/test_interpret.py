"""Grad-CAM maps, occlusion band importance and the embedding t-SNE plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_predict import note, tiny_checkpoint
from torch import nn

from guitar_cls import interpret
from guitar_cls.config import config_from_dict
from guitar_cls.data.audio import pad_windows
from guitar_cls.features import make_frontend
from guitar_cls.predict import Classifier

SR = 22050


def _batch(frontend: nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[np.ndarray]]:
    waves = [note(s, f0=f, seed=i) for i, (s, f) in enumerate(((1.0, 110.0), (0.6, 330.0), (1.4, 196.0)))]
    batch, lengths = pad_windows(waves)
    with torch.no_grad():
        feats, frames = frontend(batch, lengths)
    return feats, frames, waves


@pytest.mark.parametrize("family", ["resnet", "mobilenet_v3_small"])
def test_grad_cam_shape_range_and_padding(family: str, tmp_path: Path) -> None:
    clf = Classifier.load(tiny_checkpoint(tmp_path / "best.pt", model=family))
    feats, frames, _ = _batch(clf.frontend)
    cam = interpret.grad_cam(clf.model, feats, frames)
    assert cam.shape == (3, feats.shape[2], feats.shape[3])
    assert cam.min() >= 0.0 and cam.max() <= 1.0 + 1e-6
    assert np.allclose(cam.reshape(3, -1).max(axis=1), 1.0)  # each map scaled by its own peak
    for i, n in enumerate(frames.tolist()):
        assert not cam[i, :, n:].any()  # nothing past the snippet's frames
    other = interpret.grad_cam(clf.model, feats, frames, target=[0, 0, 0])
    assert other.shape == cam.shape


def test_grad_cam_targets_the_last_feature_map(tmp_path: Path) -> None:
    clf = Classifier.load(tiny_checkpoint(tmp_path / "best.pt"))
    feats, frames, _ = _batch(clf.frontend)
    hooks_before = sum(len(m._forward_hooks) for m in clf.model.modules())
    with interpret.last_feature_map(clf.model) as maps:
        clf.model(feats, frames)
    assert maps[-1].shape == clf.model.stages(clf.model.stem(feats)).shape  # the last ResNet stage's output
    assert sum(len(m._forward_hooks) for m in clf.model.modules()) == hooks_before  # hooks removed


class LowBandModel(nn.Module):
    """Logit of class 0 = 10 x mean of the lowest 8 feature bins; the other logits are 0."""

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        low = 10.0 * x[:, 0, :8].mean(dim=(1, 2))
        return torch.stack([low, torch.zeros_like(low), torch.zeros_like(low)], dim=1)


def test_band_importance_finds_the_band_the_model_uses() -> None:
    cfg = config_from_dict({"features": {"n_mels": 32}})
    frontend = make_frontend(cfg.features, cfg.data.sample_rate)
    waves = [note(0.8, f0=f, seed=i) for i, f in enumerate((98.0, 147.0, 220.0, 330.0))]
    lengths = [len(w) for w in waves]
    drop = interpret.band_importance(LowBandModel(), frontend, waves, lengths, [0, 0, 0, 0], n_bands=4)
    assert drop.shape == (4,)
    assert drop[0] > 0.05 and np.all(drop[1:] == 0.0)  # only the lowest 8 of 32 bins matter
    assert interpret.band_importance(LowBandModel(), frontend, waves, lengths, [0] * 4).shape == (16,)


def test_embeddings_tsne_and_gradcam_figures(tmp_path: Path) -> None:
    clf = Classifier.load(tiny_checkpoint(tmp_path / "best.pt"))
    waves = [note(0.3 + 0.1 * i, f0=90.0 + 25 * i, seed=i) for i in range(12)]
    emb = interpret.embeddings(clf.model, clf.frontend, waves, [len(w) for w in waves], batch_size=5)
    assert emb.shape == (12, 128)
    alone = interpret.embeddings(clf.model, clf.frontend, waves[3:4], [len(waves[3])])
    np.testing.assert_allclose(emb[3:4], alone, atol=1e-4)  # batching/padding does not change embeddings
    png = interpret.plot_tsne(emb, np.arange(12) % 3, tmp_path / "tsne.png")
    assert png.stat().st_size > 5000
    png = interpret.explain_snippet(clf.model, clf.frontend, waves[5], len(waves[5]), tmp_path / "cam.png", "x")
    assert png.stat().st_size > 5000


def test_an_ensembles_figure_maps_its_first_member_under_the_ensembles_label(tmp_path: Path, monkeypatch) -> None:
    """``predict --visualize`` on an ensemble (the sweeps' refit members): Grad-CAM of one network, its first member,
    and the title gives the ensemble's label and says whose map it is."""
    import soundfile as sf

    from guitar_cls.predict import EnsembleClassifier

    a, b = (Classifier.load(tiny_checkpoint(tmp_path / f"{i}.pt", seed=i)) for i in (1, 2))
    wav = tmp_path / "note.wav"
    sf.write(wav, note(0.8, f0=147.0), SR)
    asked = {}

    def explain(model, frontend, wave, length, out, title=""):
        asked.update(model=model, frontend=frontend, title=title)
        return Path(out)

    monkeypatch.setattr(interpret, "explain_snippet", explain)
    ens = EnsembleClassifier([a, b], [1.0, 1.0], "mean")
    interpret.explain_file(ens, wav, tmp_path / "cam.png")
    assert asked["model"] is a.model and asked["frontend"] is a.frontend
    label = ("harmonic", "dead_note", "general_note")[int(ens.classify_files([wav])[0].argmax())]
    assert asked["title"].startswith(f"note.wav: {label} (") and asked["title"].endswith("; map of member 1 of 2")
