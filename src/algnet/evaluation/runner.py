"""``algnet eval``: run a model over a test set and score it with the same code as ``algnet score``.

The test set is named by a small YAML file (top level, or under an ``eval:`` section)::

    dataset: gopro        # gopro | hide | realblur_j | realblur_r | dpdd | folders
    root: /data/GOPRO_Large   # relative paths are relative to the current directory
    split: test           # optional, default test
    protocol: gopro       # optional: gopro | hide | realblur | dpdd | dpdd16; default from dataset
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ..errors import AlgnetError
from .pairing import ScoreItem
from .protocols import DATASET_PROTOCOL, check_protocol, from_network, read_input, to_png
from .scoring import ScoreResult, collect, score_item

CONFIG_KEYS = ("dataset", "root", "split", "protocol")


@dataclass(frozen=True)
class EvalConfig:
    dataset: str
    root: Path
    split: str = "test"
    protocol: str = "gopro"


def load_eval_config(path: str | Path) -> EvalConfig:
    """Reads and checks the YAML test-set description; unknown keys are errors."""
    import yaml

    from ..data.layouts import DATASETS

    path = Path(path)
    if not path.is_file():
        raise AlgnetError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise AlgnetError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if isinstance(data, dict) and isinstance(data.get("eval"), dict):
        data = data["eval"]
    if not isinstance(data, dict):
        raise AlgnetError(f"{path}: expected a mapping with keys {', '.join(CONFIG_KEYS)}")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise AlgnetError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(CONFIG_KEYS)}")
    for key in ("dataset", "root"):
        if not data.get(key):
            raise AlgnetError(f"{path}: missing key {key!r}")
    dataset = str(data["dataset"])
    if dataset not in DATASETS:
        raise AlgnetError(f"{path}: dataset {dataset!r} is not one of {', '.join(DATASETS)}")
    protocol = check_protocol(str(data.get("protocol") or DATASET_PROTOCOL[dataset]))
    return EvalConfig(dataset, Path(str(data["root"])).expanduser(), str(data.get("split") or "test"), protocol)


def eval_items(config: EvalConfig) -> list[ScoreItem]:
    from ..data.layouts import find_pairs

    pairs = find_pairs(config.root, config.dataset, config.split)
    if not pairs:
        raise AlgnetError(f"{config.root}: no {config.split} images in its {config.dataset} layout")
    return [ScoreItem(name=p.name, gt=Path(p.sharp), blur=Path(p.blur), group=p.group) for p in pairs]


def run_model(model, image: np.ndarray, device, half: bool = True) -> np.ndarray:
    """Restores one HxWx3 float32 RGB image in [0, 1]: ``outputs[-1]``, clamped, float32 HxWx3.

    On CUDA the network runs under float16 autocast (``half``); ALGNet keeps its scan in float32
    by itself. On CPU everything is float32.
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(device)  # (1, 3, H, W)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=half and device.type == "cuda"):
        out = model(x)
    out = out[-1] if isinstance(out, (list, tuple)) else out
    return out[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # (H, W, 3)


def save_png(image: np.ndarray, path: Path) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise AlgnetError(f"{path}: cannot write the image")


def evaluate(model, config: EvalConfig, device, save_images: str | Path | None = None, half: bool = True,
             progress: bool = True) -> tuple[ScoreResult, list[ScoreItem]]:
    """Runs ``model`` over the test set and scores each output with ``config.protocol``.

    Outputs are scored as the protocol wants them: rounded to uint8 like a saved PNG for
    GoPro/HIDE/RealBlur, the clamped floats for DPDD. ``save_images`` writes each output as
    ``<dir>/<name>.png`` (16-bit for dpdd16, else 8-bit).
    """
    from tqdm import tqdm

    from ..metrics import load_lpips

    items = eval_items(config)
    lpips_fn = load_lpips(str(device)) if config.protocol in ("dpdd", "dpdd16") else None
    rows = []
    for item in tqdm(items, desc=f"eval {config.dataset}", unit="img", disable=not progress, leave=False):
        restored = run_model(model, read_input(item.blur, config.protocol), device, half)
        if save_images:
            save_png(to_png(restored, config.protocol), Path(save_images) / Path(item.name).with_suffix(".png"))
        pred = from_network(restored, config.protocol)
        rows.append(score_item(item, config.protocol, lpips_fn is not None, pred=pred, lpips_fn=lpips_fn))
    return collect(config.protocol, items, rows), items


def figure_entries(model, items: list[ScoreItem], rows: list[dict], names: list[str], protocol: str, device,
                   half: bool = True) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray, float]]:
    """(name, blurred, restored, sharp, psnr) of the chosen images, re-running the model on each."""
    from .protocols import read_ground_truth

    by_name = {it.name: it for it in items}
    psnr = {r["name"]: r["psnr"] for r in rows}
    for name in names:
        item = by_name[name]
        blurred = read_input(item.blur, protocol)
        restored = run_model(model, blurred, device, half)
        yield name, blurred, restored, read_ground_truth(item.gt, protocol, []), psnr[name]
