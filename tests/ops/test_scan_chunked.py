"""The chunked PyTorch scan against the reference: outputs, all gradients, dtypes, options, memory."""


import pytest
import torch

from algnet.ops import scan_chunked, selective_scan_ref

from scan_cases import NAMES, OPTIONS, compare, make_inputs, peak_extra_mb


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
    x = make_inputs(1, 4, 8, 20, torch.float32, seed=6)
    y = scan_chunked.selective_scan(**{k: v.bfloat16() if k in ("u", "delta", "z") else v for k, v in x.items()}, delta_softplus=True)
    assert y.dtype == torch.bfloat16
    ref = selective_scan_ref(**{k: v.bfloat16().float() if k in ("u", "delta", "z") else v for k, v in x.items()}, delta_softplus=True)
    torch.testing.assert_close(y.float(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())


def test_gradcheck_float64():
    x = make_inputs(1, 2, 3, 9, torch.float64, seed=7)
    leaves = [x[k].clone().requires_grad_() for k in NAMES]
    assert torch.autograd.gradcheck(lambda *a: scan_chunked.selective_scan(*a, delta_softplus=True), leaves)


def test_memory_bounded():
    """L=16,384: a (L, E, N) float32 tensor would be 128 MiB; one block's temporaries ~70 MiB."""
    assert peak_extra_mb("scan_chunked", 16_384) < 48


@pytest.mark.slow
def test_memory_bounded_long_sequence():
    """L=131,072 (a (L, E, N) tensor: 1 GiB). The chunked fallback needs about 3 min for this on
    2 cores, and over 15 min at the full-resolution L=921,600; its memory does not grow with L."""
    assert peak_extra_mb("scan_chunked", 131_072) < 64
