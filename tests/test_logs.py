"""Request logs: text by default; with LOG_FORMAT=json one object a line that names its user only by a keyed hash."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import re
import sys

import pytest
import requests

from app import logs
from app.settings import Settings
from tests.servers import gunicorn, service_env
from tests.support import AUTH, Api, ok

HASH_KEY = "log-hash-key-for-the-tests"
SECRETS = ("alice@example.com", "sess-private-42", "secret-context-value", "secret message content")


def keyed(user_id: str, key: str = HASH_KEY) -> str:
    return hmac.new(key.encode(), user_id.encode(), hashlib.sha256).hexdigest()[:16]


@pytest.mark.slow
def test_a_json_log_line_under_gunicorn_carries_its_logid_and_no_raw_user_or_session_id(tmp_path, mongo_uri, db_name):
    env = service_env(mongo_uri, db_name, LOG_FORMAT="json", LOG_LEVEL="info", LOG_HASH_KEY=HASH_KEY)
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, log=log) as base:
        user, sid = SECRETS[0], SECRETS[1]

        def post(tool: str, logid: str, **body) -> dict:
            headers = {**AUTH, "X-Tt-Logid": logid}
            return requests.post(f"{base}/v1/session{tool}", json=body, headers=headers, timeout=30).json()

        ok(post("/create", "logid-create-1", user_id=user, session_id=sid, context=json.dumps({"k": SECRETS[2]})))
        ok(
            post(
                "",
                "logid-append-2",
                operation="append_messages",
                user_id=user,
                session_id=sid,
                role="user",
                content=SECRETS[3],
            )
        )
        assert (
            post("/get", "logid-get-3", user_id=user, session_id="sess-missing-9")["error_code"] == "SESSION_NOT_FOUND"
        )
    text = log.read_text()
    lines = {}
    for raw in text.splitlines():
        line = json.loads(raw)  # every line is one whole JSON object, gunicorn's own included
        lines[line.get("logid")] = line
    create, append, get = lines["logid-create-1"], lines["logid-append-2"], lines["logid-get-3"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", create["time"])
    assert (create["level"], create["tool"], create["operation"], create["error_code"]) == (
        "INFO",
        "session_create",
        "create",
        "OK",
    )
    assert (append["tool"], append["operation"]) == ("session_manage", "append_messages")
    assert (get["error_code"], get["status"]) == ("SESSION_NOT_FOUND", 200)
    assert isinstance(create["ms"], float | int) and create["ms"] >= 0
    assert create["user"] == append["user"] == get["user"] == keyed(user)
    for secret in (*SECRETS, "sess-missing-9"):
        assert secret not in text, secret


def test_text_stays_the_default_request_log_line(api, caplog):
    assert Settings.from_env({}).log_format == "text"
    with caplog.at_level(logging.INFO, logger="app.api"):
        api.call("create", {"user_id": "u1"}, headers={"X-Tt-Logid": "abc-123"})
        api.call("get", {"user_id": "u1", "session_id": "nope"})
    first, second = (r.getMessage() for r in caplog.records if r.name == "app.api")
    assert re.fullmatch(r"session_create create OK \d+\.\dms logid=abc-123 tenant=default", first), first
    assert re.fullmatch(r"session_get get SESSION_NOT_FOUND \d+\.\dms logid=- tenant=default", second), second


def test_a_json_request_record_formats_as_one_object_without_the_raw_ids(settings, make_app, caplog):
    app = make_app(dataclasses.replace(settings, log_format="json", log_hash_key=HASH_KEY))
    api = Api(app.test_client())
    with caplog.at_level(logging.INFO, logger="app.api"):
        api.call("create", {"user_id": "bob", "session_id": "s-77"}, headers={"X-Tt-Logid": "L1"})
        api.post("session_get", {"user_id": "bob", "session_id": "s-77", "options": "not an object"})
    lines = [json.loads(logs.JsonFormatter().format(r)) for r in caplog.records if r.name == "app.api"]
    assert [(line["logid"], line["error_code"], line["user"]) for line in lines] == [
        ("L1", "OK", keyed("bob")),
        ("", "INVALID_ARGUMENT", ""),  # refused before the user id was read: no user
    ]
    assert set(lines[0]) == {
        "time",
        "level",
        "logger",
        "logid",
        "tenant",
        "tool",
        "operation",
        "error_code",
        "status",
        "ms",
        "user",
    }
    assert [line["tenant"] for line in lines] == ["default", "default"]
    assert "bob" not in json.dumps(lines) and "s-77" not in json.dumps(lines)


def test_a_refused_request_logs_its_operation_only_when_it_names_one_never_raw_input(api, caplog):
    with caplog.at_level(logging.INFO, logger="app.api"):
        for operation in (["get"], {"$gt": ""}, "<script>alert(1)</script>", "get"):
            status, data = api.post("session_manage", {"operation": operation, "user_id": "u1"})
            assert (status, data["error_code"]) == (200, "INVALID_ARGUMENT")
    logged = [r.getMessage() for r in caplog.records if r.name == "app.api"]
    assert len(logged) == 4
    for line in logged[:3]:
        assert re.fullmatch(r"session_manage  INVALID_ARGUMENT \d+\.\dms logid=- tenant=default", line), line
    assert re.fullmatch(r"session_manage get INVALID_ARGUMENT \d+\.\dms logid=- tenant=default", logged[3]), logged[3]


def test_the_user_hash_is_keyed_by_log_hash_key_else_by_a_key_derived_from_the_service_token():
    set_key = Settings(log_hash_key=HASH_KEY)
    assert logs.user_hash(logs.hash_key(set_key), "alice") == keyed("alice")
    a, b = Settings(service_tokens=("token-a",)), Settings(service_tokens=("token-b",))
    assert logs.hash_key(a) != logs.hash_key(b) != logs.hash_key(set_key)
    assert logs.hash_key(a) == logs.hash_key(Settings(service_tokens=("token-a", "token-next")))  # the first token
    assert re.fullmatch(r"[0-9a-f]{16}", logs.user_hash(logs.hash_key(a), "alice"))
    assert logs.user_hash(logs.hash_key(a), "") == ""


def test_a_json_line_for_any_other_log_record_carries_its_message_and_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "app.api", logging.ERROR, __file__, 1, "unexpected error in %s", ("x",), sys.exc_info()
        )
    line = json.loads(logs.JsonFormatter().format(record))
    assert (line["level"], line["message"]) == ("ERROR", "unexpected error in x")
    assert "ValueError: boom" in line["exception"]
