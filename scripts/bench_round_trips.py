"""The benchmark's database round trips per operation, counted in process: development tooling, not production.

pymongo command monitoring around the app behind the Flask test client, one app instance per simulated
gunicorn worker; scripts/bench.py runs it against its nx-27017 and reports the counts.
"""

from __future__ import annotations

import random
from typing import Any

from scripts.bench_report import WORKERS_SIMULATED


def count_round_trips(uri: str, token: str) -> dict[str, Any]:
    """Database commands per operation, through the app in this process (Flask test client)."""
    from pymongo import monitoring

    class Listener(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.names.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    listener = Listener()
    monitoring.register(listener)

    from app import create_app
    from app.settings import Settings

    settings = Settings(
        env="test", mongodb_uri=uri, mongodb_db="bench_round_trips", service_tokens=(token,), log_level="WARNING"
    )
    # Separate app instances stand for separate gunicorn workers: each has its own client and caches.
    apps = [create_app(settings) for _ in range(max(4, WORKERS_SIMULATED))]  # scenarios name workers 0-3
    clients = [a.test_client() for a in apps]
    out: dict[str, Any] = {}

    def post(worker: int, op: str, body: dict) -> tuple[dict, int, list[str]]:
        listener.names.clear()
        response = clients[worker].post(f"/v1/session/{op}", json=body, headers={"Authorization": f"Bearer {token}"})
        return response.get_json(), len(listener.names), list(listener.names)

    def call(label: str, op: str, body: dict, worker: int = 0) -> dict:
        data, n, names = post(worker, op, body)
        out[label] = {"round_trips": n, "commands": names}
        if data.get("error_code"):
            out[label]["error_code"] = data["error_code"]
        return data

    def spread(label: str, op: str, body: dict, count: int = 40) -> None:
        """The mean over `count` calls, each sent to a random simulated worker (fixed seed)."""
        rng = random.Random(5)
        counts = [post(rng.randrange(WORKERS_SIMULATED), op, body)[1] for _ in range(count)]
        out[label] = {
            "round_trips": round(sum(counts) / len(counts), 2),
            "commands": [f"min {min(counts)}, max {max(counts)} over {count} calls"],
        }

    try:
        for worker in range(len(clients)):
            post(worker, "create", {"user_id": f"rt-warm-{worker}"})  # indexes, connection pools
        user = "rt-user"
        sid = call("create", "create", {"user_id": user, "context": '{"a":1}'})["session_id"]
        call("create (caller id)", "create", {"user_id": user, "session_id": "rt-named"})
        call("create (existing id)", "create", {"user_id": user, "session_id": "rt-named"})
        base = {"user_id": user, "session_id": sid}
        call("get", "get", base)
        call("update", "update", {**base, "context": '{"b":2}'})
        call("update (replace)", "update", {**base, "context": '{"c":3}', "options": {"merge": False}})
        version = call("get", "get", base)["version"]
        call(
            "update (expected_version)",
            "update",
            {**base, "context": '{"d":4}', "options": {"expected_version": version}},
        )
        call("touch", "touch", base)
        call("append_messages", "append_messages", {**base, "role": "user", "content": "hi"})
        msgs = [{"role": "user", "content": f"m{i}"} for i in range(10)]
        call("append_messages (10)", "append_messages", {**base, "messages": msgs})
        call("history", "history", base)
        call("clear_history", "clear_history", base)
        call("list", "list", {"user_id": user})
        call("get (another worker)", "get", base, worker=1)
        call("update (last written by another worker)", "update", {**base, "context": '{"e":5}'}, worker=2)
        w = WORKERS_SIMULATED
        spread(f"update, {w} workers, random routing (mean)", "update", {**base, "context": '{"f":"%N%"}'})
        spread(f"get, {w} workers, random routing (mean)", "get", base)
        spread(f"append_messages, {w} workers, random routing (mean)", "append_messages", {**base, **msgs[0]})
        spread(  # one append in HISTORY_INLINE also archives a chunk: three more round trips
            "append_messages, 300 in a row, archiving included (mean)", "append_messages", {**base, **msgs[0]}, 300
        )
        custom = post(0, "create", {"user_id": "rt-user-2", "options": {"timeout": 600}})[0]["session_id"]
        call("get (timeout 600 s, first time in this worker)", "get", {"user_id": "rt-user-2", "session_id": custom}, 3)
        call("close", "close", base)
        call("delete", "delete", base)
        call("get (not found)", "get", base)
    finally:
        for a in apps:
            a.extensions["database"].close()
        listener.names.clear()
    return out
