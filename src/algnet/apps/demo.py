"""``algnet demo``: deblur synthetically blurred photos that scikit-image ships, with the bundled
checkpoint, and a real motion-blurred photo (``clock_motion.png``); prints PSNR/SSIM before and
after and writes ``summary.json`` and ``comparison.png``. Nothing is downloaded."""

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
    p.add_argument("--images", type=int, default=4, help="held-out photos blurred with different kernels (default 4)")
    p.add_argument("--kernel-size", type=int, default=None,
                   help="blur kernel size in pixels (default: the size the bundled checkpoint was trained on, "
                        "from the training config shipped beside it)")
    p.set_defaults(func=run)


def shipped_kernel_size() -> int:
    """The blur kernel size the shipped checkpoint was validated on (``data.val.kernel_size`` of the
    training config shipped beside it)."""
    from ..inference import default_checkpoint_path
    from ..train.config import load_config

    return load_config(default_checkpoint_path().with_suffix(".yaml")).data.val.kernel_size


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


def run(args) -> int:
    import numpy as np
    import skimage.data
    import torch
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from ..data import SyntheticBlurDataset
    from ..imageio import atomic_write_bytes, read_image, write_image
    from ..deploy import fuse
    from ..inference import default_checkpoint_path, resolve_device, restore
    from ..models import load_checkpoint

    start = time.perf_counter()
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint or default_checkpoint_path()).to(device).eval()
    model = model if args.no_fuse else fuse(model)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    kernel_size = args.kernel_size if args.kernel_size is not None else shipped_kernel_size()
    data = SyntheticBlurDataset(split="val", crop_size=None, seed=args.seed, flips=False, length=args.images,
                                kernel_size=kernel_size)
    records, rows = [], []
    for i in range(len(data)):
        sample = data[i]
        blur, sharp = sample["blur"][None].to(device), sample["sharp"]
        with torch.no_grad():
            restored = restore(model, blur)[0].cpu()
        b, r, s = (t.permute(1, 2, 0).numpy().astype(np.float64) for t in (sample["blur"], restored, sharp))
        rec = {
            "name": sample["name"],
            "input_psnr": peak_signal_noise_ratio(s, b, data_range=1.0),
            "output_psnr": peak_signal_noise_ratio(s, r, data_range=1.0),
            "input_ssim": structural_similarity(s, b, channel_axis=-1, data_range=1.0),
            "output_ssim": structural_similarity(s, r, channel_axis=-1, data_range=1.0),
        }
        records.append(rec)
        print(f"{rec['name']:<24} PSNR {rec['input_psnr']:6.2f} -> {rec['output_psnr']:6.2f} dB   "
              f"SSIM {rec['input_ssim']:.4f} -> {rec['output_ssim']:.4f}")
        rows.append([(b, f"blurred {rec['input_psnr']:.2f} dB"), (r, f"restored {rec['output_psnr']:.2f} dB"), (s, "sharp")])

    clock = read_image(Path(skimage.data.__file__).parent / "clock_motion.png")
    clock_in = torch.from_numpy(np.repeat(clock.pixels[..., :1], 3, axis=-1)).permute(2, 0, 1)[None].to(device)
    with torch.no_grad():
        clock_out = restore(model, clock_in)[0].cpu().permute(1, 2, 0).numpy()
    rows.append([(clock_in[0].cpu().permute(1, 2, 0).numpy(), "real motion blur (clock_motion.png)"), (clock_out, "restored")])
    write_image(out / "clock_motion_restored.png", clock_out.mean(axis=-1, keepdims=True), mode="L", bit_depth=8)

    summary = {k: float(np.mean([r[k] for r in records])) for k in ("input_psnr", "output_psnr", "input_ssim", "output_ssim")}
    summary.update(count=len(records), kernel_size=kernel_size, images=records,
                   seconds=round(time.perf_counter() - start, 2),
                   checkpoint=str(args.checkpoint or default_checkpoint_path()), device=str(device))
    write_image(out / "comparison.png", _figure(rows).clip(0, 1), mode="RGB", bit_depth=8)
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    print(f"mean PSNR {summary['input_psnr']:.2f} -> {summary['output_psnr']:.2f} dB "
          f"(+{summary['output_psnr'] - summary['input_psnr']:.2f}), SSIM {summary['input_ssim']:.4f} -> "
          f"{summary['output_ssim']:.4f}; {len(records)} images + clock_motion.png in {summary['seconds']:.1f} s; wrote {out}/")
    return 0

