"""CUDAGraphModel: capture and replay on a GPU; on CPU tensors and with autograd it runs eagerly."""

from __future__ import annotations

import pytest
import torch

import algnet
from algnet.cuda_graph import CUDAGraphModel


class Counting(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        y = self.conv(x)
        return [y[..., ::2, ::2], y + x]


def test_cpu_inputs_run_eagerly():
    torch.manual_seed(0)
    inner = Counting()
    net = CUDAGraphModel(inner)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        got = net(x)
    assert inner.calls == 1 and not net.captured_shapes
    torch.testing.assert_close(got[-1], inner(x)[-1], rtol=0, atol=0)
    assert algnet.CUDAGraphModel is CUDAGraphModel


def test_rejects_no_graphs():
    with pytest.raises(ValueError, match="max_graphs"):
        CUDAGraphModel(Counting(), max_graphs=0)
    with pytest.raises(ValueError, match="capture_after"):
        CUDAGraphModel(Counting(), capture_after=-1)


def test_a_shape_is_captured_after_its_eager_calls():
    net = CUDAGraphModel(Counting(), capture_after=2)
    assert [net._due("a"), net._due("b"), net._due("a"), net._due("a")] == [False, False, False, True]
    assert not CUDAGraphModel(Counting(), capture_after=1)._due("a")
    assert CUDAGraphModel(Counting(), capture_after=0)._due("a")


def test_key_tells_shapes_dtypes_and_autocast_apart():
    a, b = torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 16)
    keys = {CUDAGraphModel._key(a), CUDAGraphModel._key(b), CUDAGraphModel._key(a.double())}
    # torch.autocast("cuda") turns itself off without a GPU: set the thread's CUDA autocast state directly
    saved = torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    try:
        keys.add(CUDAGraphModel._key(a))  # enabled, float16
        torch.set_autocast_dtype("cuda", torch.bfloat16)
        keys.add(CUDAGraphModel._key(a))  # enabled, bfloat16
    finally:
        torch.set_autocast_enabled("cuda", False)
        torch.set_autocast_dtype("cuda", saved)
    assert len(keys) == 5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_replays_equal_eager_on_the_gpu():
    torch.manual_seed(0)
    inner = Counting().cuda().eval()
    net = CUDAGraphModel(inner, max_graphs=1)
    with torch.no_grad():
        for shape in ((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8), (2, 3, 4, 6), (2, 3, 4, 6)):
            x = torch.randn(shape, device="cuda")
            got = net(x)
            want = inner(x)
            for g, w in zip(got, want):
                torch.testing.assert_close(g, w, rtol=0, atol=0)
    # the first shape: eager, captured, replayed; the second: eager, captured (the first dropped)
    assert len(net.captured_shapes) == 1 and net.captured_shapes[0][0] == (2, 3, 4, 6)
