"""Running a restoration model on whole images: tiling, grayscale and alpha, the ``deblur`` API.

``restore`` runs a model on (B, 3, H, W) images, either whole or through overlapping tiles. Tiles
are blended with a raised-cosine ramp over the overlap, normalised by the summed weights, so a
pixel-wise model gives exactly the whole-image result and a real network shows no seams. ALGNet's
Mamba branch scans the whole image, so tiled results approach but never equal whole-image ones;
tiles bound the memory of very large images.

``deblur`` is the Python counterpart of ``algnet deblur``: numpy arrays (uint8, uint16, float) or
image paths in, the same kind out.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from .errors import AlgnetError

DEFAULT_CHECKPOINT = "algnet-shake.safetensors"
TILE_MULTIPLE = 16  # ALGNet pads to a multiple of 16; aligned tiles need no padding


def default_checkpoint_path() -> Path:
    """Path of the checkpoint shipped in the package (``algnet/weights/``); AlgnetError if absent."""
    path = Path(__file__).resolve().parent / "weights" / DEFAULT_CHECKPOINT
    if not path.is_file():
        raise AlgnetError(f"no default checkpoint is installed ({path} is missing); pass --checkpoint PATH (Python: model=...)")
    return path


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; "cuda" without a GPU is a user error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AlgnetError("--device cuda was requested but PyTorch sees no CUDA GPU (use --device cpu or auto)")
    return device


def load_model(checkpoint: str | os.PathLike | None = None, name: str | None = None, device: str | torch.device = "auto", tlc: bool = False,
               fuse: bool = True) -> nn.Module:
    """Loads a checkpoint (default: the shipped one) in eval mode on ``device``, converted for
    inference by :func:`algnet.fuse` unless ``fuse`` is False."""
    from .deploy import fuse as fuse_model
    from .models import load_checkpoint

    path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
    try:
        model = load_checkpoint(path, name=name, tlc=tlc)
    except ValueError as err:  # e.g. an unknown --model name
        raise AlgnetError(f"{path}: {err}") from None
    model = model.to(resolve_device(device)).eval()
    return fuse_model(model) if fuse else model


def add_inference_arguments(parser) -> None:
    """``--no-fuse``, shared by the commands that run a model for inference."""
    parser.add_argument("--no-fuse", action="store_true",
                        help="run the plain model instead of its fused inference copy (algnet.fuse), to compare")


def for_gpu(model: nn.Module, device: torch.device, cuda_graph: bool = True, tf32: bool = False) -> nn.Module:
    """On CUDA: TF32 matrix products if asked (a process-wide setting, for the command-line tools;
    ``--tf32``) and the model wrapped in :class:`algnet.CUDAGraphModel` (``--no-cuda-graph`` not);
    elsewhere the model unchanged."""
    if device.type != "cuda":
        return model
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    if not cuda_graph:
        return model
    from .cuda_graph import CUDAGraphModel

    return CUDAGraphModel(model)


# ----------------------------------------------------------------------------------------- tiling


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one axis: stride tile - overlap, the last one shifted inward to end at size."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1-D weights: 1 inside, a raised-cosine ramp over ``overlap`` on sides that meet another tile.

    The ramp samples (i + 0.5) / overlap, so no weight is zero and every pixel's total is positive.
    Sides on the image border keep weight 1: a pixel covered by one tile is that tile's output.
    """
    w = torch.ones(length, dtype=torch.float64)
    if overlap > 0:
        n = min(overlap, length)
        rise = 0.5 - 0.5 * torch.cos(math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / overlap)
        if ramp_start:
            w[:n] = torch.minimum(w[:n], rise)
        if ramp_end:
            w[length - n:] = torch.minimum(w[length - n:], rise.flip(0))
    return w


def snap_tile(tile: int) -> int:
    """Rounds a tile side down to a multiple of 16 (at least 16)."""
    return max(TILE_MULTIPLE, int(tile) // TILE_MULTIPLE * TILE_MULTIPLE)


def _last_output(out) -> torch.Tensor:
    return out[-1] if isinstance(out, (list, tuple)) else out


def _run(model: Callable, x: torch.Tensor, half: bool) -> torch.Tensor:
    # Half precision through autocast: ALGNet keeps its Mamba branch in float32 by itself.
    dtype = torch.float16 if x.device.type == "cuda" else torch.bfloat16
    with torch.autocast(x.device.type, dtype=dtype, enabled=half):
        return _last_output(model(x)).float()


@torch.no_grad()
def restore(model: Callable, image: torch.Tensor, tile: int | None = None, overlap: int = 32, half: bool = False) -> torch.Tensor:
    """Restores (B, 3, H, W) images in [0, 1] with ``model``, whole or tile by tile.

    Args:
        model: returns a tensor or a list of outputs whose last is the full-size image.
        image: input on the model's device.
        tile: tile side (snapped down to a multiple of 16); None runs the whole image at once.
        overlap: pixels shared by neighbouring tiles, blended with a raised-cosine ramp.
        half: run under float16 (CUDA) / bfloat16 (CPU) autocast.

    Returns:
        float32 (B, 3, H, W) clamped to [0, 1].
    """
    if image.dim() != 4:
        raise ValueError(f"image must be (B, C, H, W), got shape {tuple(image.shape)}")
    if image.device.type == "cpu" and isinstance(model, nn.Module):
        from .ops import scan_cpu

        if scan_cpu.is_available(image.device)[0]:
            scan_cpu.prepare(model)  # the first time on a machine: compiles its kernels two at a time
    h, w = image.shape[-2:]
    if tile is None or (tile >= h and tile >= w):
        return _run(model, image, half).clamp_(0, 1)
    tile = snap_tile(tile)
    th, tw = min(tile, h), min(tile, w)
    overlap = max(0, min(int(overlap), tile // 2))
    ys, xs = _starts(h, th, overlap), _starts(w, tw, overlap)
    out = torch.zeros(image.shape[0], 3, h, w, device=image.device, dtype=torch.float32)
    weight = torch.zeros(1, 1, h, w, device=image.device, dtype=torch.float32)
    for i, y in enumerate(ys):
        wy = _ramp(th, overlap, i > 0, i < len(ys) - 1)
        for j, x in enumerate(xs):
            wx = _ramp(tw, overlap, j > 0, j < len(xs) - 1)
            win = (wy[:, None] * wx[None, :]).to(image.device, torch.float32)  # (th, tw)
            pred = _run(model, image[..., y:y + th, x:x + tw], half)
            out[..., y:y + th, x:x + tw] += pred * win
            weight[..., y:y + th, x:x + tw] += win
    return out.div_(weight).clamp_(0, 1)


# --------------------------------------------------------------------------- channels and dtypes


def restore_pixels(model: Callable, pixels: np.ndarray, device: torch.device | None = None, **kw) -> np.ndarray:
    """Restores float (H, W, C) pixels, C = 1 (L), 2 (LA), 3 (RGB) or 4 (RGBA); returns float32.

    Gray is replicated to three channels and the three results averaged back; alpha is copied
    through untouched.
    """
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise AlgnetError(f"expected an (H, W, C) image with 1-4 channels, got shape {pixels.shape}")
    colour = 1 if pixels.shape[2] <= 2 else 3
    alpha = pixels[..., colour:] if pixels.shape[2] in (2, 4) else None
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu")) if isinstance(model, nn.Module) else torch.device("cpu")
    x = torch.from_numpy(np.ascontiguousarray(pixels[..., :colour], dtype=np.float32)).permute(2, 0, 1)[None]  # (1, C, H, W)
    x = x.expand(1, 3, *x.shape[-2:]).contiguous() if colour == 1 else x
    y = restore(model, x.to(device), **kw)
    y = y.mean(dim=1, keepdim=True) if colour == 1 else y
    out = y[0].permute(1, 2, 0).cpu().numpy()  # (H, W, colour)
    return np.concatenate([out, alpha.astype(np.float32)], axis=2) if alpha is not None else out


_DEFAULT_MODELS: dict[tuple[str, str, bool], nn.Module] = {}


def _default_model(device: torch.device, tlc: bool) -> nn.Module:
    key = (str(default_checkpoint_path()), str(device), tlc)
    if key not in _DEFAULT_MODELS:
        _DEFAULT_MODELS[key] = load_model(None, device=device, tlc=tlc)
    return _DEFAULT_MODELS[key]


def deblur(
    image: np.ndarray | str | os.PathLike,
    model: nn.Module | None = None,
    *,
    tile: int | None = None,
    overlap: int = 32,
    half: bool = False,
    device: str | torch.device = "auto",
    tlc: bool = False,
) -> np.ndarray:
    """Deblurs one image and returns it in the input's own kind.

    Args:
        image: numpy (H, W) or (H, W, C) with C in 1-4 (RGB(A) order, L(A) for 1-2), dtype uint8,
            uint16 (full 0..65535 range) or float ([0, 1]); or a path to an image file.
        model: an ALGNet-like model (list of outputs, last full size); default: the checkpoint
            shipped with the package, loaded once and cached.
        tile, overlap, half: see :func:`restore`.
        device: for the default model: "auto", "cpu" or "cuda"; a given model stays where it is.
        tlc: for the default model: TLC ("-local") inference.

    Returns:
        For an array: an array of the same shape and dtype. For a path: the file's pixels, RGB(A)
        order, as uint8/uint16 by its bit depth, (H, W) for plain grayscale.
    """
    from .imageio import read_image, to_integer

    if isinstance(image, (str, os.PathLike)):
        img = read_image(image)
        pixels, dtype, squeeze = img.pixels, (np.uint8 if img.bit_depth == 8 else np.uint16), img.mode == "L"
    else:
        array = np.asarray(image)
        if array.ndim not in (2, 3):
            raise AlgnetError(f"expected an (H, W) or (H, W, C) array, got shape {array.shape}")
        dtype, squeeze = array.dtype, array.ndim == 2
        pixels = _to_float(array)
    if model is None:
        model = _default_model(resolve_device(device), tlc)
    restored = restore_pixels(model, pixels, tile=tile, overlap=overlap, half=half)
    out = restored[..., 0] if squeeze else restored
    if np.dtype(dtype) == np.uint8:
        return to_integer(out, 8)
    if np.dtype(dtype) == np.uint16:
        return to_integer(out, 16)
    return out.astype(dtype, copy=False)


def _to_float(array: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/uint16/float -> float32 (H, W, C) in [0, 1]."""
    if array.dtype == np.uint8:
        pixels = array.astype(np.float32) / 255.0
    elif array.dtype == np.uint16:
        pixels = array.astype(np.float32) / 65535.0
    elif np.issubdtype(array.dtype, np.floating):
        pixels = array.astype(np.float32)
    else:
        raise AlgnetError(f"unsupported array dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")
    return pixels[:, :, None] if pixels.ndim == 2 else pixels
