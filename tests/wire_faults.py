"""A fault-injecting MongoDB wire-protocol proxy, for tests only.

nx-27017 is a standalone that ignores write concerns, so it can never answer the way a replica set
does when replication times out, a node shuts down mid-command or a connection dies. `WireProxy`
sits between the real pymongo driver and the real server on real TCP sockets, forwards every byte
both ways, and for the commands a test picks rewrites the server's reply (or answers in its place,
or hangs up), so the code under test meets exactly the bytes a failing cluster would send:

    with WireProxy(("127.0.0.1", port)) as proxy:
        proxy.inject(Rule(writes_with_majority(), WriteConcernFailure(), times=1))
        client = MongoClient(proxy.uri)

Only OP_MSG (opCode 2013) traffic is looked at; OP_QUERY/OP_REPLY handshakes, OP_COMPRESSED (so do
not enable compressors) and everything no rule matches pass through untouched. A rewritten message
loses its checksum (the checksumPresent flag is cleared). Test-only: it trusts both ends, holds
whole messages in memory and keeps every command it sees in `commands`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import bson
from bson.codec_options import CodecOptions, DatetimeConversion
from bson.errors import BSONError

OP_MSG = 2013
CHECKSUM_PRESENT = 1 << 0
MORE_TO_COME = 1 << 1
# Decoding then encoding with these gives back the same bytes (Int64 stays Int64, far dates stay).
CODEC = CodecOptions(datetime_conversion=DatetimeConversion.DATETIME_AUTO)
CODE_NAMES = {
    64: "WriteConcernFailed",
    91: "ShutdownInProgress",
    10334: "BSONObjectTooLarge",
    11000: "DuplicateKey",
    11600: "InterruptedAtShutdown",
}
STATEMENTS = {"insert": "documents", "update": "updates", "delete": "deletes"}
UNREADABLE = (ValueError, IndexError, struct.error, BSONError)  # what _parse raises on a bad message

Command = dict[str, Any]
Predicate = Callable[[Command], bool]


def _code_name(code: int, given: str | None) -> str:
    return given or CODE_NAMES.get(code, f"Location{code}")


# --- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteConcernFailure:
    """Forward the command, then add a writeConcernError to the server's successful reply.

    The write was applied: this is what a wtimeout looks like on a replica set.
    """

    code: int = 64
    errmsg: str = "waiting for replication timed out"
    code_name: str | None = None

    def document(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "codeName": _code_name(self.code, self.code_name),
            "errmsg": self.errmsg,
            "errInfo": {"wtimeout": True},
        }


@dataclass(frozen=True)
class CommandFailure:
    """Do not forward the command; answer `{ok: 0, errmsg, code, codeName}` in the server's place."""

    code: int
    errmsg: str
    code_name: str | None = None

    def document(self) -> dict[str, Any]:
        return {"ok": 0.0, "errmsg": self.errmsg, "code": self.code, "codeName": _code_name(self.code, self.code_name)}


@dataclass(frozen=True)
class WriteError:
    """One entry of a reply's writeErrors: statement `index` of the insert/update/delete failed."""

    index: int
    code: int = 11000
    errmsg: str = "E11000 duplicate key error"


@dataclass(frozen=True)
class WriteErrors:
    """Make statements of an insert/update/delete fail with `errors` (and optionally a writeConcernError).

    With `forward` the server applies exactly the statements a real server would have: for an
    ordered write those before the first failing index, for an unordered one all but the failing
    ones; its reply (`n`, `nModified`) then counts them. Without `forward` nothing is applied and
    the proxy answers `n: 0` itself.
    """

    errors: tuple[WriteError, ...]
    forward: bool = True
    write_concern_error: WriteConcernFailure | None = None


@dataclass(frozen=True)
class DropConnection:
    """Close the client's connection (and the server's) without answering."""


@dataclass(frozen=True)
class Delay:
    """Hold the command back for `seconds`, then forward it unchanged."""

    seconds: float


Action = WriteConcernFailure | CommandFailure | WriteErrors | DropConnection | Delay


@dataclass
class Rule:
    """Apply `action` to commands for which `when(command)` is true, at most `times` times (None: always)."""

    when: Predicate
    action: Action
    times: int | None = None
    fired: int = 0


def command_named(*names: str) -> Predicate:
    """Commands whose name (first key) is one of `names`, e.g. "insert", "findAndModify"."""
    wanted = set(names)
    return lambda command: next(iter(command), None) in wanted


def writes_with_majority() -> Predicate:
    """Commands that carry writeConcern with w == "majority"."""
    return lambda command: isinstance(wc := command.get("writeConcern"), dict) and wc.get("w") == "majority"


# --- framing -------------------------------------------------------------------------------------


class _Header(NamedTuple):
    length: int
    request_id: int
    response_to: int
    op_code: int


@dataclass
class _OpMsg:
    flags: int
    body: dict[str, Any]
    sequences: dict[str, list[bytes]]  # kind-1 sections: identifier -> the raw BSON documents

    def command(self) -> Command:
        """The body with each document sequence merged in under its identifier."""
        merged = dict(self.body)
        for identifier, docs in self.sequences.items():
            merged[identifier] = [bson.decode(doc, CODEC) for doc in docs]
        return merged


def _int32(data: bytes, at: int) -> int:
    return struct.unpack_from("<i", data, at)[0]


def _parse(payload: bytes) -> _OpMsg:
    """An OP_MSG after its header; raises one of UNREADABLE if it is not one we can read."""
    flags = struct.unpack_from("<I", payload)[0]
    end = len(payload) - (4 if flags & CHECKSUM_PRESENT else 0)
    body: dict[str, Any] | None = None
    sequences: dict[str, list[bytes]] = {}
    at = 4
    while at < end:
        kind, size = payload[at], _int32(payload, at + 1)
        section = payload[at + 1 : at + 1 + size]  # both kinds start with their own int32 size
        if kind == 0 and body is None:
            body = bson.decode(section, CODEC)
        elif kind == 1:
            nul = section.index(b"\x00", 4)
            docs, pos = [], nul + 1
            while pos < len(section):
                docs.append(section[pos : pos + _int32(section, pos)])
                pos += len(docs[-1])
            sequences[section[4:nul].decode()] = docs
        else:
            raise ValueError(f"OP_MSG section kind {kind} not understood")
        at += 1 + size
    if body is None:
        raise ValueError("OP_MSG without a body")
    return _OpMsg(flags, body, sequences)


def _encode(request_id: int, response_to: int, msg: _OpMsg) -> bytes:
    """An OP_MSG with `msg`'s sections and flags, but never a checksum."""
    parts = [struct.pack("<I", msg.flags & ~CHECKSUM_PRESENT), b"\x00", bson.encode(msg.body, codec_options=CODEC)]
    for identifier, docs in msg.sequences.items():
        section = identifier.encode() + b"\x00" + b"".join(docs)
        parts += [b"\x01", struct.pack("<i", 4 + len(section)), section]
    data = b"".join(parts)
    return struct.pack("<iiii", 16 + len(data), request_id, response_to, OP_MSG) + data


def _recv_exactly(sock: socket.socket, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read_message(sock: socket.socket) -> tuple[_Header, bytes, bytes] | None:
    """(header, raw header bytes, payload), or None once the peer has closed."""
    raw_header = _recv_exactly(sock, 16)
    if raw_header is None:
        return None
    header = _Header(*struct.unpack("<iiii", raw_header))
    payload = _recv_exactly(sock, header.length - 16)
    return None if payload is None else (header, raw_header, payload)


# --- the proxy -----------------------------------------------------------------------------------


class WireProxy:
    """Listens on 127.0.0.1 (a free port) and relays each client connection to `target`, applying rules."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.commands: list[tuple[str, Command]] = []  # every OP_MSG command seen, in arrival order
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._links: list[_Link] = []
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def uri(self) -> str:
        # directConnection: should the target be a replica-set member, pymongo must not go round the proxy.
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def inject(self, rule: Rule) -> Rule:
        """Add `rule` after the others (the first matching rule with budget left applies); returns it."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def __enter__(self) -> WireProxy:
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._closed = True
            links = list(self._links)
        _shut(self._listener)
        for link in links:
            link.close()
        for thread in list(self._threads):
            thread.join(timeout=5)

    def _spawn(self, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, daemon=True, name="wire-proxy")
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # the listener was shut down
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                _shut(client)
                continue
            for sock in (client, server):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            link = _Link(self, client, server)
            with self._lock:
                if self._closed:
                    link.close()
                    return
                self._links.append(link)
                self._spawn(link.relay_requests)
                self._spawn(link.relay_replies)

    def _seen(self, command: Command) -> Action | None:
        """Record `command`; the action of the first rule that wants it, counting the firing."""
        with self._lock:
            self.commands.append((next(iter(command), ""), command))
            for rule in self._rules:
                if (rule.times is None or rule.fired < rule.times) and rule.when(command):
                    rule.fired += 1
                    return rule.action
        return None


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


Rewrite = Callable[[dict[str, Any]], dict[str, Any]]


class _Link:
    """One client connection and its own connection to the server, relayed by two threads."""

    def __init__(self, proxy: WireProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy, self.client, self.server = proxy, client, server
        self.pending: dict[int, Rewrite] = {}  # requestID -> how to rewrite the server's reply to it
        self.client_lock = threading.Lock()  # both threads answer the client

    def close(self) -> None:
        _shut(self.client)
        _shut(self.server)

    def relay_requests(self) -> None:
        try:
            while (message := _read_message(self.client)) is not None:
                self._on_request(*message)
        except OSError:
            pass
        finally:
            self.close()

    def relay_replies(self) -> None:
        try:
            while (message := _read_message(self.server)) is not None:
                header, raw_header, payload = message
                rewrite = self.pending.pop(header.response_to, None)
                try:
                    reply = _parse(payload) if rewrite is not None and header.op_code == OP_MSG else None
                except UNREADABLE:
                    reply = None
                if rewrite is not None and reply is not None:
                    reply.body = rewrite(reply.body)
                    self._to_client(_encode(header.request_id, header.response_to, reply))
                else:
                    self._to_client(raw_header + payload)
        except OSError:
            pass
        finally:
            self.close()

    def _to_client(self, data: bytes) -> None:
        with self.client_lock:
            self.client.sendall(data)

    def _answer(self, request_id: int, body: dict[str, Any]) -> None:
        self._to_client(_encode(0, request_id, _OpMsg(0, body, {})))

    def _on_request(self, header: _Header, raw_header: bytes, payload: bytes) -> None:
        raw = raw_header + payload
        if header.op_code != OP_MSG:
            self.server.sendall(raw)
            return
        try:
            msg = _parse(payload)
            command = msg.command()
        except UNREADABLE:
            self.server.sendall(raw)
            return
        action = self.proxy._seen(command)
        wants_reply = not msg.flags & MORE_TO_COME
        if isinstance(action, DropConnection):
            self.close()
        elif isinstance(action, CommandFailure):
            if wants_reply:
                self._answer(header.request_id, action.document())
        elif isinstance(action, WriteErrors):
            self._write_errors(header, msg, action, wants_reply)
        else:
            if isinstance(action, Delay):
                time.sleep(action.seconds)
            elif isinstance(action, WriteConcernFailure) and wants_reply:
                self.pending[header.request_id] = lambda body: _with_wce(body, action)
            self.server.sendall(raw)

    def _write_errors(self, header: _Header, msg: _OpMsg, action: WriteErrors, wants_reply: bool) -> None:
        name = next(iter(msg.body))
        field_name = STATEMENTS[name]
        in_sequence = field_name in msg.sequences
        statements = list(msg.sequences[field_name] if in_sequence else msg.body[field_name])
        failing = {error.index for error in action.errors}
        if msg.body.get("ordered", True):
            kept = [i for i in range(len(statements)) if i < min(failing, default=len(statements))]
        else:
            kept = [i for i in range(len(statements)) if i not in failing]
        injected = [{"index": e.index, "code": e.code, "errmsg": e.errmsg} for e in action.errors]

        def rewrite(body: dict[str, Any]) -> dict[str, Any]:
            own = [{**error, "index": kept[error["index"]]} for error in body.get("writeErrors", [])]
            body["writeErrors"] = sorted(own + injected, key=lambda error: error["index"])
            return _with_wce(body, action.write_concern_error) if action.write_concern_error else body

        if not action.forward or not kept:
            if wants_reply:
                answer = {"n": 0, **({"nModified": 0} if name == "update" else {}), "ok": 1.0}
                self._answer(header.request_id, rewrite(answer))
            return
        if in_sequence:
            msg.sequences[field_name] = [statements[i] for i in kept]
        else:
            msg.body[field_name] = [statements[i] for i in kept]
        if wants_reply:
            self.pending[header.request_id] = rewrite
        self.server.sendall(_encode(header.request_id, header.response_to, msg))


def _with_wce(body: dict[str, Any], failure: WriteConcernFailure) -> dict[str, Any]:
    if body.get("ok") == 1:
        body["writeConcernError"] = failure.document()
    return body
