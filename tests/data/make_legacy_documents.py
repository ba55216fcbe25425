"""Writes the stored documents of a small workload as the code at ROOT stores them, as JSON.

    python tests/data/make_legacy_documents.py ROOT OUT.json

ROOT is a checkout of the service (the fixture legacy_documents.json was written from 5b72504, the
last commit before tenants, with a worktree of it); the workload runs through that checkout's own
HTTP app with one SERVICE_TOKEN on a throw-away nx-27017. tests/test_tenants.py inserts these
documents as they are and reads them through today's code, and runs the same workload (`workload`)
on today's code to compare what it stores.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import uuid
from pathlib import Path

NOW = 4_102_444_800_000  # 2100-01-01: nothing in the fixture is due for the TTL reaper while a test runs
TOKEN = "legacy-token-0123456789abcdef"


def workload(client, headers: dict) -> None:
    """Sessions in the states a deployment holds: archived history, merged context, closed, deleted, locked."""

    def call(tool: str, body: dict) -> dict:
        answer = client.post(f"/v1/session/{tool}", json=body, headers=headers).get_json()
        assert answer["error_code"] == "", answer
        return answer

    call("create", {"user_id": "u1", "session_id": "legacy", "context": json.dumps({"lang": "zh", "cart": [1, 2]})})
    for i in range(7):  # past the inline history: archive chunks
        body = {"user_id": "u1", "session_id": "legacy", "role": "user", "content": f"m{i}"}
        call("append_messages", body | ({"request_id": f"append-{i}"} if i % 2 else {}))
    call("update", {"user_id": "u1", "session_id": "legacy", "context": json.dumps({"b": {"c": 1}})})
    call("create", {"user_id": "u1", "request_id": "make-1"})  # a session id derived from the request id
    call("create", {"user_id": "u1", "session_id": "kept", "options": {"auto_clean": False}})
    call("create", {"user_id": "u2", "session_id": "closed"})
    call("close", {"user_id": "u2", "session_id": "closed"})
    call("create", {"user_id": "u2", "session_id": "gone"})
    call("delete", {"user_id": "u2", "session_id": "gone", "request_id": "del-1"})  # a delete receipt
    call("create", {"user_id": "u2", "session_id": "locked"})
    call("lock", {"user_id": "u2", "session_id": "locked", "options": {"lease": 600}})


def encode(doc: dict) -> dict:
    """A stored document as JSON: a BSON date as {"$date": epoch ms}."""
    return {k: {"$date": int(v.timestamp() * 1000)} if isinstance(v, dt.datetime) else v for k, v in doc.items()}


def decode(doc: dict) -> dict:
    return {
        k: dt.datetime.fromtimestamp(v["$date"] / 1000, dt.UTC) if isinstance(v, dict) and "$date" in v else v
        for k, v in doc.items()
    }


def main(root: str, out: str) -> None:
    sys.path.insert(0, root)
    from app import create_app
    from app.settings import Settings
    from scripts.embedded import free_port, start_embedded, stop_embedded

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_embedded("memory", port, str(Path(tmp) / "nx.log"))
        try:
            settings = Settings(
                env="test",
                mongodb_uri=f"mongodb://127.0.0.1:{port}",
                mongodb_db=f"legacy_{uuid.uuid4().hex[:8]}",
                service_tokens=(TOKEN,),
                history_inline=3,
            )
            app = create_app(settings, lambda: NOW)
            workload(app.test_client(), {"Authorization": f"Bearer {TOKEN}"})
            docs = app.extensions["database"].store().collections.read.find({})
            Path(out).write_text(json.dumps(sorted((encode(d) for d in docs), key=lambda d: d["_id"]), indent=1))
            app.extensions["database"].close()
        finally:
            stop_embedded(proc)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
