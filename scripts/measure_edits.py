"""Measure concurrent edits on one cart: N connections appending items to one session's context.

Starts a throw-away nx-27017 and the service under gunicorn (as `make run` starts it), then runs
`--connections` threads, each with its own keep-alive connection, each call one `update` with two
edits (append an item to /cart_items, increment /total_amount). Prints items/s, the lost races the
storage re-applied (the service's session_write_races_total metric) and the answers by error code;
then checks that every item is in the cart and the total is exact. Development only.

    .venv/bin/python -m scripts.measure_edits --connections 32 --seconds 20
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import threading
import time
from pathlib import Path

import requests

from scripts.embedded import free_port, start_embedded, stop_embedded
from tests.servers import gunicorn, service_env
from tests.support import AUTH


def races(base: str) -> float:
    text = requests.get(base + "/metrics", headers=AUTH, timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("session_write_races_total"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument(
        "--new-connections", action="store_true", help="a new connection per call, spread over every worker"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="measure-edits-"))
    port = free_port()
    nx = start_embedded("memory", port, str(tmp / "nx.log"))
    try:
        env = service_env(f"mongodb://127.0.0.1:{port}", "measure_edits")
        with gunicorn(env, workers=args.workers, threads=args.threads, log=tmp / "gunicorn.log") as base:
            run(base, args)
    finally:
        stop_embedded(nx)


def run(base: str, args: argparse.Namespace) -> None:
    made = requests.post(
        base + "/v1/session/create",
        json={"user_id": "shopper", "context": '{"cart_items": [], "total_amount": 0}'},
        headers=AUTH,
        timeout=30,
    ).json()
    sid = made["session_id"]
    codes: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + args.seconds
    start_races = races(base)

    def client(n: int) -> None:
        http = requests.Session()
        http.headers.update(AUTH)
        if args.new_connections:
            http.headers["Connection"] = "close"
        i = 0
        while time.monotonic() < stop:
            edits = [
                {"op": "append", "path": "/cart_items", "value": json.dumps({"sku": f"c{n}-{i}", "qty": 1})},
                {"op": "increment", "path": "/total_amount", "value": "1"},
            ]
            t0 = time.monotonic()
            answer = http.post(
                base + "/v1/session/update", json={"user_id": "shopper", "session_id": sid, "edits": edits}, timeout=60
            ).json()
            with lock:
                latencies.append(time.monotonic() - t0)
                codes[answer["error_code"] or "OK"] += 1
            i += 1

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    lost = races(base) - start_races
    state = requests.post(
        base + "/v1/session/get", json={"user_id": "shopper", "session_id": sid}, headers=AUTH, timeout=30
    ).json()
    context = json.loads(state["context"])
    items = len(context["cart_items"])
    latencies.sort()
    ok = codes["OK"]
    kind = "a new connection per call" if args.new_connections else "keep-alive"
    server = f"gunicorn {args.workers} workers x {args.threads} threads"
    print(f"connections: {args.connections} ({kind}), {server}, {elapsed:.1f} s")
    print(f"answers: {dict(codes)}")
    print(f"items/s: {ok / elapsed:.1f}")
    print(f"lost races re-applied internally: {int(lost)} ({lost / max(ok, 1):.2f} per update)")
    print(
        f"latency p50 {latencies[len(latencies) // 2] * 1000:.0f} ms, "
        f"p95 {latencies[int(len(latencies) * 0.95)] * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )
    print(f"cart: {items} items, total_amount {context['total_amount']}, version {state['version']}")
    assert items == ok == context["total_amount"] == state["version"] - 1, "an edit was lost or applied twice"


if __name__ == "__main__":
    main()
