"""Process-group setup for one process, or many under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node N -m algnet train CONFIG`` sets RANK, WORLD_SIZE, LOCAL_RANK and the
rendezvous address; :func:`setup` then joins the group (NCCL on CUDA, gloo on CPU) and gives each
process its own GPU. Without those variables the run is a single process and nothing is initialised.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import AlgnetError

__all__ = ["DistContext", "setup", "cleanup", "barrier", "all_reduce_sum"]

# Validation runs on rank 0 while the others wait at a barrier; NCCL's default 10-minute timeout
# would kill a run whose validation set is large, so allow an hour.
_TIMEOUT = datetime.timedelta(minutes=60)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files, logs and validates."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _pick_device(preference: str, local_rank: int) -> torch.device:
    if preference not in ("auto", "cpu", "cuda"):
        raise AlgnetError(f"--device {preference!r}: expected auto, cpu or cuda")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AlgnetError("--device cuda: PyTorch sees no CUDA GPU here (use --device cpu or auto)")
    if local_rank >= torch.cuda.device_count():
        raise AlgnetError(f"local rank {local_rank} has no GPU: only {torch.cuda.device_count()} visible")
    return torch.device("cuda", local_rank)


def setup(device: str = "auto") -> DistContext:
    """Joins the torchrun process group when launched by torchrun; otherwise a single process.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=_TIMEOUT)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sums a tensor over ranks in place (no-op for one process) and returns it."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor

