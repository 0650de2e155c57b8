"""``algnet score`` (saved predictions vs ground truth) and ``algnet eval`` (run a checkpoint and score)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..apps.deblur import add_gpu_arguments

PROTOCOL_CHOICES = ("gopro", "hide", "realblur", "dpdd", "dpdd16")  # = protocols.PROTOCOLS, kept light at import


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "score", help="score saved predictions against ground truth with a benchmark's exact protocol",
        description="Score saved predictions of any method against ground truth with a benchmark's protocol "
                    "(gopro/hide: MATLAB PSNR and volume SSIM on uint8; realblur: ECC-aligned masked PSNR/SSIM; "
                    "dpdd: Restormer's script, 16-bit PNGs read as 8-bit; dpdd16: the same on full 16-bit values).")
    p.add_argument("pred", metavar="PRED", help="folder of predictions: flat, or mirroring the ground truth's layout")
    p.add_argument("gt", metavar="GT", help="ground truth: a dataset root in its published layout, or a flat folder of sharp images")
    p.add_argument("--protocol", required=True, choices=PROTOCOL_CHOICES)
    p.add_argument("--split", default="test", help="split to read from a dataset root (default: test)")
    _add_outputs(p)
    p.add_argument("--workers", type=int, default=0, metavar="N", help="score with N processes (default: in this one)")
    p.set_defaults(func=run_score)

    e = subparsers.add_parser(
        "eval", help="run a checkpoint over a test set and score it with the benchmark's protocol",
        description="Run a checkpoint over a test set named by a YAML file (dataset, root, split, protocol; "
                    "top level or under eval:) and score it like `algnet score`. `algnet eval shake` runs the "
                    "built-in camera-shake benchmark instead: held-out photos shaken at three strengths "
                    "(mild 3-7 px, medium 7-15 px, strong 15-25 px), regenerated from --seed, with the blurred "
                    "input and a Wiener deconvolution that knows the true kernel as reference rows.")
    e.add_argument("config", metavar="CONFIG", help="'shake', or YAML: {dataset: gopro|hide|realblur_j|realblur_r|"
                                                    "dpdd|folders, root: PATH, split: test, protocol: ...}")
    e.add_argument("--checkpoint", action="append", metavar="CKPT",
                   help="model checkpoint (.safetensors, .pth); `shake` takes several (repeat the flag) or none")
    e.add_argument("--seed", type=int, default=0, help="shake: seed of the benchmark's blur (default 0)")
    e.add_argument("--per-photo", type=int, default=4, metavar="N",
                   help="shake: blurs of each held-out photo per level (default 4)")
    e.add_argument("--levels", nargs="+", default=None, metavar="LEVEL",
                   help="shake: levels to run (default: mild medium strong)")
    e.add_argument("--tlc", action="store_true", help="test-time local converter (the paper's '-local' numbers)")
    e.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    e.add_argument("--fp32", action="store_true", help="on CUDA, run in float32 instead of float16 autocast")
    add_gpu_arguments(e)
    e.add_argument("--save-images", metavar="DIR", help="write the restored images as DIR/<name>.png")
    _add_outputs(e)
    e.set_defaults(func=run_eval)


def _add_outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="OUT", help="write the summary as JSON")
    p.add_argument("--csv", metavar="OUT", help="write one row per image as CSV")
    p.add_argument("--figures", metavar="DIR", help="write comparison figures (blurred | restored | sharp, zoomed crops)")
    p.add_argument("--figures-count", type=int, default=3, metavar="N",
                   help="figures of the N worst and N best images by PSNR (default 3)")
    p.add_argument("--figures-names", nargs="+", metavar="NAME", help="figures of these images instead")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _report(result, args, extra: dict | None = None) -> None:
    from .scoring import format_table, write_csv, write_json

    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    print(format_table(result))
    if args.json:
        print(f"summary: {write_json(result, args.json, extra)}")
    if args.csv:
        print(f"per image: {write_csv(result, args.csv)}")


def _write_figures(args, entries) -> None:
    from .figures import comparison_figure, save_figure

    written = [save_figure(comparison_figure(restored, sharp, blurred, title=f"{psnr:.2f} dB"), args.figures, name)
               for name, blurred, restored, sharp, psnr in entries]
    print(f"figures: {len(written)} in {args.figures}")


def _chosen(args, rows) -> list[str]:
    from .figures import select_names

    return select_names(rows, args.figures_count, args.figures_count, args.figures_names)


def run_score(args) -> int:
    from .scoring import score_folders

    result = score_folders(args.pred, args.gt, args.protocol, args.split, args.workers, progress=not args.quiet)
    _report(result, args, {"pred": str(Path(args.pred)), "gt": str(Path(args.gt))})
    if args.figures:
        _write_figures(args, _saved_entries(args, result.rows))
    return 0


def _saved_entries(args, rows):
    """(name, blurred or None, prediction, ground truth, psnr) of the chosen images, from the files."""
    from .pairing import ground_truth_items, match_predictions
    from .protocols import read_ground_truth, read_input, read_prediction

    items = {it.name: it for it in match_predictions(args.pred, args.gt, ground_truth_items(args.gt, args.split)[0])}
    psnr = {r["name"]: r["psnr"] for r in rows}
    for name in _chosen(args, rows):
        item = items[name]
        blurred = read_input(item.blur, args.protocol) if item.blur else None
        yield (name, blurred, read_prediction(item.pred, args.protocol, []),
               read_ground_truth(item.gt, args.protocol, []), psnr[name])


def run_shake_eval(args) -> int:
    import json

    from ..data.shake import LEVELS
    from ..deploy import fuse
    from ..errors import AlgnetError
    from ..imageio import atomic_write_bytes
    from ..inference import for_gpu, resolve_device, restore_pixels
    from ..models import load_checkpoint
    from .shake import format_shake_table, run_shake

    levels = args.levels or list(LEVELS)
    unknown = [lv for lv in levels if lv not in LEVELS]
    if unknown:
        raise AlgnetError(f"unknown shake level {unknown[0]!r}; expected some of {', '.join(LEVELS)}")
    if args.per_photo < 1:
        raise AlgnetError(f"--per-photo must be positive, got {args.per_photo}")
    device = resolve_device(args.device)
    methods = {}
    for ckpt in args.checkpoint or []:
        model = load_checkpoint(ckpt, tlc=args.tlc).to(device).eval()
        model = for_gpu(model if args.no_fuse else fuse(model), device, cuda_graph=not args.no_cuda_graph, tf32=args.tf32)
        name = Path(ckpt).name
        methods[name] = lambda x, m=model: restore_pixels(m, x, device, half=device.type == "cuda" and not args.fp32)
    progress = None if args.quiet else (lambda line: print(line, file=sys.stderr))
    result = run_shake(methods, seed=args.seed, levels=levels, per_photo=args.per_photo, progress=progress)
    result.update(checkpoints=[str(c) for c in args.checkpoint or []], tlc=args.tlc, device=str(device))
    print(format_shake_table(result))
    if args.json:
        atomic_write_bytes(Path(args.json), json.dumps(result, indent=2).encode())
        print(f"summary: {args.json}")
    return 0


def run_eval(args) -> int:
    from ..deploy import fuse
    from ..errors import AlgnetError
    from ..inference import for_gpu, resolve_device
    from ..models import load_checkpoint
    from .runner import evaluate, figure_entries, load_eval_config

    if args.config == "shake":
        return run_shake_eval(args)
    if not args.checkpoint or len(args.checkpoint) != 1:
        raise AlgnetError("algnet eval CONFIG needs exactly one --checkpoint (several only with `algnet eval shake`)")
    args.checkpoint = args.checkpoint[0]
    config = load_eval_config(args.config)
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint, tlc=args.tlc).to(device).eval()
    model = model if args.no_fuse else fuse(model)
    model = for_gpu(model, device, cuda_graph=not args.no_cuda_graph, tf32=args.tf32)
    half = not args.fp32
    result, items = evaluate(model, config, device, args.save_images, half, progress=not args.quiet)
    extra = {"dataset": config.dataset, "root": str(config.root), "split": config.split,
             "checkpoint": str(args.checkpoint), "tlc": args.tlc, "device": str(device)}
    _report(result, args, extra)
    if args.save_images:
        print(f"restored images: {args.save_images}")
    if args.figures:
        names = _chosen(args, result.rows)
        _write_figures(args, figure_entries(model, items, result.rows, names, config.protocol, device, half))
    return 0
