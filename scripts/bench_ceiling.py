"""The benchmark's ceiling: the least a Flask + pymongo endpoint can do per request.

One route that parses the JSON body and does one `find_one_and_update` on the same database as
the service; scripts/bench.py serves it with the project's gunicorn.conf.py, so every operation's
throughput can be read as a fraction of what the framework and the driver allow at all.

    MONGODB_URI=mongodb://127.0.0.1:PORT gunicorn -c gunicorn.conf.py scripts.bench_ceiling:application
"""

from __future__ import annotations

import os
import threading

import orjson
from flask import Flask, Response, request
from pymongo import MongoClient, ReturnDocument

application = Flask(__name__)
_client: MongoClient | None = None
_pid = 0
_lock = threading.Lock()


def _collection():
    """One pooled client per worker process, created after gunicorn's fork."""
    global _client, _pid
    if _client is None or _pid != os.getpid():
        with _lock:
            if _client is None or _pid != os.getpid():
                _client = MongoClient(os.environ["MONGODB_URI"], serverSelectionTimeoutMS=5000, tz_aware=True)
                _pid = os.getpid()
    return _client[os.environ.get("MONGODB_DB", "coze_sessions")]["bench_ceiling"]


@application.post("/ceiling")
def ceiling() -> Response:
    body = request.get_json(force=True)
    doc = _collection().find_one_and_update(
        {"_id": str(body.get("key", "k"))},
        {"$inc": {"n": 1}, "$set": {"last": body.get("value", "")}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
    )
    return Response(orjson.dumps({"key": doc["_id"], "n": doc["n"]}), mimetype="application/json")


@application.get("/healthz")
def healthz() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")
