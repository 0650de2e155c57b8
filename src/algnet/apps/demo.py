"""``algnet demo``: shake held-out photos that scikit-image ships as a camera would (the ``shake``
benchmark's images, medium level by default: paths of 7-15 px), deblur them with the bundled
checkpoint, and deblur a real motion-blurred photo (``clock_motion.png``); prints PSNR/SSIM before
and after and writes ``summary.json`` and ``comparison.png`` (with a zoomed crop where the blur
destroyed the most detail). Nothing is downloaded."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="deblur bundled sample photos with the bundled checkpoint",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--checkpoint", default=None, help="weights to use instead of the bundled checkpoint")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic blur (default 0)")
    from ..inference import add_inference_arguments

    add_inference_arguments(p)
    p.add_argument("--images", type=int, default=4, help="held-out photos shaken with different paths (default 4)")
    p.add_argument("--level", default="medium", choices=("mild", "medium", "strong"),
                   help="camera-shake strength: mild 3-7 px, medium 7-15 px (default), strong 15-25 px")
    p.set_defaults(func=run)


def _label(img, text):
    import cv2
    import numpy as np

    out = np.ascontiguousarray((img.clip(0, 1) * 255 + 0.5).astype(np.uint8))  # OpenCV draws on 8-bit only
    cv2.rectangle(out, (0, 0), (min(out.shape[1], 12 + 11 * len(text)), 26), (0, 0, 0), -1)
    cv2.putText(out, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out.astype(np.float32) / 255


def _figure(rows, height=256):
    """Stacks rows of (image HxWx3 float, label) tiles, each resized to a common height."""
    import cv2
    import numpy as np

    lines = []
    for row in rows:
        tiles = [_label(cv2.resize(img, (round(img.shape[1] * height / img.shape[0]), height), interpolation=cv2.INTER_AREA), text)
                 for img, text in row]
        lines.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=1.0) for t in tiles], axis=1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)), constant_values=1.0) for line in lines]
    return np.concatenate(lines, axis=0)


def _zoom_row(blurred, restored, sharp, height=256):
    """Blurred / restored / sharp crops of the window where the blur destroyed the most detail,
    enlarged (nearest neighbour, so pixels stay pixels)."""
    import cv2

    from ..evaluation.figures import largest_error_box

    top, left, h, w = largest_error_box(blurred, sharp, size=max(32, min(sharp.shape[:2]) // 5))
    zoom = lambda img: cv2.resize(img[top: top + h, left: left + w], (height, height), interpolation=cv2.INTER_NEAREST)  # noqa: E731
    return [(zoom(blurred), f"blurred, {w}x{h} zoom"), (zoom(restored), "restored"), (zoom(sharp), "sharp")]


def run(args) -> int:
    import math

    import numpy as np
    import skimage.data
    import torch

    from ..data.shake import LEVELS
    from ..errors import AlgnetError
    from ..evaluation.shake import psnr_ssim, shake_items
    from ..imageio import atomic_write_bytes, read_image, write_image
    from ..deploy import fuse
    from ..inference import default_checkpoint_path, resolve_device, restore
    from ..models import load_checkpoint

    if args.images < 1:
        raise AlgnetError(f"--images must be positive, got {args.images}")
    start = time.perf_counter()
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint or default_checkpoint_path()).to(device).eval()
    model = model if args.no_fuse else fuse(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    items = list(shake_items(args.seed, (args.level,), per_photo=math.ceil(args.images / 2)))
    # Alternate the photos (chelsea-0, coffee-0, chelsea-1, ...) so that a small --images shows both.
    items = sorted(items, key=lambda it: (int(it.name.rsplit("-", 1)[1]), it.name))[: args.images]
    records, rows, zoom = [], [], None
    for item in items:
        blur = torch.from_numpy(item.blurred).permute(2, 0, 1)[None].to(device)
        with torch.no_grad():
            restored = np.clip(restore(model, blur)[0].cpu().permute(1, 2, 0).numpy(), 0, 1)
        (in_psnr, in_ssim), (out_psnr, out_ssim) = psnr_ssim(item.sharp, item.blurred), psnr_ssim(item.sharp, restored)
        rec = {"name": item.name, "input_psnr": in_psnr, "output_psnr": out_psnr, "input_ssim": in_ssim,
               "output_ssim": out_ssim, "kernel_size": int(item.kernel.shape[0])}
        records.append(rec)
        print(f"{rec['name']:<24} PSNR {rec['input_psnr']:6.2f} -> {rec['output_psnr']:6.2f} dB   "
              f"SSIM {rec['input_ssim']:.4f} -> {rec['output_ssim']:.4f}")
        rows.append([(item.blurred, f"blurred {rec['input_psnr']:.2f} dB"), (restored, f"restored {rec['output_psnr']:.2f} dB"),
                     (item.sharp, "sharp")])
        if zoom is None:
            zoom = _zoom_row(item.blurred, restored, item.sharp)
    rows.insert(1, zoom)

    clock = read_image(Path(skimage.data.__file__).parent / "clock_motion.png")
    clock_in = torch.from_numpy(np.repeat(clock.pixels[..., :1], 3, axis=-1)).permute(2, 0, 1)[None].to(device)
    with torch.no_grad():
        clock_out = restore(model, clock_in)[0].cpu().permute(1, 2, 0).numpy()
    rows.append([(clock_in[0].cpu().permute(1, 2, 0).numpy(), "real motion blur (clock_motion.png)"), (clock_out, "restored")])
    write_image(out / "clock_motion_restored.png", clock_out.mean(axis=-1, keepdims=True), mode="L", bit_depth=8)

    summary = {k: float(np.mean([r[k] for r in records])) for k in ("input_psnr", "output_psnr", "input_ssim", "output_ssim")}
    summary.update(count=len(records), level=args.level, extent_px=list(LEVELS[args.level]),
                   kernel_size=max(r["kernel_size"] for r in records), images=records,
                   seconds=round(time.perf_counter() - start, 2),
                   checkpoint=str(args.checkpoint or default_checkpoint_path()), device=str(device))
    write_image(out / "comparison.png", _figure(rows).clip(0, 1), mode="RGB", bit_depth=8)
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    lo, hi = LEVELS[args.level]
    print(f"{args.level} camera shake ({lo:g}-{hi:g} px paths): mean PSNR {summary['input_psnr']:.2f} -> "
          f"{summary['output_psnr']:.2f} dB ({summary['output_psnr'] - summary['input_psnr']:+.2f}), SSIM "
          f"{summary['input_ssim']:.4f} -> {summary['output_ssim']:.4f}; {len(records)} images + clock_motion.png "
          f"in {summary['seconds']:.1f} s; wrote {out}/")
    return 0
