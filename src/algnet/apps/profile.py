"""``algnet profile``: params, MACs (paper convention and full), latency and peak memory side by side."""

from __future__ import annotations

import argparse
import sys

from ..errors import AlgnetError


def _size(text: str) -> tuple[int, int]:
    """"HxW" -> (H, W); the paper's 1280x720 frames are written 720x1280 here (height first)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 720x1280, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


# On CPU a 1280x720 ALGNet pass takes ~20 s on 2 cores and the four models' full table ~10 min;
# the defaults there time the pair a user compares first at 256x256 (~14x fewer pixels), in
# well under a minute once the scan kernels are compiled.
CPU_DEFAULTS = {"models": ("algnet", "nafnet32"), "size": (256, 256), "repeats": 3}
GPU_DEFAULTS = {"size": (720, 1280), "repeats": 5}


def add_parser(subparsers) -> None:
    from ..profiling import PROFILE_MODELS

    p = subparsers.add_parser(
        "profile", help="params, MACs, latency and memory of ALGNet and NAFNet",
        description="Parameters; MACs at --mac-size counted the papers' way (ptflops/thop module hooks, "
                    "Mamba layers invisible) and in full (Mamba projections and scan included); median "
                    "latency and peak extra memory of one forward pass at --size. On CPU the defaults are "
                    "quick (algnet and nafnet32 at 256x256, 3 runs); the full table: --models "
                    f"{' '.join(PROFILE_MODELS)} --size 720x1280 --repeats 5.",
    )
    p.add_argument("--models", nargs="+", default=None, metavar="NAME",
                   help=f"registered models (default: {' '.join(PROFILE_MODELS)} on CUDA, "
                        f"{' '.join(CPU_DEFAULTS['models'])} on CPU)")
    p.add_argument("--size", type=_size, default=None, metavar="HxW",
                   help="latency/memory input, height x width (default 720x1280, the paper's 1280x720 frames, on CUDA; 256x256 on CPU)")
    p.add_argument("--mac-size", type=_size, default=(256, 256), metavar="HxW", help="MACs input (default 256x256, the papers')")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=None, metavar="N",
                   help="timed runs after warm-up (GPU: one full-size pass; CPU: a 32x32 pass for JIT, then one untimed "
                        "full-size pass); the median is reported (default 5 on CUDA, 3 on CPU)")
    p.add_argument("--no-latency", action="store_true", help="params and MACs only")
    p.add_argument("--no-fuse", action="store_true", help="time the plain model instead of its fused inference copy (algnet.fuse)")
    p.add_argument("--threads", type=int, metavar="N", help="torch CPU threads for timing (default: torch's)")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="give up timing one model after S seconds")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from ..inference import resolve_device
    from ..models import list_models
    from ..profiling import PROFILE_MODELS, format_table, profile, rows_to_json
    from ..sysinfo import describe_cpu

    device = str(resolve_device(args.device)) if not args.no_latency else "cpu"
    on_cpu = device == "cpu" and not args.no_latency
    defaults = CPU_DEFAULTS if on_cpu else {"models": PROFILE_MODELS, **GPU_DEFAULTS}
    models = args.models or list(defaults["models"])
    size = args.size or defaults["size"]
    repeats = args.repeats if args.repeats is not None else defaults["repeats"]
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise AlgnetError(f"unknown model {unknown[0]!r}; available: {', '.join(list_models())}")
    if repeats < 1:
        raise AlgnetError(f"--repeats {repeats}: must be at least 1")
    if not args.no_latency:
        _say(f"timing on {device} at {size[1]}x{size[0]}, {repeats} runs per model; {describe_cpu()}")
    rows = profile(models, size=size, mac_size=args.mac_size, device=device, repeats=repeats,
                   latency=not args.no_latency, timeout=args.timeout, threads=args.threads, fuse=not args.no_fuse,
                   progress=_say)
    print(rows_to_json(rows) if args.json else format_table(rows))
    if on_cpu and (args.models is None or args.size is None or args.repeats is None):
        _say(f"quick CPU defaults; the full table (about 10 min on 2 cores): algnet profile --models "
             f"{' '.join(PROFILE_MODELS)} --size 720x1280 --repeats 5")
    return 0
