"""The chunked PyTorch scan against the reference: outputs, all gradients, dtypes, options, memory."""


import pytest
import torch

from algnet.ops import scan_chunked, selective_scan_ref

from scan_cases import NAMES, OPTIONS, assert_computed_in_float32, compare, half_inputs, make_inputs, peak_extra_mb, scan_in_dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_matches_reference(dtype, options):
    compare(scan_chunked.selective_scan, make_inputs(2, 5, 4, 37, dtype), options, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("length", [1, 2, 300])  # 300 spans three checkpointed blocks of 128
def test_lengths(dtype, length):
    compare(scan_chunked.selective_scan, make_inputs(1, 3, 8, length, dtype, seed=length), OPTIONS[0], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_large_decay(dtype):
    inputs = make_inputs(2, 4, 16, 150, dtype, seed=3, large=True)
    dt = torch.nn.functional.softplus(inputs["delta"] + inputs["delta_bias"][:, None])
    assert (dt[..., None] * inputs["A"][None, :, None, :]).min() < -100
    compare(scan_chunked.selective_scan, inputs, OPTIONS[0], dtype)


def test_state_size_not_multiple_of_vector_width():
    compare(scan_chunked.selective_scan, make_inputs(1, 19, 5, 131, torch.float32, seed=4), OPTIONS[0], torch.float32)


def test_half_inputs_compute_in_float32():
    """bfloat16 u, delta, z: y comes back in bfloat16, rounded once from a float32 scan."""
    x = half_inputs()
    y = scan_chunked.selective_scan(**x, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    assert_computed_in_float32(y, x)


def test_precision_check_rejects_a_bfloat16_scan():
    x = half_inputs()
    with pytest.raises(AssertionError, match="ulp"):
        assert_computed_in_float32(scan_in_dtype(x, torch.bfloat16), x)
    assert_computed_in_float32(scan_in_dtype(x, torch.float64).bfloat16(), x)  # and passes a float64 one


def test_gradcheck_float64():
    x = make_inputs(1, 2, 3, 9, torch.float64, seed=7)
    leaves = [x[k].clone().requires_grad_() for k in NAMES]
    assert torch.autograd.gradcheck(lambda *a: scan_chunked.selective_scan(*a, delta_softplus=True), leaves)


def block_tensor_mib(e: int = 64, n: int = 32) -> tuple[float, float]:
    """MiB of one block's (B, E, G, T, T, N) and (B, E, G, T, N) float32 tensors at batch 1, as
    scan_chunked sizes them (G * T = _BLOCK tokens): the peak is a few of the first, whatever L."""
    pairwise = e * scan_chunked._BLOCK * scan_chunked._CHUNK * n * 4 / 2**20
    per_token = e * scan_chunked._BLOCK * n * 4 / 2**20
    return pairwise, per_token


def test_memory_bounded():
    """L=16,384 (E=64, N=32): an (L, E, N) float32 tensor would be 128 MiB. A block holds at most
    three pairwise tensors at once (l_t - l_s, a masked copy, the weights or their products; 16 MiB
    each with T=16, 128-token blocks), a few per-token ones, and the blocks' outputs before they
    are concatenated (the measurement already subtracts one output). At least two pairwise
    tensors are alive together, so a measurement that saw nothing fails too."""
    pairwise, per_token = block_tensor_mib()
    outputs = 64 * 16_384 * 4 / 2**20
    peak = peak_extra_mb("scan_chunked", 16_384)
    assert 2 * pairwise < peak < 3 * pairwise + 8 * per_token + outputs, f"{peak:.1f} MiB"


@pytest.mark.slow
def test_memory_bounded_long_sequence():
    """L=131,072 (a (L, E, N) tensor: 1 GiB). The chunked fallback needs about 3 min for this on
    2 cores, and over 15 min at the full-resolution L=921,600; its memory does not grow with L."""
    pairwise, per_token = block_tensor_mib()
    outputs = 64 * 131_072 * 4 / 2**20
    assert peak_extra_mb("scan_chunked", 131_072) < 3 * pairwise + 8 * per_token + outputs
