"""The numba CPU scan against the reference: outputs, all gradients, dtypes, options and memory."""

import time

import pytest
import torch

from algnet.ops import scan_cpu, selective_scan_ref

pytestmark = pytest.mark.skipif(not scan_cpu.is_available(torch.device("cpu"))[0], reason="numba is not installed")

# State sizes: 8 here (float32 and float64), 5 for the remainder case, 32 in the network's tests. Each
# (dtype, state size) pair is a separate numba compile of about a minute on 2 cores, so tests share them.

from scan_cases import NAMES, OPTIONS, assert_computed_in_float32, compare, half_inputs, make_inputs, peak_extra_mb


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_matches_reference(dtype, options):
    compare(scan_cpu.selective_scan, make_inputs(2, 5, 8, 37, dtype), options, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [1, 2, 300])  # 300 spans three backward chunks of 128
def test_lengths(dtype, length):
    compare(scan_cpu.selective_scan, make_inputs(1, 3, 8, length, dtype, seed=length), OPTIONS[0], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_decay(dtype):
    inputs = make_inputs(2, 4, 8, 150, dtype, seed=3, large=True)
    dt = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][:, None])
    assert (dt[..., None] * inputs["A"][None, :, None, :]).min() < -100
    compare(scan_cpu.selective_scan, inputs, OPTIONS[0], dtype)


def test_state_size_not_multiple_of_vector_width():
    compare(scan_cpu.selective_scan, make_inputs(1, 19, 5, 131, torch.float32, seed=4), OPTIONS[0], torch.float32)


def test_strided_inputs_and_channels_last_output():
    """(B, L, E) memory seen as (B, E, L), as the Mamba layer passes it: same result, no copy."""
    x = make_inputs(2, 6, 8, 45, torch.float32, seed=5)
    cl = {k: x[k].transpose(1, 2).contiguous().transpose(1, 2) for k in ("u", "delta", "z")}
    y = scan_cpu.selective_scan(**{**x, **cl}, delta_softplus=True)
    assert y.stride(1) == 1  # channels-last like u
    torch.testing.assert_close(y, scan_cpu.selective_scan(**x, delta_softplus=True), rtol=0, atol=0)
    compare(scan_cpu.selective_scan, {**x, **cl}, OPTIONS[0], torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_B_C_gradients_keep_their_layout(dtype):
    """dB and dC come back laid out as B and C are, token-major or (B, N, L), so autograd copies neither."""
    x = make_inputs(2, 6, 8, 300, dtype, seed=9)  # 300 tokens: three backward chunks, the last one partial
    tm = {"B": x["B"].transpose(1, 2).contiguous().transpose(1, 2)}  # B token-major (as Mamba's x_proj split), C not
    compare(scan_cpu.selective_scan, {**x, **tm}, OPTIONS[0], dtype)
    leaves = {k: v.clone().requires_grad_() for k, v in {**x, **tm}.items()}
    y = scan_cpu.selective_scan(**leaves, delta_softplus=True)
    dB, dC = torch.autograd.grad(y.square().sum(), [leaves["B"], leaves["C"]])
    assert leaves["B"].stride() == (300 * 8, 1, 8) and dB.stride() == leaves["B"].stride()
    assert leaves["C"].stride() == (8 * 300, 300, 1) and dC.stride() == leaves["C"].stride()


def test_half_inputs_compute_in_float32():
    """bfloat16 u, delta, z: y comes back in bfloat16, rounded once from a float32 scan."""
    x = half_inputs()
    y = scan_cpu.selective_scan(**x, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    assert_computed_in_float32(y, x)


def test_gradcheck_float64():
    x = make_inputs(1, 2, 8, 9, torch.float64, seed=7)
    leaves = [x[k].clone().requires_grad_() for k in NAMES]
    assert torch.autograd.gradcheck(lambda *a: scan_cpu.selective_scan(*a, delta_softplus=True), leaves)


def test_backward_is_deterministic():
    x = make_inputs(2, 40, 8, 260, torch.float32, seed=8)
    runs = []
    for _ in range(2):
        leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
        y = scan_cpu.selective_scan(**leaves, delta_softplus=True)
        runs.append(torch.autograd.grad(y.square().sum(), list(leaves.values())))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_fast_after_torch_ops():
    """numba's and torch's thread pools must not fight: a scan right after torch ops stays fast."""
    import numba

    x = make_inputs(1, 64, 32, 8192, torch.float32, seed=9)

    def timed():
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            scan_cpu.selective_scan(**x, delta_softplus=True)
            best = min(best, time.perf_counter() - start)
        return best

    scan_cpu.selective_scan(**x, delta_softplus=True)  # compile / load
    quiet = timed()
    m = torch.randn(512, 512)
    for _ in range(5):
        m = torch.tanh(m @ m)  # leaves torch's OpenMP workers freshly active
        after = timed()
    assert numba.threading_layer() in ("omp", "workqueue")
    assert after < 3 * quiet + 0.05, (quiet, after)


def test_memory_bounded():
    """L=131,072: a (L, E, N) float32 tensor would be 1 GiB; inputs take 128 MiB."""
    assert peak_extra_mb("scan_cpu", 131_072) < 32


@pytest.mark.slow
def test_memory_bounded_full_resolution():
    assert peak_extra_mb("scan_cpu", 921_600) < 256


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("length", [300, 3])  # 3 < taps: every token in the zero-padded start
def test_causal_conv1d_silu_matches_torch(dtype, tol, bias, length):
    """The fused inference conv of the Mamba layer equals torch's causal depthwise conv1d + silu,
    also on a strided (B, L, E) slice such as in_proj's output."""
    g = torch.Generator().manual_seed(0)
    batch, channels, taps = 2, 24, 4
    xz = torch.randn(batch, length, 2 * channels, generator=g, dtype=dtype)
    x = xz[..., :channels]  # unit stride over E, row stride 2E
    weight = torch.randn(channels, taps, generator=g, dtype=dtype)
    b = torch.randn(channels, generator=g, dtype=dtype) if bias else None
    got = scan_cpu.causal_conv1d_silu(x, weight, b)
    conv = torch.nn.functional.conv1d(x.transpose(1, 2), weight[:, None, :], b, padding=taps - 1, groups=channels)
    want = torch.nn.functional.silu(conv[..., :length]).transpose(1, 2)
    assert got.shape == (batch, length, channels) and got.dtype == dtype
    assert (got - want).abs().max().item() <= tol * want.abs().max().item()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("rank", [1, 3])
def test_lowrank_delta_equals_projected_delta(dtype, tol, rank):
    """delta = dt_weight @ dt formed per tile in the kernel equals the scan of the projected delta,
    with the Mamba layer's layouts: channels-last u and z, slices of one x_proj output."""
    g = torch.Generator().manual_seed(5)
    b, e, n, length = 2, 24, 8, 300
    u = torch.randn(b, length, e, generator=g, dtype=dtype).transpose(1, 2)
    z = torch.randn(b, length, e, generator=g, dtype=dtype).transpose(1, 2)
    dt, B, C = torch.randn(b, length, rank + 2 * n, generator=g, dtype=dtype).split([rank, n, n], dim=-1)
    weight = 0.3 * torch.randn(e, rank, generator=g, dtype=dtype)
    A = -3 * torch.rand(e, n, generator=g, dtype=dtype)
    D, bias = torch.randn(e, generator=g, dtype=dtype), 0.2 * torch.randn(e, generator=g, dtype=dtype)
    got = scan_cpu.selective_scan_inference(u, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D, z, bias, True,
                                           dt_weight=weight)
    want = selective_scan_ref(u, (dt @ weight.t()).transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D, z, bias, True)
    assert got.dtype == dtype and got.stride() == u.stride()
    assert (got - want).abs().max().item() <= tol * want.abs().max().item()


def test_lowrank_delta_rejects_mismatched_shapes():
    u = torch.randn(1, 8, 10)
    A, B = -torch.rand(8, 4), torch.randn(1, 4, 10)
    with pytest.raises(ValueError, match="low-rank dt"):
        scan_cpu.selective_scan_inference(u, torch.randn(1, 2, 10), A, B, B, dt_weight=torch.randn(8, 3))
    with pytest.raises(ValueError, match="low-rank dt"):
        scan_cpu.selective_scan_inference(u, torch.randn(1, 2, 9), A, B, B, dt_weight=torch.randn(8, 2))
    with pytest.raises(ValueError, match="state must be"):
        scan_cpu.selective_scan_inference(u, u, A, B, B, state=torch.zeros(1, 8, 4, dtype=torch.float64))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_scan_in_pieces_with_carried_state_equals_one_scan(dtype, tol):
    """Scanning consecutive pieces with the state carried equals one scan, and the state left
    behind is the reference's last state."""
    g = torch.Generator().manual_seed(6)
    b, e, n, length = 2, 16, 8, 301
    u, delta, z = (torch.randn(b, e, length, generator=g, dtype=dtype) for _ in range(3))
    B, C = torch.randn(b, n, length, generator=g, dtype=dtype), torch.randn(b, n, length, generator=g, dtype=dtype)
    A, D, bias = -2 * torch.rand(e, n, generator=g, dtype=dtype), torch.randn(e, generator=g, dtype=dtype), 0.1 * torch.randn(e, generator=g, dtype=dtype)
    want, last = selective_scan_ref(u, delta, A, B, C, D, z, bias, True, return_last_state=True)
    state = torch.zeros(b, e, n, dtype=dtype)
    pieces = []
    for lo, hi in ((0, 1), (1, 130), (130, 301)):  # a single token, then a piece across a tile boundary
        s = slice(lo, hi)
        pieces.append(scan_cpu.selective_scan_inference(u[..., s], delta[..., s], A, B[..., s], C[..., s], D, z[..., s], bias, True,
                                                        state=state))
    got = torch.cat(pieces, dim=-1)
    assert (got - want).abs().max().item() <= tol * want.abs().max().item()
    assert (state - last).abs().max().item() <= tol * last.abs().max().item()
