"""`mlproj datasets`: the registered datasets and whether their files are present."""

from __future__ import annotations

import argparse
import os

from mlproj.errors import MLProjError
from mlproj.util.table import render


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("datasets", help="list the datasets and whether their files are present")
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "datasets"), help="the data root")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # lazy: every mlproj command imports this module; only `mlproj datasets` needs the dataset modules
    from mlproj.data import dataset_names, dataset_spec

    rows = []
    for name in dataset_names():
        spec = dataset_spec(name)
        status = "ready"
        if spec.prepare is not None:
            try:
                spec.prepare({"dataset": name, "data_dir": args.data_dir, "download": False})
            except MLProjError as err:
                status = "missing" if "not found" in str(err) else "damaged"
        shape = "x".join(str(d) for d in spec.input_shape)
        rows.append({"dataset": name, "input": shape, "classes": spec.num_classes, f"files under {args.data_dir}": status})
    print(render(rows, "table"), end="")
    return 0
