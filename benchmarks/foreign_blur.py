"""Does a checkpoint generalise beyond the blur it was trained on?

Blurs the held-out photos (scikit-image's chelsea and coffee, never in a training split) with
kernels made by a different recipe than ``algnet.data.shake``: straight lines and circular arcs of
9 to 21 px drawn with OpenCV's anti-aliased rasteriser, convolved in sRGB (not linear light), with
light Gaussian noise and 8-bit rounding. Prints PSNR/SSIM of the input and of each checkpoint per
kernel shape and length, and writes JSON.

    python benchmarks/foreign_blur.py --checkpoint src/algnet/weights/algnet-shake.safetensors
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np


def line_kernel(length: int, angle: float) -> np.ndarray:
    size = length + 2 + (length + 1) % 2  # odd
    k = np.zeros((size, size), np.float32)
    c = size // 2
    dx, dy = (length - 1) / 2 * np.cos(angle), (length - 1) / 2 * np.sin(angle)
    cv2.line(k, (round((c - dx) * 16), round((c - dy) * 16)), (round((c + dx) * 16), round((c + dy) * 16)), 1.0, 1,
             cv2.LINE_AA, 4)
    return k / k.sum()


def arc_kernel(length: int, angle: float, bend: float) -> np.ndarray:
    """An arc of ``length`` px turning by ``bend`` radians, centred on its midpoint."""
    size = length + 2 + (length + 1) % 2
    k = np.zeros((size, size), np.float32)
    c = size // 2
    radius = length / bend
    t = np.linspace(-bend / 2, bend / 2, 4 * length)
    pts = np.stack([radius * np.sin(t), radius * (1 - np.cos(t))], 1)
    pts -= pts.mean(0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + c
    cv2.polylines(k, [np.round(pts * 16).astype(np.int32)[:, None]], False, 1.0, 1, cv2.LINE_AA, 4)
    return k / k.sum()


def items(seed: int = 0):
    from algnet.data.imread import read_rgb
    from algnet.data.sources import VAL_PHOTOS, source_path

    rng = np.random.default_rng(seed)
    for name in VAL_PHOTOS:
        sharp = read_rgb(source_path(name))
        for shape in ("line", "arc"):
            for length in (9, 13, 17, 21):
                angle = rng.uniform(0, np.pi)
                k = line_kernel(length, angle) if shape == "line" else arc_kernel(length, angle, rng.uniform(0.8, 2.0))
                blurred = cv2.filter2D(sharp, -1, k[::-1, ::-1].copy(), borderType=cv2.BORDER_REFLECT)
                blurred = blurred + rng.normal(0, 0.005, blurred.shape).astype(np.float32)
                blurred = np.round(np.clip(blurred, 0, 1) * 255) / 255
                yield f"{name.split(':')[1]}/{shape}-{length}", shape, length, sharp, blurred.astype(np.float32)


def main(argv=None) -> int:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    import algnet
    from algnet.inference import restore_pixels

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", action="append", default=[], help="checkpoint to score (repeatable)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    models = {Path(c).name: algnet.load_checkpoint(c) for c in args.checkpoint}
    rows = []
    for name, shape, length, sharp, blurred in items(args.seed):
        row = {"name": name, "shape": shape, "length": length}
        outs = {"blurred": blurred, **{m: restore_pixels(model, blurred) for m, model in models.items()}}
        for label, out in outs.items():
            out = np.clip(out, 0, 1).astype(np.float64)
            row[label] = {"psnr": float(peak_signal_noise_ratio(sharp.astype(np.float64), out, data_range=1.0)),
                          "ssim": float(structural_similarity(sharp.astype(np.float64), out, channel_axis=-1, data_range=1.0))}
        rows.append(row)
        print(f"{name:<22}" + "".join(f"  {k} {v['psnr']:.2f}" for k, v in row.items() if isinstance(v, dict)),
              file=sys.stderr)
    labels = ["blurred", *models]
    summary = {}
    for shape in ("line", "arc"):
        for length in (9, 13, 17, 21):
            sel = [r for r in rows if r["shape"] == shape and r["length"] == length]
            summary[f"{shape}-{length}"] = {lb: {m: float(np.mean([r[lb][m] for r in sel])) for m in ("psnr", "ssim")}
                                            for lb in labels}
    def cell(vals, label):
        gain = "" if label == "blurred" else f" ({vals[label]['psnr'] - vals['blurred']['psnr']:+.2f})"
        return f"{vals[label]['psnr']:>14.2f}{gain:>10} / {vals[label]['ssim']:.3f}"

    print(f"{'kernel':<10}" + "".join(f"{lb[:28]:>32}" for lb in labels))
    for key, vals in summary.items():
        print(f"{key:<10}" + "".join(cell(vals, lb) for lb in labels))
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": summary, "images": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
