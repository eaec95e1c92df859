"""The `mlproj` command: one sub-command per verb, each defined in the module that owns it.

A sub-command module provides `add_parser(subparsers)`, which registers its parser and sets
`func(args) -> int` as the default. User mistakes raise `MLProjError`, printed here as one line
with exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from mlproj import __version__
from mlproj.errors import MLProjError

# Modules that define sub-commands, in the order `mlproj --help` lists them.
COMMAND_MODULES = [
    "mlproj.cli.datasets",
    "mlproj.cli.models",
    "mlproj.cli.runs",
    "mlproj.cli.board",
    "mlproj.cli.reproduce",
    "mlproj.cli.sweep",
    "mlproj.cli.tune",
]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line that names the fix, not argparse's usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mlproj",
        description="List, show, compare, diff, reproduce and sync recorded runs, list datasets, run sweeps and tune hyperparameters.",
    )
    parser.add_argument("--version", action="version", version=f"mlproj {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module in COMMAND_MODULES:
        import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except MLProjError as err:
        print(f"mlproj {args.command}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mlproj {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
