"""algnet: ALGNet image deblurring with fast selective-scan kernels on CPU and GPU."""

__version__ = "0.1.0"

from . import ops
from .deploy import InferenceOnlyError, fuse
from .models import (
    ALGNet, CheckpointError, Mamba, NAFNet, create_model, list_models, load_checkpoint, save_checkpoint, to_tlc,
)

__all__ = [
    "__version__", "ops", "ALGNet", "NAFNet", "Mamba", "CheckpointError", "create_model", "list_models",
    "load_checkpoint", "save_checkpoint", "to_tlc", "fuse", "InferenceOnlyError", "deblur", "CUDAGraphModel",
]


def __getattr__(name):
    if name == "deblur":  # lazy, so `import algnet` does not load the image/inference helpers
        from .inference import deblur

        return deblur
    if name == "CUDAGraphModel":
        from .cuda_graph import CUDAGraphModel

        return CUDAGraphModel
    raise AttributeError(f"module 'algnet' has no attribute {name!r}")
