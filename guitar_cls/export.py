"""ONNX export with a dynamic batch and time axis, and its parity check against PyTorch on ONNX Runtime.

Three variants (TorchScript exporter, ``dynamo=False``, opset 17):

- ``features``: the model alone, ``features float32 [B, C, F, T]`` + ``lengths int64 [B]`` (valid frames) ->
  ``logits [B, 3]``; the caller computes the features (``FeatureFrontend``).
- ``waveform`` (``include_frontend=True``): front end + model + softmax, ``wave float32 [B, N]`` + ``lengths int64
  [B]`` (valid samples) -> ``probabilities [B, 3]``. ``N`` must be at least ``n_fft`` (prepared windows always are:
  ``min_duration`` >> ``n_fft``). The STFT is exported as a matrix product and a depthwise convolution over blocks
  of ``hop`` samples (``features.block_power_spectrogram``: ONNX has no complex tensors, and ONNX Runtime's STFT op
  was 3x slower than the whole rest of the graph). Every feature type exports except ``hpss`` (its median filter
  has no ONNX op).
- ``snippet`` (``include_frontend=True, snippet=True``): the waveform graph for one snippet at a time, ``wave
  float32 [1, N]`` + ``lengths int64 [1]`` -> ``probabilities [1, 3]``: the graph cuts the wave at ``max(length,
  n_fft)``, so nothing is padding and no frame masks are traced (``features.unpadded``). A one-snippet deployment
  (``predict`` on a stream, a request per note) runs it about 25 % faster than the batch graph on one CPU thread.

The front end traces through ``features.block_power_spectrogram`` and the models' ``LengthMasker`` masks every
traced batch with symbolic sizes, so export needs no patching: the same modules run eagerly and in the graph.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from guitar_cls.config import Config
from guitar_cls.data.audio import pad_windows
from guitar_cls.data.schema import LABELS
from guitar_cls.features import unpadded
from guitar_cls.inference import median_ms

log = logging.getLogger(__name__)

OPSET = 17  # the first opset with STFT
PARITY_SECONDS = (0.3, 1.0, 2.7)  # snippet lengths of the parity check (short, typical, near max_duration)


class FeatureModel(nn.Module):
    """``(features [B, C, F, T], lengths [B]) -> logits [B, 3]``: the model alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: Tensor, lengths: Tensor) -> Tensor:
        return self.model(features, lengths)


class WaveModel(nn.Module):
    """``(wave [B, N], lengths [B] samples) -> probabilities [B, 3]``: front end, model and softmax."""

    def __init__(self, frontend: nn.Module, model: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.model = model

    def forward(self, wave: Tensor, lengths: Tensor) -> Tensor:
        feats, frames = self.frontend(wave, lengths)  # (B, C, F, T), (B,)
        return torch.softmax(self.model(feats, frames), dim=-1)


class SnippetModel(WaveModel):
    """``(wave [1, N], lengths [1] samples) -> probabilities [1, 3]`` for one snippet: the wave is cut at ``length``
    samples inside the graph and zero-padded to ``n_fft`` when shorter (the batch graph's padding), then ``WaveModel``
    runs traced inside ``features.unpadded()``: no masking ops."""

    def forward(self, wave: Tensor, lengths: Tensor) -> Tensor:
        wave = wave.index_select(1, torch.arange(lengths[0]))  # a Gather with a dynamic size: the valid samples
        short = torch.clamp(self.frontend.n_fft - lengths[0], min=0)  # zeros a shorter snippet's frame sees
        wave = nn.functional.pad(wave.float(), [0, short])
        with unpadded():
            return super().forward(wave, lengths)


def example_waves(cfg: Config, seconds: Sequence[float], seed: int = 0) -> tuple[Tensor, Tensor]:
    """Returns a padded batch of noisy tone bursts ``(B, N)`` and their lengths ``(B,)``; each at least
    ``min_duration`` long as prepared windows are (shorter ones zero-padded, the length kept)."""
    rng = np.random.default_rng(seed)
    sr = cfg.data.sample_rate
    min_n = int(round(cfg.data.min_duration * sr))
    waves = []
    for i, s in enumerate(seconds):
        t = np.arange(int(round(s * sr))) / sr
        w = np.sin(2 * np.pi * (110 + 70 * i) * t) * np.exp(-t / 0.4) + 0.05 * rng.standard_normal(t.size)
        waves.append((w / np.abs(w).max()).astype(np.float32))
    batch, lengths = pad_windows(waves, min_samples=max(min_n, cfg.features.n_fft))
    return batch, lengths


def variant_name(include_frontend: bool, snippet: bool) -> str:
    """Returns the name of the ONNX variant ``export_onnx`` writes for these arguments (see module doc)."""
    return "snippet" if snippet else "waveform" if include_frontend else "features"


def export_onnx(
    model: nn.Module,
    frontend: nn.Module,
    cfg: Config,
    path: str | Path,
    *,
    include_frontend: bool = False,
    snippet: bool = False,
    opset: int = OPSET,
) -> Path:
    """Writes the ``features`` (default), ``waveform`` (``include_frontend``) or ``snippet`` (``include_frontend``
    and ``snippet``) ONNX variant to ``path`` and returns it (see module doc)."""
    import onnx

    if snippet and not include_frontend:
        raise ValueError("the snippet variant includes the front end: pass include_frontend=True")
    if include_frontend and cfg.features.name == "hpss":
        raise ValueError("the hpss front end cannot be exported (median filter); export the features variant")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model, frontend = model.cpu().eval(), frontend.cpu().eval()
    wave, lengths = example_waves(cfg, (1.0, 0.6))  # unequal lengths: padding, so masking is traced
    variant = variant_name(include_frontend, snippet)
    if snippet:
        module: nn.Module = SnippetModel(frontend, model).eval()
        args: tuple[Tensor, ...] = (wave[1:], lengths[1:])  # padded past its length: the cut is traced
        names, output = ["wave", "lengths"], "probabilities"
        axes = {"wave": {1: "samples"}}
    elif include_frontend:
        module = WaveModel(frontend, model).eval()
        args = (wave, lengths)
        names, output = ["wave", "lengths"], "probabilities"
        axes = {"wave": {0: "batch", 1: "samples"}, "lengths": {0: "batch"}, output: {0: "batch"}}
    else:
        with torch.no_grad():
            args = frontend(wave, lengths)
        module = FeatureModel(model).eval()
        names, output = ["features", "lengths"], "logits"
        axes = {"features": {0: "batch", 3: "frames"}, "lengths": {0: "batch"}, output: {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about Python values: the parity check is the judge
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=names,
            output_names=[output],
            dynamic_axes=axes,
        )
    model.eval()  # the exporter restores the wrapper's mode, which must stay eval
    proto = onnx.load(str(path))
    props = {
        "variant": variant,
        "labels": json.dumps(list(LABELS)),
        "sample_rate": str(cfg.data.sample_rate),
        "config": json.dumps(cfg.to_dict()),
    }
    onnx.helper.set_model_props(proto, props)
    onnx.save(proto, str(path))
    log.info("exported %s variant to %s", props["variant"], path)
    return path


def onnx_session(path: str | Path, threads: int = 1) -> Any:
    """Returns an ONNX Runtime CPU session running on ``threads`` intra-op threads (1 inter-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_probabilities(session: Any, wave: Tensor, lengths: Tensor, frontend: nn.Module) -> np.ndarray:
    """Returns probabilities ``(B, 3)`` from either variant's session for a waveform batch."""
    names = [i.name for i in session.get_inputs()]
    if wave.shape[0] != 1 and onnx_variant(session) == "snippet":
        raise ValueError(f"the snippet graph classifies one snippet at a time, got a batch of {wave.shape[0]}")
    if names[0] == "wave":
        return session.run(None, {"wave": wave.numpy(), "lengths": lengths.numpy()})[0]
    with torch.no_grad():
        feats, frames = frontend(wave, lengths)
    logits = session.run(None, {"features": feats.numpy(), "lengths": frames.numpy()})[0]
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def onnx_latency_ms(
    session: Any, frontend: nn.Module, cfg: Config, *, seconds: float = 1.0, runs: int = 20, warmup: int = 3
) -> float:
    """Returns the median ms to classify one snippet of ``seconds`` with an ONNX Runtime session, features
    included (inside the graph for the waveform variant, computed by ``frontend`` on one torch thread otherwise)."""
    n = int(round(seconds * cfg.data.sample_rate))
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((1, n)).astype(np.float32) * 0.1)
    lengths = torch.tensor([n])
    return median_ms(lambda: onnx_probabilities(session, wave, lengths, frontend), runs=runs, warmup=warmup)


def onnx_variant(session: Any) -> str:
    """Returns the ``variant`` recorded in an exported graph's metadata (``features``, ``waveform`` or ``snippet``)."""
    return str(session.get_modelmeta().custom_metadata_map.get("variant", "features"))


def onnx_parity(
    path: str | Path, model: nn.Module, frontend: nn.Module, cfg: Config, seconds: Sequence[float] = PARITY_SECONDS
) -> float:
    """Returns the max abs difference of probabilities between ONNX Runtime and PyTorch, over a padded batch of
    snippets of ``seconds`` (not for the one-snippet graph) and over each snippet alone (shorter ones zero-padded
    to ``min_duration`` as prepared windows are)."""
    session = onnx_session(path, threads=1)
    model, frontend = model.cpu().eval(), frontend.cpu().eval()
    wave, lengths = example_waves(cfg, seconds, seed=1)
    min_n = max(int(round(cfg.data.min_duration * cfg.data.sample_rate)), cfg.features.n_fft)
    alone = [(wave[i : i + 1, : max(int(n), min_n)], lengths[i : i + 1]) for i, n in enumerate(lengths)]
    worst = 0.0
    with torch.no_grad():
        for w, n in alone if onnx_variant(session) == "snippet" else [(wave, lengths), *alone]:
            ref = torch.softmax(model(*frontend(w, n)), dim=-1).numpy()
            worst = max(worst, float(np.abs(onnx_probabilities(session, w, n, frontend) - ref).max()))
    return worst


def export_model(
    source: Any,
    out: str | Path,
    *,
    include_frontend: bool = False,
    snippet: bool = False,
    seconds: Sequence[float] = PARITY_SECONDS,
) -> dict[str, Any]:
    """Exports a checkpoint / ``models:/`` URI / Classifier to ``out``, checks parity; returns a summary dict."""
    from guitar_cls.predict import Classifier, EnsembleClassifier

    # an ensemble of one front end (a sweep's refit members) exports as one graph of its members (predict.MemberMean)
    clf = source if isinstance(source, (Classifier, EnsembleClassifier)) else Classifier.load(source)
    path = export_onnx(clf.model, clf.frontend, clf.cfg, out, include_frontend=include_frontend, snippet=snippet)
    diff = onnx_parity(path, clf.model, clf.frontend, clf.cfg, seconds)
    return {
        "onnx": str(Path(path).resolve()),
        "variant": variant_name(include_frontend, snippet),
        "model": clf.source,
        "parity_seconds": list(seconds),
        "max_abs_diff_probabilities": diff,
        "size_mb": round(Path(path).stat().st_size / 2**20, 3),
    }
