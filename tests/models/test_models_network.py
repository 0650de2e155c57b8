"""ALGNet and its variants: official test vector, shapes, gradients, TLC."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import algnet
from algnet.models.tlc import LocalAvgPool, to_tlc

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
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


@pytest.mark.parametrize("aggregation", ["fa", "sum"])
def test_fused_cpu_glue_equals_pytorch_path(aggregation, monkeypatch):
    """Inference on the CPU runs the block's token LayerNorm and aggregation as fused kernels; with
    autograd on, the same block takes the PyTorch ops. Both compute the same function."""
    from algnet.models.algnet import ALGBlock
    from algnet.ops import block_cpu

    torch.manual_seed(0)
    block = perturb(ALGBlock(16, aggregation, d_state=8)).eval()
    x = torch.randn(2, 16, 11, 7)
    calls = []
    fused = block_cpu.aggregate_residual
    monkeypatch.setattr(block_cpu, "aggregate_residual", lambda *a: calls.append(1) or fused(*a))
    with torch.no_grad():
        got = block(x)
    assert calls, "the fused path did not run"
    calls.clear()
    want = block(x)  # autograd on: PyTorch ops
    assert not calls and want.requires_grad
    torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-5)


def test_local_branch_folds_attention_into_conv():
    """conv2(x * s) computed with s folded into conv2's weight (batch 1) equals the two-step form,
    gradients included; a batch of 2 takes the two-step form."""
    from algnet.models.algnet import LocalBranch

    torch.manual_seed(0)
    branch = perturb(LocalBranch(12))
    for batch in (1, 2):
        x = torch.randn(batch, 12, 9, 10, requires_grad=True)
        got = branch(x)
        want = branch.conv2(x * branch.conv1(branch.pool(x)))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        gx, gw = torch.autograd.grad(got.square().sum(), (x, branch.conv1.weight))
        wx, ww = torch.autograd.grad(want.square().sum(), (x, branch.conv1.weight))
        torch.testing.assert_close(gx, wx, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gw, ww, rtol=1e-4, atol=1e-5)


def test_hooked_modules_are_called_by_the_inference_path():
    """The fused CPU paths skip calling some submodules; a forward hook on one of them turns the
    fusion off, so the hook fires and the output is unchanged."""
    from algnet.models.algnet import ALGBlock

    torch.manual_seed(0)
    block = perturb(ALGBlock(16, "fa", d_state=8)).eval()
    x = torch.randn(1, 16, 9, 8)
    with torch.no_grad():
        fused = block(x)
        seen = []
        for module in (block.l_layer.conv2, block.g_layer.norm, block.aggregate, block.g_layer.mamba.in_proj):
            handle = module.register_forward_hook(lambda m, i, o: seen.append(m))
            torch.testing.assert_close(block(x), fused, rtol=1e-5, atol=1e-5)
            handle.remove()
            assert seen and seen[-1] is module
