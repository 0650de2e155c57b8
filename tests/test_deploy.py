"""``algnet.fuse``: the fused inference copy computes the plain model's function, for every
registered variant and TLC, on the numba (CPU) and Triton (interpreter) paths; it leaves the source
model unchanged and refuses gradients."""

from __future__ import annotations

import pytest
import torch

import algnet
from algnet.deploy import FusedALGBlock, FusedMamba, FusedNAFBlock
from algnet.ops import glue_cpu

SMALL = {"width": 8, "enc_blocks": (1, 1, 1, 1), "mid_blocks": 1, "dec_blocks": (1, 1, 1, 1)}
D_STATE = 8
TOL = 1e-4


def make(name: str, seed: int = 0, width: int = 8) -> torch.nn.Module:
    """A small variant with every parameter non-trivial: beta, gamma, g, W, norm weights and biases."""
    torch.manual_seed(seed)
    kw = {**SMALL, "width": width} if name == "nafnet32" else {**SMALL, "width": width, "d_state": D_STATE}
    model = algnet.create_model(name, **kw).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith(("beta", "gamma")):
                p.copy_(0.5 * torch.randn_like(p))
            elif pname.endswith((".g", ".w")) or "norm" in pname and pname.endswith("weight"):
                p.copy_(1 + 0.5 * torch.randn_like(p))
            else:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert len(a) == len(b)
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _check(model: torch.nn.Module, backend: str, size: tuple[int, int], scan_backend: str | None = None) -> float:
    x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = algnet.fuse(model, backend=backend, scan_backend=scan_backend)
    assert not any(isinstance(m, algnet.models.ALGBlock) for m in fused.modules())
    assert any(isinstance(m, (FusedALGBlock, FusedNAFBlock)) for m in fused.modules())
    with torch.no_grad():
        want, got = model(x), fused(x)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.requires_grad for p in model.parameters())
    return _max_diff(got, want)


@pytest.mark.parametrize("name", algnet.list_models())
def test_fused_equals_plain_on_cpu(name, monkeypatch):
    monkeypatch.setattr(glue_cpu, "_NUMBA_NORM_MIN", 0)  # the numba LayerNorm2d at every size
    err = _check(make(name), "auto", (32, 40))
    print(f"numba {name}: max |fuse(m)(x) - m(x)| = {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("name", ["algnet", "nafnet32"])
def test_fused_equals_plain_with_tlc(name, monkeypatch):
    """TLC's windowed mean gives a per-pixel attention: the fused blocks scale the map instead of folding it."""
    monkeypatch.setattr(glue_cpu, "_NUMBA_NORM_MIN", 0)
    err = _check(algnet.to_tlc(make(name), train_size=16), "auto", (32, 40))
    print(f"numba TLC {name}: {err:.2e}")
    assert err <= TOL


@pytest.mark.parametrize("name", ["algnet", "algnet_concat", "algnet_no_local", "algnet_no_global", "nafnet32"])
def test_fused_equals_plain_with_reference_glue(name):
    assert _check(make(name), "reference", (16, 16)) <= TOL


# At these widths algnet_b and algnet_nafnet_layout are algnet, and algnet_sum runs algnet's kernels
# with g = W = 1: marked slow (about a minute each in the interpreter on 2 cores).
TRITON_VARIANTS = [pytest.param(n, marks=pytest.mark.slow) if n in ("algnet_b", "algnet_nafnet_layout", "algnet_sum") else n
                   for n in algnet.list_models()]


@pytest.mark.parametrize("name", TRITON_VARIANTS)
def test_fused_equals_plain_in_triton_interpreter(name, monkeypatch):
    """The GPU path (Triton glue with the biases deferred to the kernels) on CPU tensors. The scan is
    the chunked PyTorch backend: the Triton scan takes minutes per network in the interpreter, and
    tests/ops/test_scan_triton.py checks it against the reference."""
    triton = pytest.importorskip("triton")
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(triton.language.standard.sum, InterpretedFunction):
        pytest.skip("triton was imported in compiled mode; this needs its interpreter")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    err = _check(make(name, width=4), "triton", (16, 16), scan_backend="chunked")  # width 4: the interpreter runs a program per channel
    print(f"triton {name}: {err:.2e}")
    assert err <= TOL


def test_tlc_in_triton_interpreter(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    # 32x16 against a 24-pixel window at full resolution and 12 at half: per-pixel attention there
    err = _check(algnet.to_tlc(make("algnet_nafnet_layout", width=4), train_size=16), "triton", (32, 16), scan_backend="chunked")
    print(f"triton TLC algnet_nafnet_layout: {err:.2e}")
    assert err <= TOL


def test_fused_model_refuses_gradients():
    model = make("algnet")
    fused = algnet.fuse(model)
    assert not any(p.requires_grad for p in fused.parameters())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    with pytest.raises(algnet.InferenceOnlyError, match="no gradients"):
        fused(x)
    with torch.no_grad():
        fused(x)  # fine without autograd
    model(x)[-1].sum().backward()  # the plain model still trains
    assert x.grad is not None


def test_fuse_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be one of"):
        algnet.fuse(make("nafnet32"), backend="cuda")


@pytest.mark.parametrize("d_model,piece", [(40, 10), (40, None), (80, 7)])  # dt rank 3 (in the kernel) and 5 (matmul)
def test_fused_mamba_in_pieces_equals_plain_layer(d_model, piece, monkeypatch):
    """On the CPU the fused layer scans in pieces of tokens, carrying the scan state and the conv's
    inputs across pieces, with a low-rank dt_proj inside the scan kernel; it equals the plain layer."""
    from algnet import deploy
    from algnet.ops import scan_cpu

    torch.manual_seed(0)
    m = algnet.Mamba(d_model=d_model, d_state=D_STATE)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    fused = algnet.fuse(m)
    assert isinstance(fused, FusedMamba)
    if piece is not None:
        monkeypatch.setattr(deploy, "_PIECE_BYTES", piece * 8 * m.d_inner)  # pieces of `piece` tokens
    calls = []
    kernel = scan_cpu.selective_scan_inference
    monkeypatch.setattr(scan_cpu, "selective_scan_inference", lambda *a, **k: calls.append(k["dt_weight"] is not None) or kernel(*a, **k))
    x = torch.randn(2, 45, d_model, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, want = fused(x), m(x)
    assert len(calls) == (1 if piece is None else -(-45 // piece))
    assert all(calls) == (m.dt_rank <= deploy._KERNEL_DT_RANK)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("name", algnet.list_models())
def test_fused_equals_plain_on_gpu(name, monkeypatch):
    """CUDA tensors: Triton glue and scan against the plain model, cuDNN's TF32 off (it rounds
    convolution inputs to 10 bits and would turn last-bit differences into ~1e-4 ones)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = make(name).cuda()
    x = torch.rand(1, 3, 40, 56, generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        err = _max_diff(algnet.fuse(model)(x), model(x))
    print(f"cuda {name}: {err:.2e}")
    assert err <= TOL
