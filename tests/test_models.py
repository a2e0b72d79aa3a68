"""Model registry and every registered model: shapes, autograd, and padded-batch == alone agreement."""

from __future__ import annotations

import pytest
import torch

from guitar_cls.models import build_model, list_models, model_params
from guitar_cls.models.blocks import LengthMasker, conv_out_length

# Small widths so the whole file runs in seconds on a CPU.
SMALL: dict[str, dict] = {
    "resnet": {"base_width": 8},
    "resnet_reference": {"base_width": 8, "blocks": (1, 1, 1, 1)},
    "efficientnet_b0": {"width_mult": 0.25, "depth_mult": 0.34},
    "mobilenet_v3_small": {"width_mult": 0.25},
    "mobilenet_v3_large": {"width_mult": 0.25},
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Runs these small models on one thread: on a loaded 2-core CI box, OpenMP spinning made them 50x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(name: str, **kw) -> torch.nn.Module:
    return build_model(name, **{**SMALL.get(name, {}), **kw})


def _padded_batch(lengths: list[int], c: int, f: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    x = torch.randn(len(lengths), c, f, max(lengths), generator=g)
    x = x * (torch.arange(max(lengths)) < lens[:, None])[:, None, None, :]  # the frontend's zero padding
    return x, lens


def test_registry_lists_the_contract_names() -> None:
    assert {"resnet", "efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large"} <= set(list_models())


def test_unknown_model_lists_models() -> None:
    with pytest.raises(ValueError) as err:
        build_model("resnet_9000")
    for name in list_models():
        assert name in str(err.value)


def test_unknown_parameter_is_named() -> None:
    with pytest.raises(ValueError, match="base_widht"):
        build_model("resnet", base_widht=8)


def test_none_parameters_fall_back_to_defaults() -> None:
    model = build_model("resnet", base_width=None, dropout=None, blocks=(1, 1, 1, 1))
    assert model.stem[0].out_channels == model_params("resnet")["base_width"]


def test_resnet_reference_has_the_brief_head() -> None:
    model = build_model("resnet_reference")
    dims = [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert dims == [(512, 256), (256, 128), (128, 3)]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize(("c", "f"), [(1, 128), (2, 12)])
def test_forward_backward_two_lengths(name: str, c: int, f: int) -> None:
    torch.manual_seed(0)
    model = _small(name, in_channels=c, n_classes=3)
    for t in (40, 97):
        x, lens = _padded_batch([t, t // 2 + 1], c, f)
        logits = model(x, lens)
        assert logits.shape == (2, 3)
        logits.sum().backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        model.zero_grad()
        emb = model.embed(x, lens)
        assert emb.ndim == 2 and emb.shape[0] == 2
        assert model(x, None).shape == (2, 3)


@pytest.mark.parametrize("name", list_models())
def test_padded_batch_matches_alone(name: str) -> None:
    torch.manual_seed(0)
    model = _small(name, in_channels=1)
    x, lens = _padded_batch([97, 61, 40, 23], c=1, f=32, seed=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for _ in range(3):  # a few steps so batch-norm running statistics are not the trivial (0, 1)
        loss = torch.nn.functional.cross_entropy(model(x, lens), torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Compared in float64: after the steps above activations reach the hundreds, and fp32 rounding (which depends on the
    # CPU's oneDNN kernels and on the input width) differed by 4e-4 of the scale on one CI machine. A masking error is
    # orders of magnitude larger than float64 rounding, so the tolerance below can be tight on every CPU.
    model.eval().double()
    x = x.double()
    with torch.no_grad():
        batched, batched_emb = model(x, lens), model.embed(x, lens)
        scale = batched_emb.abs().max()  # torchvision heads start tiny (std 0.01): compare relative to the scale
        for i, n in enumerate(lens.tolist()):
            alone = x[i : i + 1, :, :, :n]
            for got in (model.embed(alone, None)[0], model.embed(alone, torch.tensor([n]))[0]):
                assert (got - batched_emb[i]).abs().max() <= 1e-7 * scale, (name, n)
            logit_tol = 1e-7 * max(1.0, batched.abs().max().item())
            torch.testing.assert_close(model(alone, None)[0], batched[i], atol=logit_tol, rtol=1e-7)
        # Without lengths the padding leaks in (by far more than the tolerance): the masking is what makes them agree.
        assert (model.embed(x, None)[3] - batched_emb[3]).abs().max() > 1e-3 * scale


def test_conv_out_length_matches_pytorch_shapes() -> None:
    for k, s, p, d, ceil in [
        (7, 2, 3, 1, False),
        (3, 2, 1, 1, False),
        (1, 2, 0, 1, False),
        (5, 2, 2, 1, False),
        (3, 1, 2, 2, False),
        (3, 2, 1, 1, True),
        (2, 2, 0, 1, True),
    ]:
        for t in range(1, 30):
            if ceil:
                out = torch.nn.MaxPool2d((1, k), (1, s), (0, p), (1, d), ceil_mode=True)(torch.zeros(1, 1, 1, t))
            else:
                out = torch.nn.Conv2d(1, 1, (1, k), (1, s), (0, p), (1, d))(torch.zeros(1, 1, 1, t))
            assert conv_out_length(torch.tensor(t), k, s, p, d, ceil).item() == out.shape[-1], (k, s, p, d, ceil, t)


def test_masker_refuses_unsupported_pooling() -> None:
    with pytest.raises(TypeError, match="AvgPool2d"):
        LengthMasker(torch.nn.Sequential(torch.nn.AvgPool2d(2)))


def test_pretrained_state_dict_loads_all_but_stem_and_classifier(tmp_path, caplog) -> None:
    source = build_model("mobilenet_v3_small", n_classes=10, in_channels=3, width_mult=0.25)
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    with caplog.at_level("INFO", logger="guitar_cls.models.blocks"):
        model = build_model("mobilenet_v3_small", in_channels=1, width_mult=0.25, pretrained=str(path))
    src, dst = source.state_dict(), model.state_dict()
    skipped = {k for k in dst if src[k].shape != dst[k].shape}
    assert skipped == {"features.0.0.weight", "classifier.3.weight", "classifier.3.bias"}
    assert all(torch.equal(src[k], dst[k]) for k in dst if k not in skipped)
    assert "features.0.0.weight" in caplog.text and "classifier.3.weight" in caplog.text


def test_torchvision_families_use_batchnorm_momentum_0_1() -> None:
    for name in ("efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large"):
        bns = [m for m in _small(name).modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(m.momentum == 0.1 for m in bns)


@pytest.mark.parametrize("name", list_models())
def test_short_batches_under_cpu_bf16_match_fp32(name: str) -> None:
    """Evaluation sorts snippets by length, so a batch can be a few frames wide; PyTorch's CPU bf16 strided convs
    return junk (inf / NaN on AVX-512 BF16 and AMX CPUs) for an input one or two frames wide, which such a batch
    reaches deep in the network. Each width, with and without lengths, must give fp32's logits up to bf16 rounding."""
    torch.manual_seed(0)
    model = _small(name, in_channels=1).eval()
    for t in (1, 2, 5, 12, 30, 47):
        x, lens = _padded_batch([t] * 8, c=1, f=64, seed=t)
        with torch.no_grad():
            fp32 = model(x, lens)
            for lengths in (lens, None):
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    bf16 = model(x, lengths).float()
                assert torch.isfinite(bf16).all(), (name, t)
                torch.testing.assert_close(bf16, fp32, atol=0.05 * fp32.abs().max().item() + 1e-3, rtol=0.0)
