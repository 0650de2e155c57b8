"""Set-up shared by all tests."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when it is first imported; without a GPU its kernels can only run in
# the interpreter, so choose it before any test module (or the scan dispatcher) imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def load_benchmark():
    """Imports a script under benchmarks/ by its file stem (the scripts are not a package)."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(stem: str):
        spec = importlib.util.spec_from_file_location(f"{stem}_bench", root / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
