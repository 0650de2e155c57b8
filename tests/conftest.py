"""Session set-up shared by all tests."""

import os

import torch

# Triton reads TRITON_INTERPRET when it is first imported; without a GPU its kernels can only run in
# the interpreter, so choose it before any test module (or the scan dispatcher) imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
