"""LPIPS (Zhang et al., CVPR 2018), AlexNet v0.1, as the DPDD tables report it.

The ``lpips`` package is optional and nothing here downloads: its AlexNet backbone must already be in
the torch hub cache, or a complete LPIPS state dict must be named by ``ALGNET_LPIPS_WEIGHTS``. When
neither is there, :func:`load_lpips` returns None and says once how to provide them; the other
metrics are reported as usual.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import numpy as np

ENV_WEIGHTS = "ALGNET_LPIPS_WEIGHTS"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"  # what torchvision.models.alexnet(pretrained=True) loads
HINT = (
    "LPIPS is not available, reporting it as null. To get it: `pip install lpips` (it needs torchvision; "
    "install the CPU/CUDA build matching your torch), and either put torchvision's AlexNet weights "
    f"({ALEXNET_FILE}) in {{hub}}/checkpoints/, or set {ENV_WEIGHTS} to a file holding a complete "
    "lpips.LPIPS(net='alex') state dict (torch.save(lpips.LPIPS(net='alex').state_dict(), path) on a machine "
    "with network access)."
)

_said = False


def _say_once(reason: str) -> None:
    global _said
    if not _said:
        import torch

        print(f"algnet: {HINT.format(hub=torch.hub.get_dir())} ({reason})", file=sys.stderr)
        _said = True


def load_lpips(device: str = "cpu") -> Callable[[np.ndarray, np.ndarray], float] | None:
    """Builds ``distance(pred, gt)`` on HxWx3 RGB float images in [0, 1], or None if unavailable.

    Matches Restormer's DPDD script: ``lpips.LPIPS(net='alex')`` (v0.1), ``normalize=True``
    (maps [0, 1] to [-1, 1]), spatial average.
    """
    import torch

    try:
        import lpips
    except ImportError as err:
        _say_once(f"cannot import lpips: {err}")
        return None
    local = os.environ.get(ENV_WEIGHTS)
    try:
        if local:
            if not Path(local).is_file():
                _say_once(f"{ENV_WEIGHTS}={local}: no such file")
                return None
            # pretrained=False, pnet_rand=True: build without touching the network, then load it all
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True, verbose=False)
            net.load_state_dict(torch.load(local, map_location="cpu", weights_only=True))
        else:
            if not (Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE).is_file():
                _say_once(f"no {ALEXNET_FILE} in the torch hub cache, and {ENV_WEIGHTS} is not set")
                return None
            net = lpips.LPIPS(net="alex", version="0.1", verbose=False)
    except Exception as err:  # noqa: BLE001 - any failure here only means "no LPIPS", said once
        _say_once(f"loading LPIPS failed: {type(err).__name__}: {err}")
        return None
    net = net.eval().to(device)

    @torch.no_grad()
    def distance(pred: np.ndarray, gt: np.ndarray) -> float:
        def to_tensor(img):
            return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None].to(device)  # (1, 3, H, W)

        return float(net(to_tensor(gt), to_tensor(pred), normalize=True).item())

    return distance
