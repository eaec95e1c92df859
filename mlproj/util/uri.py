"""MongoDB URIs: the password kept out of every message, and the database a URI names."""

from __future__ import annotations

import re


def redact_uri(uri: str) -> str:
    """`mongodb://user:PASSWORD@host/db` -> `mongodb://user:***@host/db`; other text unchanged."""
    return re.sub(r"(://[^:/@\s]*):[^@/\s]*@", r"\1:***@", uri)


def uri_password(uri: str) -> str | None:
    match = re.search(r"://[^:/@\s]*:([^@/\s]*)@", uri)
    return match.group(1) if match and match.group(1) else None


def mongo_db_name(uri: str) -> str:
    """The database named in a MongoDB URI, or `sacred`."""
    # lazy: pymongo, only with a MongoDB URI; print_config and every mlproj command import this module
    from pymongo.uri_parser import parse_uri

    return parse_uri(uri).get("database") or "sacred"
