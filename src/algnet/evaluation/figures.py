"""Comparison figures: blurred | restored | sharp side by side, with a zoomed crop under each.

The crop is a chosen box or, by default, the window where the restored image is furthest from the
sharp one, which is where a reader should look. Drawn with OpenCV and numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

Box = tuple[int, int, int, int]  # (top, left, height, width)


def _as_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return np.round(image / 257.0).astype(np.uint8)
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def largest_error_box(restored: np.ndarray, sharp: np.ndarray, size: int | None = None) -> Box:
    """The ``size`` x ``size`` window (default: a quarter of the shorter side) of largest mean error."""
    from scipy import ndimage

    r, s = _as_uint8(restored).astype(np.float32), _as_uint8(sharp).astype(np.float32)
    h, w = s.shape[:2]
    size = max(1, min(size or min(h, w) // 4, h, w))
    err = ndimage.uniform_filter(np.abs(r - s).mean(axis=2), size, mode="constant")  # window means, centred
    half = size // 2
    valid = err[half: h - size + half + 1, half: w - size + half + 1]  # centres of windows inside the image
    top, left = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(top), int(left), size, size


def comparison_figure(restored: np.ndarray, sharp: np.ndarray, blurred: np.ndarray | None = None,
                      box: Box | None = None, title: str | None = None) -> np.ndarray:
    """Builds the figure as an RGB uint8 array.

    Args:
        restored: HxWx3 RGB, uint8/uint16 or float in [0, 1].
        sharp: the ground truth, same size.
        blurred: the input, same size, or None for a two-panel figure.
        box: (top, left, height, width) of the zoomed crop; default: :func:`largest_error_box`.
        title: text over the restored panel (e.g. its PSNR).
    """
    import cv2

    panels = [("blurred", blurred), (title or "restored", restored), ("sharp", sharp)]
    panels = [(label, _as_uint8(img)) for label, img in panels if img is not None]
    h, w = panels[-1][1].shape[:2]
    if any(img.shape[:2] != (h, w) for _, img in panels):
        raise ValueError(f"comparison_figure: panels differ in size: {[img.shape for _, img in panels]}")
    top, left, bh, bw = box or largest_error_box(restored, sharp)
    zoom_h = max(1, round(w * bh / bw))
    columns = []
    for label, img in panels:
        full = np.ascontiguousarray(img.copy())
        cv2.rectangle(full, (left, top), (left + bw - 1, top + bh - 1), (255, 0, 0), max(1, w // 256))
        crop = cv2.resize(img[top: top + bh, left: left + bw], (w, zoom_h), interpolation=cv2.INTER_NEAREST)
        caption = np.full((24, w, 3), 255, np.uint8)
        cv2.putText(caption, label, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        columns.append(np.concatenate([caption, full, crop], axis=0))
    gap = np.full((columns[0].shape[0], 4, 3), 255, np.uint8)
    out = [columns[0]]
    for col in columns[1:]:
        out += [gap, col]
    return np.concatenate(out, axis=1)


def select_names(rows: Sequence[dict], worst: int = 3, best: int = 0, names: Sequence[str] | None = None) -> list[str]:
    """The chosen ``names``, else the ``worst`` lowest and ``best`` highest by PSNR (no repeats)."""
    if names:
        known = {r["name"] for r in rows}
        unknown = [n for n in names if n not in known]
        if unknown:
            from ..errors import AlgnetError

            raise AlgnetError(f"--figures-names: not among the scored images: {', '.join(unknown[:5])}")
        return list(names)
    ranked = sorted(rows, key=lambda r: r["psnr"])
    chosen = [r["name"] for r in ranked[:worst]] + [r["name"] for r in ranked[::-1][:best]]
    return list(dict.fromkeys(chosen))


def save_figure(figure: np.ndarray, out_dir: str | Path, name: str) -> Path:
    """Writes ``figure`` (RGB) as ``out_dir/<name with / as __>.png``."""
    import cv2

    path = Path(out_dir) / (Path(name.replace("/", "__")).with_suffix("").name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(figure, cv2.COLOR_RGB2BGR)):
        from ..errors import AlgnetError

        raise AlgnetError(f"{path}: cannot write the figure")
    return path
