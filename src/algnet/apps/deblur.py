"""``algnet deblur``: deblur image files, folders and globs with a checkpoint.

Every output keeps its input's format, bit depth (8/16), size, grayscale and alpha. Inputs are
checked and output names planned before any model runs, so a typo fails in a second, not after an
hour of work.
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

from ..errors import AlgnetError

OOM_HINT = "retry with --tile 512 (or smaller, e.g. --tile 256)"


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "deblur", help="deblur images, folders or globs",
        description="Deblur image files, folders (searched recursively) and glob patterns. Outputs keep "
                    "their input's format, bit depth, size, grayscale and alpha.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image file, folder or glob pattern (quote globs)")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="with one input image, a file name with an image extension (e.g. sharp.png) or an existing file "
                        "is the output file; otherwise OUT is a folder (created if missing) that receives every output")
    p.add_argument("--checkpoint", metavar="CKPT", help="checkpoint (.safetensors/.pth); default: the one shipped with algnet")
    p.add_argument("--model", metavar="NAME", help="architecture of a checkpoint that does not record it (see algnet.list_models())")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: cuda if available")
    p.add_argument("--tile", type=int, metavar="N", help="process N x N tiles (multiple of 16) to bound memory; default: whole image")
    p.add_argument("--overlap", type=int, default=32, metavar="M", help="tile overlap in pixels, blended smoothly (default 32)")
    p.add_argument("--half", action="store_true", help="half-precision autocast (float16 on CUDA, bfloat16 on CPU)")
    p.add_argument("--tlc", action="store_true", help="test-time local converter (the paper's '-local' inference)")
    add_gpu_arguments(p)
    p.add_argument("--overwrite", action="store_true", help="allow an output to replace its own input file")
    p.add_argument("--suffix", default="", metavar="S", help="appended to output file stems in an OUT folder, e.g. _deblurred")
    p.set_defaults(func=run)


def _has_magic(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path]]:
    """Expands files, folders and globs to (image path, output path relative to OUT) pairs.

    A folder's images keep their sub-folders under OUT; files and glob matches go to OUT directly.
    """
    from ..imageio import is_image_path

    found: list[tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
            if not images:
                raise AlgnetError(f"{item}: the folder holds no images ({', '.join(_extensions())})")
            found += [(p, p.relative_to(path)) for p in images]
        elif path.is_file():
            if not is_image_path(path):
                raise AlgnetError(f"{item}: not an image file name (expected one of {', '.join(_extensions())})")
            found.append((path, Path(path.name)))
        elif _has_magic(item):
            matches = sorted(Path(m) for m in glob.glob(item, recursive=True) if Path(m).is_file() and is_image_path(m))
            if not matches:
                raise AlgnetError(f"{item}: the pattern matches no image files")
            found += [(p, Path(p.name)) for p in matches]
        else:
            raise AlgnetError(f"{item}: no such file or folder")
    unique: dict[Path, tuple[Path, Path]] = {}
    for src, rel in found:  # the same file named twice (a file and its folder) is deblurred once
        unique.setdefault(src.resolve(), (src, rel))
    return list(unique.values())


def _extensions() -> tuple[str, ...]:
    from ..imageio import IMAGE_EXTENSIONS

    return IMAGE_EXTENSIONS


def plan_outputs(pairs: list[tuple[Path, Path]], out_dir: Path, suffix: str, overwrite: bool) -> list[tuple[Path, Path]]:
    """Maps each input to its output file; refuses collisions and, without --overwrite, replacing an input."""
    inputs = {src.resolve() for src, _ in pairs}
    jobs, taken = [], {}
    for src, rel in pairs:
        dst = out_dir / rel.with_name(rel.stem + suffix + rel.suffix)
        key = dst.resolve()
        if key in taken:
            raise AlgnetError(f"{src} and {taken[key]} would both be written to {dst}; deblur them into separate folders or use --suffix")
        taken[key] = src
        if key in inputs and not overwrite:
            raise AlgnetError(f"{dst}: refusing to overwrite an input image; choose another -o folder, add --suffix, or pass --overwrite")
        jobs.append((src, dst))
    return jobs


def output_is_file(out: Path, count: int) -> bool:
    """Whether ``-o OUT`` names one output file rather than a folder.

    OUT is a file when it has an image extension or is an existing file; that takes exactly one input
    image. Anything else (an existing folder, a new path without an image extension) is a folder.
    """
    from ..imageio import is_image_path

    if out.is_dir():
        return False
    if not (is_image_path(out) or out.exists()):
        return False
    if not is_image_path(out):
        raise AlgnetError(f"{out}: exists and is neither a folder nor an image file ({', '.join(_extensions())})")
    if count != 1:
        raise AlgnetError(f"-o {out} names one image file but {count} input images were given; "
                          "pass a folder to -o to deblur several images")
    return True


def plan_file_output(src: Path, dst: Path, overwrite: bool) -> list[tuple[Path, Path]]:
    """The one (input, output) job of ``-o FILE``; refuses replacing the input without --overwrite."""
    if dst.resolve() == src.resolve() and not overwrite:
        raise AlgnetError(f"{dst}: refusing to overwrite an input image; choose another -o file or pass --overwrite")
    return [(src, dst)]


def is_out_of_memory(err: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", ())
    return isinstance(err, MemoryError) or (oom and isinstance(err, oom)) or (isinstance(err, RuntimeError) and "out of memory" in str(err).lower())


def add_gpu_arguments(parser) -> None:
    """The CUDA options of ``algnet deblur`` and ``algnet eval`` (see :func:`algnet.inference.for_gpu`),
    and ``--no-fuse``."""
    from ..inference import add_inference_arguments

    add_inference_arguments(parser)
    parser.add_argument("--no-cuda-graph", action="store_true",
                        help="on CUDA, run eagerly instead of replaying one captured CUDA graph per image size")
    parser.add_argument("--tf32", action="store_true",
                        help="on CUDA, TF32 matrix products in the Mamba layers' projections (cuDNN's convolutions "
                             "use TF32 already); faster, with ~1e-4 differences in the output")


def deblur_file(model, src: Path, dst: Path, device, tile: int | None = None, overlap: int = 32, half: bool = False):
    """Deblurs one image file into ``dst`` (same format, bit depth, size, grayscale and alpha).

    The one code path from file to file, shared by ``algnet deblur`` and ``algnet app``.

    Returns:
        (the input :class:`algnet.imageio.Image`, the restored float32 pixels as written).
    """
    from ..imageio import SIXTEEN_BIT_FORMATS, image_format, read_image, write_image
    from ..inference import restore_pixels

    image = read_image(src)
    try:
        restored = restore_pixels(model, image.pixels, device=device, tile=tile, overlap=overlap, half=half)
    except (RuntimeError, MemoryError) as err:
        if is_out_of_memory(err):
            h, w = image.size
            raise AlgnetError(f"{src}: out of memory deblurring a {w}x{h} image on {device.type}; {OOM_HINT}") from None
        raise
    bit_depth = image.bit_depth if image_format(dst) in SIXTEEN_BIT_FORMATS else 8  # e.g. a 16-bit PNG to -o x.jpg
    write_image(dst, restored, image.mode, bit_depth)
    return image, restored


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..inference import for_gpu, load_model, resolve_device

    if args.tile is not None and args.tile < 16:
        raise AlgnetError(f"--tile {args.tile}: tiles must be at least 16 pixels")
    if args.overlap < 0:
        raise AlgnetError(f"--overlap {args.overlap}: must be zero or positive")
    out = Path(args.output)
    pairs = collect_inputs(args.inputs)
    if output_is_file(out, len(pairs)):
        jobs = plan_file_output(pairs[0][0], out, args.overwrite)
    else:
        jobs = plan_outputs(pairs, out, args.suffix, args.overwrite)
    device = resolve_device(args.device)
    model = load_model(args.checkpoint, name=args.model, device=device, tlc=args.tlc, fuse=not args.no_fuse)
    model = for_gpu(model, device, cuda_graph=not args.no_cuda_graph, tf32=args.tf32)

    start = time.perf_counter()
    for src, dst in tqdm(jobs, desc="deblur", unit="img", disable=None):
        dst.parent.mkdir(parents=True, exist_ok=True)
        deblur_file(model, src, dst, device, tile=args.tile, overlap=args.overlap, half=args.half)
    total = time.perf_counter() - start
    n = len(jobs)
    print(f"deblurred {n} image{'s' * (n != 1)} in {total:.1f} s ({total / max(n, 1):.2f} s/image) -> {out}")
    return 0

