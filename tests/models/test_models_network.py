"""ALGNet and its variants: official test vector, shapes, gradients, TLC."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import algnet
from algnet.models.tlc import LocalAvgPool, to_tlc

REFERENCE = Path(__file__).resolve().parents[1] / "reference"  # see tests/reference/README.md
TINY = dict(width=8, enc_blocks=(1, 1, 1, 1), mid_blocks=1, dec_blocks=(1, 1, 1, 1))


def tiny(name="algnet", **kw):
    torch.manual_seed(0)
    return algnet.create_model(name, **dict(TINY, **kw))


def perturb(model, scale=0.1):
    """Moves every parameter off its initial value (beta = 0 at init would block gradients)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def test_official_forward_vector():
    ref = torch.load(REFERENCE / "official_forward_w8.pt", weights_only=True)
    model = algnet.load_checkpoint(ref["state_dict"])
    assert model.model_config["kwargs"]["width"] == ref["constructor"]["width"]
    with torch.no_grad():
        outs = model(ref["input"])
    h, w = ref["input"].shape[-2:]
    assert len(outs) == len(ref["outputs"]) == 4
    for out, expected, s in zip(outs, ref["outputs"], (8, 4, 2, 1)):
        assert out.shape[-2:] == (math.ceil(h / s), math.ceil(w / s))
        err = (out - expected[..., : out.shape[-2], : out.shape[-1]]).abs().max().item()
        assert err < 1e-4, f"scale 1/{s}: max abs error {err}"


@pytest.mark.parametrize("name", algnet.list_models())
def test_odd_size_outputs(name):
    model = tiny(name).eval()
    x = torch.rand(1, 3, 37, 53)
    with torch.no_grad():
        outs = model(x)
    scales = (8, 4, 2, 1) if name != "nafnet32" else (1,)
    assert [tuple(o.shape) for o in outs] == [(1, 3, math.ceil(37 / s), math.ceil(53 / s)) for s in scales]


@pytest.mark.parametrize("name", algnet.list_models())
def test_gradients_reach_every_parameter(name):
    model = perturb(tiny(name))
    outs = model(torch.rand(2, 3, 32, 48))
    sum((o**2).mean() for o in outs).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not dead, f"parameters without gradient: {dead[:10]}"


def test_fa_starts_as_paper():
    """Paper eq. 11: F_A = F_G + W F_L with W initialised to 1."""
    block = algnet.create_model("algnet").encoders[0][0]
    assert torch.equal(block.aggregate.w, torch.ones(1, 32, 1, 1))
    assert torch.equal(block.aggregate.g, torch.ones(1, 32, 1, 1))


def test_ablation_blocks_have_the_branches_they_claim():
    def first_block(name):
        return algnet.create_model(name, **TINY).encoders[0][0]

    assert first_block("algnet_no_local").l_layer is None and first_block("algnet_no_local").g_layer is not None
    assert first_block("algnet_no_global").g_layer is None and first_block("algnet_no_global").l_layer is not None
    concat = first_block("algnet_concat")
    assert concat.aggregate.conv.weight.shape == (8, 16, 1, 1)
    assert sum(p.numel() for p in first_block("algnet_sum").aggregate.parameters()) == 0


def test_registry_rejects_unknown_and_duplicate():
    with pytest.raises(ValueError, match="unknown model"):
        algnet.create_model("algnet_xl")
    with pytest.raises(ValueError, match="already registered"):
        algnet.models.register_model(algnet.models.variants.algnet)


def test_local_avg_pool_matches_box_filter():
    x = torch.randn(2, 3, 20, 27, dtype=torch.float64)
    k = (7, 10)
    out = LocalAvgPool(k)(x)
    box = F.avg_pool2d(x, k, stride=1)  # (h-k1+1, w-k2+1), like the integral-image mean
    _h, _w = box.shape[-2:]
    expected = F.pad(box, ((27 - _w) // 2, (27 - _w + 1) // 2, (20 - _h) // 2, (20 - _h + 1) // 2), mode="replicate")
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    big = LocalAvgPool((20, 27))(x)
    torch.testing.assert_close(big, x.mean(dim=(2, 3), keepdim=True))


def test_tlc_changes_output_only_where_window_is_smaller_than_map():
    model = perturb(tiny()).eval()
    local = to_tlc(model, train_size=32)  # windows 48, 24, 12, 6, 3 at scales 1..16
    kernels = [m.kernel_size for m in local.modules() if isinstance(m, LocalAvgPool)]
    assert kernels[0] == (48, 48) and (3, 3) in kernels
    assert not any(isinstance(m, LocalAvgPool) for m in model.modules()), "to_tlc must not modify its input"
    with torch.no_grad():
        small = torch.rand(1, 3, 32, 32)  # every window covers its map: identical
        torch.testing.assert_close(local(small)[-1], model(small)[-1], rtol=0, atol=0)
        large = torch.rand(1, 3, 96, 96)  # window 48 < map 96: differs
        assert (local(large)[-1] - model(large)[-1]).abs().max() > 1e-4


def test_tlc_windows_match_official_formula():
    local = to_tlc(algnet.create_model("algnet"), train_size=256)
    by_stage = {}
    for name, m in local.named_modules():
        if isinstance(m, LocalAvgPool):
            by_stage.setdefault(name.split(".")[0] + ("." + name.split(".")[1] if not name.startswith("middle") else ""), m.kernel_size)
    assert by_stage["encoders.0"] == (384, 384)
    assert by_stage["middle_blks"] == (24, 24)
    assert by_stage["decoders.3"] == (384, 384) and by_stage["decoders.0"] == (48, 48)
