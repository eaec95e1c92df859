"""`mlproj board`: browse the runs of a runs dir in a web browser (see `mlproj.board`)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys

from mlproj.errors import MLProjError
from mlproj.train.config import runs_dir as default_runs_dir

DEFAULT_PORT = 8765
MAX_HEADER_BYTES = 32 * 1024  # a browser's request line and headers fit many times over


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    board = subparsers.add_parser("board", help="browse runs in a web browser: table, run pages, compare, sweeps and studies")
    board.add_argument("runs_dir", nargs="?", metavar="RUNS_DIR", help="the runs dir (default $MLPROJ_RUNS_DIR or ./runs)")
    board.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the port to serve on (default {DEFAULT_PORT}; 0: any free one)")
    board.add_argument("--host", default="127.0.0.1",
                       help="the address to serve on, which requests must name (default 127.0.0.1, this machine only; the board has no login)")
    board.add_argument("--threads", type=int, default=4, help="requests served at once (default 4)")
    board.set_defaults(func=run_board)


def run_board(args: argparse.Namespace) -> int:
    if not 0 <= args.port <= 65535:
        raise MLProjError(f"--port {args.port}: give a port from 1 to 65535 (or 0 for any free one).")
    if args.threads < 1:
        raise MLProjError(f"--threads {args.threads}: give 1 or more.")
    # lazy: Flask and waitress load only for this command, not for every `mlproj` one
    import waitress

    from mlproj.board import create_app
    from mlproj.board.app import MAX_BODY_BYTES
    from mlproj.board.catalog import Query
    from mlproj.board.curves import MAX_WORKERS
    from mlproj.runs.reader import usable_cpus  # the one rule for "CPUs this process may use"

    runs_dir = args.runs_dir or default_runs_dir()
    app = create_app(runs_dir, host=args.host)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    catalog = app.extensions["mlproj.catalog"]
    runs = catalog.runs()  # read them now, and make the first page's table: not on the first request
    catalog.table(Query())
    try:
        # waitress's own limits: it refuses a larger body on its Content-Length, before reading it
        # (the app's check runs only once waitress has read the whole body, up to 1 GB by default).
        server = waitress.create_server(app, host=args.host, port=args.port, threads=args.threads, ident="mlproj-board",
                                        max_request_body_size=MAX_BODY_BYTES, max_request_header_size=MAX_HEADER_BYTES)
    except OSError as err:
        raise MLProjError(f"cannot serve on {args.host}:{args.port} ({err.strerror}): pass another --port.") from None
    app.extensions["mlproj.curves"].start_workers(min(usable_cpus() - 1, MAX_WORKERS))  # with the serving thread: one per CPU
    host = f"[{args.host}]" if ":" in args.host else args.host
    unreadable = f" ({len(catalog.unreadable)} run folders cannot be read: the runs page says why)" if catalog.unreadable else ""
    print(f"mlproj board: {len(runs)} runs in {catalog.runs_dir}{unreadable}", flush=True)
    if not _is_loopback(args.host):
        print(f"mlproj board: serving on {args.host}, reachable from other machines; the board has no login.", flush=True)
    print(f"mlproj board: open http://{host}:{server.effective_port}/ (Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, _stop)  # `kill`: stop as Ctrl-C does, workers included
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        app.extensions["mlproj.curves"].close()
    return 0


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
