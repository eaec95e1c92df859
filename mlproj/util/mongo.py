"""The one MongoDB query both the run writer (`record/`) and `mlproj sync` (`runs/`) need."""

from __future__ import annotations

from typing import Any


def next_run_id(database: Any) -> int:
    """One past the largest integer `_id` in `database`'s `runs` collection; 1 when it has none.

    Raises:
        pymongo.errors.PyMongoError: when the database cannot be read (the caller decides).
    """
    last = database["runs"].find_one({"_id": {"$type": "int"}}, sort=[("_id", -1)], projection={"_id": 1})
    return last["_id"] + 1 if last else 1
