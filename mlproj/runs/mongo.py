"""Reading runs back from MongoDB (the `runs` and `metrics` collections MongoObserver writes)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from mlproj.errors import MLProjError
from mlproj.runs.entry import run_from_entry
from mlproj.runs.reader import series_from
from mlproj.runs.record import Run
from mlproj.util.series import add_points
from mlproj.util.uri import redact_uri, uri_password

# What a MongoDB URI looks like, for the message about a malformed one.
MONGO_URI_FORMS = "mongodb://[USER:PASSWORD@]HOST[:PORT]/DB or mongodb+srv://[USER:PASSWORD@]HOST/DB"


def mongo_database(uri: str, db_name: str | None = None) -> Any:
    """The database `db_name` (default: the one named in `uri`, else `sacred`), checked reachable
    and readable. A `serverSelectionTimeoutMS` in the URI replaces the default wait of 5 s.

    Raises:
        MLProjError: one line, the password hidden, when the URI is malformed, the server does not
            answer, or the database refuses the user.
    """
    # lazy: pymongo, only when reading MongoDB (listing the runs dir needs none); pymongo's URI parser,
    # not mlproj.record's: importing Sacred warns and takes time
    import pymongo
    import pymongo.errors
    from pymongo.uri_parser import parse_uri

    shown = redact_uri(uri)
    options = {} if "serverselectiontimeoutms" in uri.lower() else {"serverSelectionTimeoutMS": 5000}
    try:
        client = pymongo.MongoClient(uri, **options)
        name = db_name or parse_uri(uri).get("database") or "sacred"
    except (pymongo.errors.InvalidURI, ValueError) as err:  # the text itself, before any network
        raise MLProjError(f"MongoDB URI {shown} is malformed ({_mongo_reason(err, uri)}): write it as {MONGO_URI_FORMS}.") from None
    except pymongo.errors.PyMongoError as err:  # e.g. mongodb+srv:// whose DNS record is missing
        raise MLProjError(f"cannot reach MongoDB at {shown} ({_mongo_reason(err, uri)}): check the URI and that the server runs.") from None
    try:
        client.admin.command("ping")
    except pymongo.errors.PyMongoError as err:
        raise MLProjError(f"cannot reach MongoDB at {shown} ({_mongo_reason(err, uri)}): check the URI and that the server runs.") from None
    try:
        client[name].list_collection_names()  # ping needs no login; reading the database does
    except pymongo.errors.PyMongoError as err:
        raise MLProjError(f"MongoDB at {shown} refuses database {name} ({_mongo_reason(err, uri)}): check the user, password and authSource in the URI.") from None
    return client[name]


def _mongo_reason(err: Exception, uri: str) -> str:
    """pymongo's first clause, without the URI's password (pymongo appends its whole topology)."""
    text = str(err).split(", Timeout:")[0].split(" (configured timeouts")[0].replace(uri, redact_uri(uri))
    password = uri_password(uri)
    for secret in {password, password and unquote(password)} - {None, ""}:
        text = text.replace(secret, "***")
    return text[:160]


def run_from_document(doc: dict[str, Any], metrics: Iterable[dict[str, Any]] = (), database: Any = None) -> Run:
    """A `Run` from a MongoObserver `runs` document and its `metrics` documents.

    With `database`, what the document was read without (its `captured_out`, the `metrics`
    documents) is fetched from it on first use.
    """
    series = {m["name"]: series_from(m) for m in metrics}
    if database is not None:
        run_id = doc["_id"]
        load_metrics = lambda: {m["name"]: series_from(m) for m in database["metrics"].find({"run_id": run_id})}  # noqa: E731
        load_captured_out = lambda: (database["runs"].find_one({"_id": run_id}, {"captured_out": 1}) or {}).get("captured_out") or ""  # noqa: E731
    else:
        load_metrics, load_captured_out = (lambda: series), (lambda: doc.get("captured_out") or "")
    return run_from_entry(doc, id=doc["_id"], config=doc.get("config") or {}, info=dict(doc.get("info") or {}),
                          load_metrics=load_metrics, load_captured_out=load_captured_out)


def read_mongo_runs(database: Any) -> list[Run]:
    """Every run in a MongoObserver database (`runs` and `metrics` collections), by id.

    The run documents are read without their captured output, and the metric documents one at a
    time without timestamps, keeping only each series' summary; a run's series and output are
    fetched on first use.
    """
    summaries: dict[Any, dict[str, dict[str, Any]]] = {}
    for m in database["metrics"].find({}, {"run_id": 1, "name": 1, "steps": 1, "values": 1}):
        summaries.setdefault(m["run_id"], {})[m["name"]] = add_points(None, m.get("steps", []), m.get("values", [])) or {"count": 0}
    docs = sorted(database["runs"].find({}, {"captured_out": 0}), key=lambda d: (not isinstance(d["_id"], int), str(d["_id"]).zfill(12)))
    runs = [run_from_document(doc, database=database) for doc in docs]
    for run in runs:
        run._summaries = summaries.get(run.id, {})
    return runs
