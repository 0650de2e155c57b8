"""The GPU check's pure helpers, which run on any machine: its error measure and its timing plan."""

import importlib.util
import math
import os

import pytest
import torch

_PATH = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "gpu_check.py")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_relative_error_is_scaled_by_the_reference(gpu_check):
    want = torch.tensor([2.0, -4.0, 1.0], dtype=torch.float64)
    got = want + torch.tensor([0.0, 0.02, -0.01], dtype=torch.float64)
    assert gpu_check.relative_error(got, want) == pytest.approx(0.02 / 4.0, rel=1e-12)


def test_relative_error_of_an_all_zero_reference_is_absolute(gpu_check):
    # dA at L = 1 is exactly zero; a compiled kernel's fused multiply-add leaves ~1e-8 there.
    want = torch.zeros(8, 4, dtype=torch.float64)
    got = torch.full((8, 4), 9e-8, dtype=torch.float32)
    assert gpu_check.relative_error(got, want) == pytest.approx(9e-8, rel=1e-6)
    assert gpu_check.relative_error(got + 1.0, want) == pytest.approx(1.0 + 9e-8, rel=1e-6)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_relative_error_of_non_finite_output_is_infinite(gpu_check, bad):
    want = torch.ones(3, dtype=torch.float64)
    got = torch.tensor([1.0, bad, 1.0])
    assert gpu_check.relative_error(got, want) == math.inf


def test_scan_plan_quick(gpu_check):
    first = gpu_check.scan_candidates(True, ["chunked"], True)
    assert first == [("triton", (None, None)), ("chunked", (None, None))]
    assert gpu_check.scan_candidates(True, ["chunked"], False) == [("triton", (None, None))]


def test_scan_plan_full_times_other_tiles_at_the_first_length_only(gpu_check):
    first = gpu_check.scan_candidates(False, ["cuda", "chunked"], True)
    tiles = [cfg for backend, cfg in first if backend == "triton"]
    assert len(tiles) == 5 and len(set(tiles)) == 5
    assert all(len(cfg) == 2 for _, cfg in first)
    assert [b for b, _ in first if b != "triton"] == ["cuda", "chunked"]
    assert gpu_check.scan_candidates(False, ["cuda"], False) == [("triton", (None, None))]
