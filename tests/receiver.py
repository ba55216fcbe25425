"""A real webhook receiver for the tests: a threaded HTTP server on a free port that records every POST.

`answers` scripts the statuses it gives (then 200 for ever); `stop()` takes it down (connections
refused) and `start()` brings it back on the same port. It also plays Coze's "run workflow" endpoint
(`/v1/workflow/run`): `coze_code` is the `code` it answers with.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from scripts.embedded import free_port


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict
    body: str
    status: int  # what the receiver answered

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.base = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self.answers: list[int] = []
        self.coze_code = 0
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    def __enter__(self) -> Receiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.received.append(Received(self.path, dict(self.headers), body, status))
                answer = b"{}"
                if self.path == "/v1/workflow/run":
                    answer = json.dumps({"code": receiver.coze_code, "msg": "", "execute_id": "7"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        # a short poll: shutdown() waits for the loop to look, 0.5 s by default, at every test's teardown
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[dict]:
        """The bodies of the events answered 2xx, in arrival order."""
        with self._lock:
            return [r.json for r in self.received if 200 <= r.status < 300]

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict]:
        """Wait until `count` events were delivered; their bodies."""
        deadline = time.monotonic() + timeout
        while len(self.delivered()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.delivered()
