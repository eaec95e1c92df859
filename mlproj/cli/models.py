"""`mlproj models`: the names config `model` takes."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("models", help="list the networks config model= takes (built-in and torchvision)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mlproj.nets import net_names  # lazy: imports torch and torchvision

    for name in net_names():
        print(name)
    return 0
