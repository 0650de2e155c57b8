"""Scan backend selection: names, the environment override, automatic choice and clear errors."""

import pytest
import torch

import algnet.ops as ops
from algnet.errors import AlgnetError
from algnet.ops import BackendUnavailable, available_backends, backend_status, resolve_backend, selective_scan


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return dict(u=r(1, 3, 10), delta=r(1, 3, 10), A=-torch.rand(3, 4, generator=g) - 0.5, B=r(1, 4, 10), C=r(1, 4, 10))


def test_auto_picks_cpu_kernel_on_cpu(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert backend_status("cpu", "cpu") == (True, "")
    assert resolve_backend(None, "cpu") == "cpu"
    assert resolve_backend("auto", torch.device("cpu")) == "cpu"
    assert {"reference", "chunked", "cpu"} <= set(available_backends("cpu"))


@pytest.mark.parametrize("name", ["reference", "chunked", "cpu"])
def test_named_backends_agree(name, inputs, monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    calls = []
    if name != "reference":
        module = ops._module(name)
        monkeypatch.setattr(module, "selective_scan", lambda *a, _f=module.selective_scan: calls.append(name) or _f(*a))
    y = selective_scan(**inputs, delta_softplus=True, backend=name)
    torch.testing.assert_close(y, ops.selective_scan_ref(**inputs, delta_softplus=True), rtol=1e-4, atol=1e-5)
    assert calls == ([] if name == "reference" else [name])


def test_environment_variable_overrides_auto(inputs, monkeypatch):
    module = ops._module("chunked")
    calls = []
    monkeypatch.setattr(module, "selective_scan", lambda *a, _f=module.selective_scan: calls.append(1) or _f(*a))
    monkeypatch.setenv(ops.ENV_VAR, "chunked")
    assert resolve_backend(None, "cpu") == "chunked"
    selective_scan(**inputs)
    assert calls == [1]
    assert resolve_backend("cpu", "cpu") == "cpu"  # an explicit argument wins over the variable


def test_unknown_backend_is_a_clear_error(inputs, monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    with pytest.raises(BackendUnavailable, match="unknown scan backend 'fancy'.*choose one of auto, reference"):
        selective_scan(**inputs, backend="fancy")
    monkeypatch.setenv(ops.ENV_VAR, "fancy")
    with pytest.raises(BackendUnavailable, match="ALGNET_SCAN_BACKEND=fancy"):
        selective_scan(**inputs)
    assert issubclass(BackendUnavailable, AlgnetError)  # the CLI prints it as one line


def test_unavailable_backend_says_why(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    with pytest.raises(BackendUnavailable, match="'cpu' is unavailable on meta: it runs on CPU tensors only"):
        resolve_backend("cpu", "meta")
    monkeypatch.setattr(ops.importlib, "import_module", lambda name: (_ for _ in ()).throw(ModuleNotFoundError(name=name)))
    with pytest.raises(BackendUnavailable, match="not part of this installation"):
        resolve_backend("cpu", "cpu")


def test_auto_falls_back_when_numba_is_missing(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    monkeypatch.setattr(ops._module("cpu"), "is_available", lambda device: (False, "numba is not installed"))
    assert resolve_backend(None, "cpu") == "chunked"
