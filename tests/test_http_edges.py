"""HTTP edges against a real gunicorn (gunicorn.conf.py, its worker class), with raw sockets where a
client must misbehave: slow or unauthenticated bodies, malformed transfer encodings, clients gone
mid-body, oversized chunked bodies, requests gunicorn refuses itself, paths and methods of no tool.
Every answer is the JSON of the output shape; none is counted or logged as INTERNAL."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests

from app import spec
from tests.servers import gunicorn, service_env
from tests.support import AUTH, TOKEN, check_response, fresh_database

BODY_LIMIT = 64 * 1024
READ_TIMEOUT = 2


@pytest.fixture(scope="module")
def served(mongo_uri, tmp_path_factory) -> Iterator[tuple[str, object]]:
    log = tmp_path_factory.mktemp("edges") / "gunicorn.log"
    env = service_env(mongo_uri, "", MAX_BODY_BYTES=str(BODY_LIMIT), BODY_READ_TIMEOUT=str(READ_TIMEOUT))
    with fresh_database(mongo_uri) as db:
        env["MONGODB_DB"] = db
        with gunicorn(env, workers=1, threads=4, log=log) as base:
            yield base, log


@pytest.fixture
def base(served) -> str:
    return served[0]


def connect(base: str) -> socket.socket:
    url = urlsplit(base)
    sock = socket.create_connection((url.hostname, url.port), timeout=10)
    return sock


def read_response(sock: socket.socket, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response: (status, headers lower-cased, body); the body by Content-Length."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            raise ConnectionError(f"closed before a whole response: {data!r}")
        data += got
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    headers = {k.lower(): v for k, v in headers.items()}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        got = sock.recv(65536)
        if not got:
            break
        body += got
    return int(lines[0].split(" ")[1]), headers, body


def answer_of(status_headers_body, tool: spec.Tool = spec.MANAGE_TOOL) -> dict:
    status, headers, body = status_headers_body
    assert headers["content-type"].startswith("application/json"), (status, headers, body[:200])
    data = json.loads(body)
    check_response(tool, data)
    return data


def head(path: str, *lines: str) -> bytes:
    return ("\r\n".join([f"POST {path} HTTP/1.1", "Host: x", *lines]) + "\r\n\r\n").encode()


GET_TOOL = spec.TOOLS_BY_NAME["session_get"]
AUTH_LINE = f"Authorization: Bearer {TOKEN}"


def test_a_client_without_the_token_is_answered_401_at_once_however_slowly_it_sends(base):
    slow = []
    try:
        for _ in range(20):  # five times the worker's threads, each sending one byte of a long body
            sock = connect(base)
            sock.sendall(head("/v1/session/get", "Content-Type: application/json", "Content-Length: 100000") + b"{")
            slow.append(sock)
        for sock in slow:
            t0 = time.monotonic()
            data = answer_of(read_response(sock, timeout=3), GET_TOOL)
            assert data["error_code"] == "UNAUTHORIZED" and time.monotonic() - t0 < 3
        t0 = time.monotonic()
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
        assert time.monotonic() - t0 < 2
    finally:
        for sock in slow:
            sock.close()


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("bad chunk size", b"zz\r\n{}\r\n0\r\n\r\n"),
        ("missing CRLF after a chunk", b"2\r\n{}XX0\r\n\r\n"),
        ("gone mid-chunk", b'10\r\n{"user'),
        ("gone before the last chunk", b"2\r\n{}\r\n"),
    ],
)
def test_a_malformed_chunked_body_or_a_client_gone_mid_body_is_400_json_not_internal(served, name, body):
    base, log = served
    sock = connect(base)
    try:
        sock.sendall(head("/v1/session/get", AUTH_LINE, "Content-Type: application/json", "Transfer-Encoding: chunked"))
        sock.sendall(body)
        sock.shutdown(socket.SHUT_WR)  # the client stops sending (or is gone): the answer still reaches it
        status, headers, raw = read_response(sock)
    finally:
        sock.close()
    data = answer_of((status, headers, raw), GET_TOOL)
    assert (status, data["error_code"]) == (400, "INVALID_ARGUMENT"), name
    assert "body" in data["error"]
    assert internal_requests(requests.get(base + "/metrics", timeout=10).text) == 0
    assert "Traceback" not in log.read_text(errors="replace")


def test_a_content_length_body_the_client_abandons_is_400_json(base):
    sock = connect(base)
    try:
        sock.sendall(head("/v1/session/get", AUTH_LINE, "Content-Type: application/json", "Content-Length: 500"))
        sock.sendall(b'{"user_id": "u1"')
        sock.shutdown(socket.SHUT_WR)
        status, headers, raw = read_response(sock)
    finally:
        sock.close()
    assert (status, answer_of((status, headers, raw), GET_TOOL)["error_code"]) == (400, "INVALID_ARGUMENT")


def internal_requests(metrics: str) -> float:
    """How many requests /metrics counts as INTERNAL."""
    lines = [line for line in metrics.splitlines() if line.startswith("session_requests_total{")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if 'error_code="INTERNAL"' in line)


def chunked(payload: bytes, piece: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(payload), piece):
        yield payload[i : i + piece]


@pytest.mark.parametrize("transfer", ["chunked", "length"])
def test_max_body_bytes_holds_for_chunked_bodies_too(base, transfer):
    context = json.dumps({"pad": "x" * (BODY_LIMIT + 10_000)})
    payload = json.dumps({"user_id": "u1", "context": context}).encode()
    if transfer == "chunked":
        r = requests.post(base + "/v1/session/create", data=chunked(payload), headers=AUTH, timeout=30)
    else:
        r = requests.post(base + "/v1/session/create", data=payload, headers=AUTH, timeout=30)
    data = r.json()
    check_response(spec.TOOLS_BY_NAME["session_create"], data)
    assert (r.status_code, data["error_code"]) == (413, "PAYLOAD_TOO_LARGE")
    small = json.dumps({"user_id": "u1", "context": json.dumps({"pad": "x" * 1000})}).encode()
    r = requests.post(base + "/v1/session/create", data=chunked(small, 100), headers=AUTH, timeout=30)
    assert (r.status_code, r.json()["error_code"], r.json()["created"]) == (200, "", True)


def test_a_body_that_stalls_or_trickles_is_cut_off_after_body_read_timeout(base):
    stalled, trickling = connect(base), connect(base)
    try:
        for sock in (stalled, trickling):
            sock.sendall(head("/v1/session/get", AUTH_LINE, "Content-Type: application/json", "Content-Length: 200"))
            sock.sendall(b'{"user_id"')
        t0 = time.monotonic()
        for _ in range(int(READ_TIMEOUT * 2.5 / 0.5)):  # one byte every half second: never a long wait
            time.sleep(0.5)
            try:
                trickling.sendall(b" ")
            except OSError:
                break  # the server has answered and closed
        cut = answer_of(read_response(trickling), GET_TOOL)
        assert cut["error_code"] == "INVALID_ARGUMENT" and time.monotonic() - t0 < READ_TIMEOUT * 2.5 + 1
        assert answer_of(read_response(stalled), GET_TOOL)["error_code"] == "INVALID_ARGUMENT"
    finally:
        stalled.close()
        trickling.close()


@pytest.mark.parametrize(
    ("method", "path", "status", "allowed"),
    [
        ("POST", "/v1/session/nope", 404, None),
        ("POST", "/metrics", 405, "GET"),
        ("PUT", "/healthz", 405, "GET"),
        ("GET", "/v1/session/get", 405, "POST"),
        ("OPTIONS", "/v1/session/get", 405, "POST"),
        ("OPTIONS", "/metrics", 405, "GET"),
        ("POST", "/v1//session/get", 404, None),
        ("GET", "/healthz/", 404, None),
    ],
)
def test_every_path_and_method_answers_the_json_shape(base, method, path, status, allowed):
    r = requests.request(
        method, base + path, headers={**AUTH, "Host": "evil.example"}, allow_redirects=False, timeout=10
    )
    assert r.status_code == status and "location" not in r.headers
    data = answer_of((r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content))
    assert data["error_code"] == "INVALID_ARGUMENT"
    if allowed:
        assert r.headers["Allow"] == allowed and data["error"].endswith(f"只接受 {allowed} 请求")


@pytest.mark.parametrize("path", ["//v1/session/get", "//healthz", "///x", "/v1//session/get", "//evil.example/"])
def test_no_path_redirects_least_of_all_to_a_location_built_from_the_host_header(base, path):
    sock = connect(base)
    try:
        sock.sendall(head(path, AUTH_LINE, "Content-Length: 2").replace(b"Host: x", b"Host: evil.example") + b"{}")
        status, headers, raw = read_response(sock)
    finally:
        sock.close()
    assert status < 300 or status >= 400, (status, headers)
    assert "location" not in headers and headers["content-type"].startswith("application/json")
    json.loads(raw)


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (b"NOT A REQUEST LINE\r\n\r\n", 400),
        (b"POST /v1/session/get HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: bogus\r\n\r\n", 501),
        (b"POST /v1/session/get HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400),
    ],
)
def test_requests_gunicorn_refuses_itself_get_the_json_shape(served, raw, status):
    base, log = served
    sock = connect(base)
    try:
        sock.sendall(raw)
        got = read_response(sock)
    finally:
        sock.close()
    data = answer_of(got)
    assert (got[0], data["error_code"]) == (status, "INVALID_ARGUMENT")
    assert "Traceback" not in log.read_text(errors="replace")
