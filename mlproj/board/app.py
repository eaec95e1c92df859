"""The board's Flask application: its pages and JSON over one runs dir, read-only.

Every answer that is not a page or a file is a 4xx or 5xx with a short page (no traceback) and,
for a 4xx, one log line on the `mlproj.board` logger naming the request and what was wrong.
Headers keep the pages inert: scripts load only from the board itself (no inline script), a
page cannot be framed, and an artifact is sent as a download, never shown as a page. A request
must name the board by a loopback name or the address it serves on, with its port (the Host
header): a page of another site whose name an attacker points at 127.0.0.1 (DNS rebinding) gets a 400.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask, abort, current_app, render_template, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge, RequestURITooLarge

from mlproj.board.catalog import Catalog
from mlproj.board.curves import CurveCache
from mlproj.board.views import api, pages
from mlproj.errors import MLProjError
from mlproj.util.table import cell

log = logging.getLogger("mlproj.board")

HOSTS = "mlproj.hosts"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
MAX_QUERY_BYTES = 4096  # a longer query string is no request this board makes: 414
MAX_BODY_BYTES = 16 * 1024  # the board takes no uploads: a larger body is refused (413)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                               "img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def create_app(runs_dir: str | os.PathLike, *, host: str = "127.0.0.1") -> Flask:
    """The board over the runs dir `runs_dir` (Sacred's file storage: `<runs_dir>/<id>/run.json`),
    served on the address `host`: requests must name it, or a loopback name, in their Host header.

    Raises:
        MLProjError: when `runs_dir` is not a folder.
    """
    runs_dir = os.path.abspath(os.fspath(runs_dir))
    if not os.path.isdir(runs_dir):
        what = "is not a folder" if os.path.exists(runs_dir) else "does not exist"
        raise MLProjError(f"runs dir {runs_dir} {what}: pass the folder your runs were recorded in (default $MLPROJ_RUNS_DIR or ./runs).")
    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.url_map.merge_slashes = False  # `//x` in a path is a bad request here, not a redirect elsewhere
    app.extensions["mlproj.catalog"] = Catalog(runs_dir)
    app.extensions["mlproj.curves"] = CurveCache()
    app.jinja_env.filters["cell"] = cell
    app.jinja_env.globals["runs_dir"] = runs_dir
    app.extensions[HOSTS] = {*LOOPBACK_NAMES, _host_name(host)}

    app.register_blueprint(pages)
    app.register_blueprint(api)
    app.before_request(_check_host)
    app.before_request(_refuse_large_requests)
    app.after_request(_secure)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(MLProjError, _user_error)
    app.register_error_handler(Exception, _server_error)
    return app


def _check_host() -> None:
    """A 400 unless the Host header names this board: one of its names, on the port it serves on
    (WSGI's SERVER_PORT; no port in the header means 80)."""
    name, _, port = request.host.rpartition(":") if not request.host.endswith("]") else (request.host, "", "")
    if not name:
        name, port = port, ""
    if _host_name(name) not in current_app.extensions[HOSTS] or (port or "80") != request.environ.get("SERVER_PORT"):
        abort(400, f"Host {request.host[:80]!r} is not this board's address: open it as http://127.0.0.1:"
                   f"{request.environ.get('SERVER_PORT')}/ (or the --host it serves on)")


def _host_name(host: str) -> str:
    return host.strip().lower().removeprefix("[").removesuffix("]")


def _refuse_large_requests() -> None:
    if len(request.query_string) > MAX_QUERY_BYTES:
        raise RequestURITooLarge(f"the query string holds {len(request.query_string)} bytes; this board takes at most {MAX_QUERY_BYTES}")
    if (request.content_length or 0) > MAX_BODY_BYTES:
        raise RequestEntityTooLarge(f"the request body holds {request.content_length} bytes; this board takes at most {MAX_BODY_BYTES}")


def _secure(response: Any) -> Any:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _http_error(error: HTTPException) -> Any:
    code = error.code or 500
    if code >= 500:
        return _server_error(error)
    log.warning("%s %s -> %d %s: %s", request.method, _shown_path(), code, error.name, _loggable(error.description or ""))
    return _error_page(code, error.name, error.description or "")


def _user_error(error: MLProjError) -> Any:
    """A record the board cannot read, or a filter it cannot apply: what was wrong and what to do."""
    log.warning("%s %s -> 400: %s", request.method, _shown_path(), _loggable(str(error)))
    return _error_page(400, "Bad Request", str(error))


def _server_error(error: Exception) -> Any:
    log.exception("%s %s -> 500", request.method, _shown_path())
    return _error_page(500, "Internal Server Error", "the board failed on this request; its log holds the details.")


def _shown_path() -> str:
    return _loggable(request.full_path.rstrip("?")[:300])


def _loggable(text: str) -> str:
    """`text` with its control characters escaped (`\\n`, `\\x1b`): a request cannot forge a log line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _error_page(code: int, name: str, message: str) -> Any:
    if request.path.startswith("/api/"):
        return {"error": message, "status": code}, code
    return render_template("error.html", code=code, name=name, message=message), code

