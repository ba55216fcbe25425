"""The gunicorn worker the service runs on (gunicorn.conf.py names it): gunicorn's gthread worker with
its answers in the service's JSON shape and a bound on slow clients. gunicorn and the socket only.

gunicorn answers some requests itself, before the app sees them (a bad request line, a URL past
4094 bytes, too many or too large headers, an unsupported transfer encoding), with an HTML page;
it has no error-page hook, so `handle_error` lets gunicorn choose the status and log the client
error, and sends the JSON of the output shape in place of the page. A request's body must arrive
within BODY_READ_TIMEOUT seconds (every receive is given only what is left of that budget, so a
trickle is cut off too; the answer is then written without a bound, as gunicorn writes it), and a
body the app did not read (a 401 is answered without it) is not waited for: the connection closes.
Slow headers are left to the reverse proxy in front (see docs/reverse-proxy.md).
"""

from __future__ import annotations

import time
from http import HTTPStatus

import orjson
from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from app import errors, responses, spec
from app.settings import Settings

UNREAD_BODY_WAIT = 0.1  # seconds: a body already sent is skipped to keep the connection; else it closes
CLOSE_LINGER = 0.5  # seconds a closing connection waits for the client to stop sending
# what gunicorn's status means, for the error message (`field`, with the reason "http")
FIELD_OF_STATUS = {414: "url", 431: "headers", 501: "Transfer-Encoding", 417: "Expect"}


class JsonThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        self.read_timeout = Settings.from_env().body_read_timeout
        super().init_process()

    def handle_request(self, req, conn):
        unreader = conn.parser.unreader  # what the request's body is read through
        unreader.sock = _Budget(conn.sock, self.read_timeout)
        try:
            keep = super().handle_request(req, conn)
            if keep and not conn.parser.finish_body(deadline=time.monotonic() + UNREAD_BODY_WAIT):
                # Closed here, lingering briefly so the answer is not cut by a reset: gunicorn would
                # linger 2 s on its main thread, where a few slow clients hold up every connection.
                util.close_graceful(conn.sock, timeout=CLOSE_LINGER)
                return False
            return keep
        finally:
            unreader.sock = conn.sock

    def handle_error(self, req, client, addr, exc) -> None:
        page = _Captured()
        super().handle_error(req, page, addr, exc)  # logs as gunicorn does, writes its page to `page`
        status = page.status()
        util.write_nonblock(client, json_error(status))


def json_error(status: int) -> bytes:
    """A whole HTTP response of the output shape for a request gunicorn refused with `status`."""
    if status >= 500 and status != 501:
        error: errors.ServiceError = errors.Internal()
    else:
        error = errors.InvalidArgument(FIELD_OF_STATUS.get(status, "request"), "http", status)
    body = orjson.dumps(responses.project(responses.error(error, int(time.time() * 1000), "zh"), spec.MANAGE_TOOL))
    head = (
        f"HTTP/1.1 {status} {_phrase(status)}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class _Budget:
    """The connection's socket, every receive of one request given only what is left of its time budget:
    a body trickled a byte at a time is cut off as surely as one that stops."""

    def __init__(self, sock, seconds: float) -> None:
        self._sock = sock
        self._deadline = time.monotonic() + seconds
        self._timeout: float | None = None  # a shorter wait gunicorn asks for (draining an unread body)

    def recv(self, size: int) -> bytes:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("BODY_READ_TIMEOUT")
        self._sock.settimeout(left if self._timeout is None else min(left, self._timeout))
        try:
            return self._sock.recv(size)
        finally:
            self._sock.settimeout(None)  # the answer's writes are not bounded by what was left of the read

    def settimeout(self, seconds: float | None) -> None:
        self._timeout = seconds

    def gettimeout(self) -> float | None:
        return self._timeout


class _Captured:
    """Stands in for the client socket while gunicorn writes its HTML error page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data

    def status(self) -> int:
        try:
            return int(self.data.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 400
