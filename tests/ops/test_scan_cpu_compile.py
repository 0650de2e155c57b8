"""The CPU kernels compile lazily: inference builds the forward and the conv only, and the first
compile of a process says so once on stderr."""

import pytest
import torch

pytest.importorskip("numba")

import algnet  # noqa: E402
from algnet.ops import scan_cpu  # noqa: E402


def test_inference_builds_only_the_forward_and_the_conv(monkeypatch):
    """Fused inference of a Mamba layer needs the forward scan (float32, its state size) and the
    causal conv1d; the backward (a minute's compile of its own) is built only when a gradient is
    taken (by the plain layer)."""
    monkeypatch.setattr(scan_cpu, "_kernels", {})
    layer = algnet.Mamba(d_model=8, d_state=16, scan_backend="cpu").eval()
    x = torch.randn(1, 20, 8)
    with torch.no_grad():
        algnet.fuse(layer)(x)
    assert set(scan_cpu._kernels) == {(torch.float32, None, "conv"), (torch.float32, 16, "fwd")}
    layer(x.requires_grad_()).sum().backward()
    assert (torch.float32, 16, "bwd") in scan_cpu._kernels


def test_compile_notice_once_and_only_for_algnet(monkeypatch, capfd):
    from numba import njit

    scan_cpu._say_when_compiling()
    monkeypatch.setitem(scan_cpu._notice, "said", False)

    def other(x):
        return x + 1

    njit(other)(1)  # someone else's numba function: nothing said
    assert capfd.readouterr().err == ""

    def first(x):
        return x + 2

    def second(x):
        return x * 3

    first.__module__ = second.__module__ = "algnet.ops.example"
    njit(first)(1)
    njit(second)(1)
    err = capfd.readouterr().err
    assert err.count(scan_cpu._COMPILE_NOTICE) == 1 and err.strip() == scan_cpu._COMPILE_NOTICE


def test_compile_notice_gets_past_the_hidden_fd(monkeypatch, capfd):
    """_build points fd 2 at /dev/null while LLVM compiles (its vectoriser remarks); the notice must
    still reach the real stderr, which _build keeps in _notice["stderr_fd"]."""
    import os

    from numba import njit

    scan_cpu._say_when_compiling()
    monkeypatch.setitem(scan_cpu._notice, "said", False)

    def kernel(x):
        return x - 4

    kernel.__module__ = "algnet.ops.example"
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    monkeypatch.setitem(scan_cpu._notice, "stderr_fd", saved)
    try:
        njit(kernel)(1)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    assert capfd.readouterr().err.strip() == scan_cpu._COMPILE_NOTICE


def test_prepare_builds_the_forward_of_each_cpu_layer(monkeypatch):
    """prepare() builds, before the first pass, the forward for the state sizes of the layers that
    run on the cpu backend (here 16; the reference layer's 8 is not built)."""
    monkeypatch.setattr(scan_cpu, "_kernels", {})
    model = torch.nn.Sequential(algnet.Mamba(8, d_state=16), algnet.Mamba(8, d_state=8, scan_backend="reference"))
    scan_cpu.prepare(model)
    assert set(scan_cpu._kernels) == {(torch.float32, 16, "fwd")}


def test_a_cold_compile_starts_the_second_process_once(monkeypatch):
    """prepare() hands its second process to the compile listener, which starts it at the first
    compile of an algnet kernel (none when everything comes from the cache), once."""
    from numba import njit

    scan_cpu._say_when_compiling()
    monkeypatch.setitem(scan_cpu._notice, "said", True)
    started = []
    monkeypatch.setitem(scan_cpu._notice, "on_cold", lambda: started.append(1))

    def kernel(x):
        return x - 1

    def another(x):
        return x - 2

    kernel.__module__ = another.__module__ = "algnet.ops.example"
    njit(kernel)(1)
    njit(another)(1)
    assert started == [1] and scan_cpu._notice["on_cold"] is None


def test_glue_builder_runs(capsys):
    """Smoke test: the second process's work, here in this process (the kernels load from the cache
    or compile)."""
    scan_cpu._build_glue("float32")
