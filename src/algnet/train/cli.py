"""``algnet train CONFIG``: train a paper experiment (or your own config) on CPU, one GPU or many.

CONFIG is a YAML file or the name of a shipped config (gopro-algnet, gopro-algnet-b, realblur-j,
realblur-r, dpdd, the ablations gopro-nafnet32 / gopro-algnet-no-local / -no-global / -sum /
-concat, and synthetic-tiny, which needs no data). Many GPUs or nodes:
``torchrun --nproc_per_node N -m algnet train CONFIG ...`` (train.batch_size is the global batch).
"""

from __future__ import annotations

import argparse
import shlex
import sys


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model from a YAML config (CPU, GPU, torchrun/DDP)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG", help="YAML file, or a shipped config name such as synthetic-tiny")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue exactly from OUT/last.pt")
    p.add_argument("--init", metavar="CKPT", default=None,
                   help="fine-tune: start from CKPT's weights (.safetensors from algnet, the authors' .pth, wrapped "
                        "or not) with a fresh optimiser and LR schedule; every tensor must match (see --init-partial)")
    p.add_argument("--init-partial", action="store_true",
                   help="with --init, load the tensors that match by name and shape and list the others")
    p.add_argument("--max-steps", type=int, default=None, metavar="N",
                   help="stop (after saving) once N steps are done in all; the LR schedule still spans train.total_steps")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=8 (repeatable; values are YAML)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=run)


def _config_name(config: str) -> str:
    from pathlib import Path

    name = Path(config).name
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def run(args) -> int:
    from ..errors import AlgnetError
    from .config import load_config
    from .trainer import train

    if args.max_steps is not None and args.max_steps < 1:
        raise AlgnetError(f"--max-steps must be a positive integer, got {args.max_steps}")
    config = load_config(args.config, args.overrides)
    out = args.out or f"runs/{_config_name(args.config)}"
    result = train(config, out, resume=args.resume, max_steps=args.max_steps, device=args.device,
                   init=args.init, init_partial=args.init_partial)
    if result.status == "interrupted":
        again = ["algnet", "train", args.config, "--out", out, "--resume"]
        again += [a for o in args.overrides for a in ("--set", o)]
        print(f"resume with: {shlex.join(again)}", file=sys.stderr)
        return 130
    return 0
