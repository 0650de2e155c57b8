"""The ``algnet`` command line: one subcommand per job, each defined in the module that does it."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import AlgnetError

# Explicit list (no folder scanning): subcommand modules, each with add_parser(subparsers).
COMMAND_MODULES = (
    "algnet.apps.deblur",
    "algnet.apps.demo",
    "algnet.train.cli",
    "algnet.evaluation.cli",
    "algnet.apps.profile",
    "algnet.apps.web",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="algnet", description="ALGNet image deblurring: deblur, train, evaluate, profile.")
    parser.add_argument("--version", action="version", version=f"algnet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and name.startswith(err.name):  # that job is not installed
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except AlgnetError as err:
        print(f"algnet {args.command}: error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:
        print(f"algnet {args.command}: error: {err.strerror or err}: {err.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"algnet {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
