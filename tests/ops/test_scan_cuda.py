"""The mamba_ssm adapter: clear reasons when it cannot run, the reference's numbers when it can."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from algnet.ops import BackendUnavailable, backend_status, resolve_backend, scan_cuda, selective_scan_ref

HAS_MAMBA = importlib.util.find_spec("mamba_ssm") is not None


class TestAvailability:
    def test_cpu_tensors_refused(self):
        ok, reason = scan_cuda.is_available(torch.device("cpu"))
        assert not ok and "CUDA" in reason

    @pytest.mark.skipif(HAS_MAMBA, reason="mamba_ssm is installed here")
    def test_missing_package_named(self, monkeypatch):
        # Pretend a GPU exists so the check reaches the import.
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        ok, reason = scan_cuda.is_available(torch.device("cuda"))
        assert not ok
        assert "mamba_ssm is not installed" in reason and "pip install mamba-ssm" in reason

    def test_interface_without_extension_named(self, monkeypatch):
        # Upstream's interface module imports selective_scan_cuda at the top.
        def fake_import(name, *args, **kwargs):
            err = ModuleNotFoundError("No module named 'selective_scan_cuda'", name="selective_scan_cuda")
            raise err

        monkeypatch.setattr(scan_cuda.importlib, "import_module", fake_import)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        ok, reason = scan_cuda.is_available(torch.device("cuda"))
        assert not ok and "without its compiled selective-scan extension" in reason

    def test_missing_extension_named(self, monkeypatch):
        # mamba_ssm importable but built without its Mamba-1 kernel: the reason says so.
        fake = type(sys)("fake")
        fake.selective_scan_fn = lambda *a, **k: None
        for name in ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.selective_scan_interface"):
            monkeypatch.setitem(sys.modules, name, fake)
        monkeypatch.setitem(sys.modules, "selective_scan_cuda", None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        ok, reason = scan_cuda.is_available(torch.device("cuda"))
        assert not ok and "selective_scan_cuda" in reason

    @pytest.mark.skipif(HAS_MAMBA, reason="mamba_ssm is installed here")
    def test_dispatcher_reports_reason(self):
        ok, reason = backend_status("cuda", "cuda")
        assert not ok and reason
        with pytest.raises(BackendUnavailable, match="cuda"):
            resolve_backend("cuda", "cuda")

    def test_float64_refused(self):
        u = torch.zeros(1, 2, 3, dtype=torch.float64)
        with pytest.raises(TypeError, match="float64"):
            scan_cuda.selective_scan(u, u, torch.zeros(2, 1), torch.zeros(1, 1, 3), torch.zeros(1, 1, 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_against_reference_on_gpu():
    ok, reason = scan_cuda.is_available(torch.device("cuda"))
    if not ok:
        pytest.skip(reason)
    g = torch.Generator(device="cuda").manual_seed(0)
    b, e, n, l = 2, 32, 16, 500

    def rn(*shape):
        return torch.randn(*shape, device="cuda", generator=g)

    args = [rn(b, e, l), rn(b, e, l) * 0.5, -torch.rand(e, n, device="cuda", generator=g) * 4 - 0.1,
            rn(b, n, l), rn(b, n, l), rn(e), rn(b, e, l), rn(e) * 0.2]
    args = [t.requires_grad_() for t in args]
    wide = [t.detach().double().requires_grad_() for t in args]
    y = scan_cuda.selective_scan(*args, delta_softplus=True)
    y_ref = selective_scan_ref(*wide, delta_softplus=True)
    dy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, args, dy.float())
    grads_ref = torch.autograd.grad(y_ref, wide, dy)
    for got, want in [(y, y_ref), *zip(grads, grads_ref)]:
        assert (got.double() - want).abs().max() <= 1e-4 * want.abs().max()
