"""An operator's first hour, as the docs tell it: the admin console command and its exit codes, the
log-hash recipe, one log line per request, the errors' language and texts, `GET /`, the OpenAPI
document's address, what the compact tool's document requires, and rehearsing a registration locally.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app import errors, schemas, spec, validation
from scripts import cozerules
from scripts.embedded import free_port, port_open
from scripts.register_plugin import main as register
from tests.servers import gunicorn, service_env
from tests.support import AUTH, ROOT, TOKEN, fail, ok

SESSION_ADMIN = str(Path(sys.executable).with_name("session-admin"))


def session_admin(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {
        k: v for k, v in os.environ.items() if k not in ("SERVICE_TOKEN", "LOG_HASH_KEY", "PROMETHEUS_MULTIPROC_DIR")
    }
    return subprocess.run(
        [SESSION_ADMIN, *args], env={**full, **env}, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


# -- the admin console command ---------------------------------------------------------------------


def test_session_admin_is_installed_and_answers_usage_2_failure_1_done_0(tmp_path, mongo_uri, db_name):
    assert Path(SESSION_ADMIN).exists(), "make installs session-admin into .venv/bin"
    db = {"MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "APP_ENV": "test"}
    usage = session_admin("exprt", **db)
    assert usage.returncode == 2
    assert "Usage: session-admin" in usage.stderr and "Did you mean 'export'" in usage.stderr
    assert "flask" not in usage.stderr
    out = tmp_path / "backups" / "2026" / "sessions.jsonl"  # no such folder yet
    done = session_admin("export", "--out", str(out), **db)
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text().splitlines()[0])["format"] == "coze-session-node"
    failed = session_admin("export", "--out", "/proc/no-such-dir/sessions.jsonl", **db)
    assert failed.returncode == 1, failed.stderr
    assert "Usage" not in failed.stderr


def test_a_usage_error_starts_no_database(tmp_path):
    env = {"MONGODB_URI": "", "VAR_DIR": str(tmp_path / "var"), "EMBEDDED_DB_PORT": str(free_port())}
    usage = session_admin("exprt", **env)
    assert usage.returncode == 2
    assert "embedded database" not in usage.stderr and not (tmp_path / "var" / "nx.pid").exists()


def test_make_admin_runs_session_admin_and_shows_its_exit_code(mongo_uri, db_name):
    env = {**os.environ, "MONGODB_URI": mongo_uri, "MONGODB_DB": db_name, "APP_ENV": "test"}
    done = subprocess.run(["make", "-s", "admin", "ARGS=stats"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and "database:" in done.stdout, done.stderr
    failed = subprocess.run(
        ["make", "-s", "admin", "ARGS=export --out /proc/no-such-dir/x.jsonl"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2  # make's own code for any failure, as docs/operating.md says
    assert "Error 1" in failed.stderr  # the command's, passed on in make's message


def test_exports_and_the_backups_folder_are_ignored_by_git():
    ignored = subprocess.run(
        ["git", "check-ignore", "backups/sessions-2026-12-01.jsonl", "user_123.jsonl", "migrate.jsonl"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ignored.stdout.split() == ["backups/sessions-2026-12-01.jsonl", "user_123.jsonl", "migrate.jsonl"]


# -- logs: the user hash, one line per request ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("hash_key", ["", "log-hash-key-of-the-operator"])
def test_session_admin_user_hash_prints_the_hash_the_json_log_holds(tmp_path, mongo_uri, db_name, hash_key):
    """With LOG_HASH_KEY, and without it (the key then comes from the development token make run made)."""
    var = tmp_path / "var"
    env = service_env(mongo_uri, db_name, SERVICE_TOKEN="", APP_ENV="development", VAR_DIR=str(var), LOG_FORMAT="json")
    env.update(LOG_LEVEL="info", LOG_HASH_KEY=hash_key)
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, log=log, workers=1) as base:
        token = (var / "dev-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}", "X-Tt-Logid": "logid-hash-1"}
        answer = requests.post(f"{base}/v1/session/create", json={"user_id": "user_123"}, headers=headers, timeout=30)
        ok(answer.json())
    (line,) = [json.loads(raw) for raw in log.read_text().splitlines() if "logid-hash-1" in raw]
    shown = session_admin("user-hash", "user_123", VAR_DIR=str(var), LOG_HASH_KEY=hash_key, APP_ENV="development")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == line["user"]


@pytest.mark.slow
def test_json_logs_hold_exactly_one_line_per_request_and_no_access_line(tmp_path, mongo_uri, db_name):
    env = service_env(mongo_uri, db_name, LOG_FORMAT="json", LOG_LEVEL="info")
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, log=log, workers=1) as base:
        for n in range(3):
            headers = {**AUTH, "X-Tt-Logid": f"logid-one-{n}"}
            requests.post(f"{base}/v1/session/create", json={"user_id": f"u{n}"}, headers=headers, timeout=30)
    lines = [json.loads(raw) for raw in log.read_text().splitlines()]
    for n in range(3):
        assert sum(1 for line in lines if f"logid-one-{n}" in json.dumps(line)) == 1
    assert not [line for line in lines if line["logger"] == "gunicorn.access"]


# -- errors: METRICS_TOKEN, ERROR_LANG, unparsable bodies, GET / ------------------------------------


def test_a_wrong_metrics_token_is_told_it_is_metrics_token_that_is_wanted(settings, make_app):
    client = make_app(dataclasses.replace(settings, metrics_token="metrics-token-of-the-tests")).test_client()
    answer = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 401
    assert "METRICS_TOKEN" in answer.json["error"]
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-token-of-the-tests"}).status_code == 200


def test_error_lang_sets_the_language_of_every_error_a_call_does_not_ask_otherwise(settings, make_app):
    client = make_app(dataclasses.replace(settings, error_lang="en")).test_client()
    missing = client.post("/v1/session/get", json={"user_id": "u1", "session_id": "nope"}, headers=AUTH).json
    assert missing["error"] == "session not found"
    asked = {"user_id": "u1", "session_id": "nope", "options": {"lang": "zh"}}
    assert client.post("/v1/session/get", json=asked, headers=AUTH).json["error"] == "会话不存在"
    assert client.post("/v1/session/get", json={}).json["error"].startswith("unauthorized")
    assert client.get("/v1/nothing").json["error"].startswith("invalid argument")


def test_the_default_language_stays_chinese(api):
    fail(api.call("get", {"user_id": "u1", "session_id": "nope"}), "SESSION_NOT_FOUND")
    assert api.call("get", {"user_id": "u1", "session_id": "nope"})["error"] == "会话不存在"


def test_error_lang_is_checked_at_start_up():
    from app.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="ERROR_LANG must be zh or en"):
        Settings.from_env({"ERROR_LANG": "fr"})
    assert Settings.from_env({"ERROR_LANG": "EN"}).error_lang == "en"


def test_the_tools_document_declares_no_default_language_so_coze_sends_none(app):
    document = schemas.openapi_document("https://sessions.example.com")
    for item in document["paths"].values():
        options = item["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["options"]
        assert "default" not in options["properties"]["lang"]


@pytest.mark.parametrize(("raw", "lang"), [(b'{"user_id": "u1",', "en"), (b"\xff\xfe not json", "en"), (b"{", "zh")])
def test_a_body_that_does_not_parse_is_called_not_valid_json(api, raw, lang):
    opts = {"options": {"lang": "en"}} if lang == "en" else {}
    status, answer = api.post("session_get", None, raw=raw + (json.dumps(opts).encode() if opts else b""))
    assert status == 200 and answer["error_code"] == "INVALID_ARGUMENT"
    expected = "invalid argument: body is not valid JSON" if lang == "en" else "参数错误：body 不是有效的 JSON"
    assert answer["error"] == expected
    _, not_object = api.post("session_get", None, raw=b"[1, 2]")
    assert "JSON 对象" in not_object["error"]  # valid JSON, but not an object: said so


def test_get_root_answers_the_name_version_and_where_the_openapi_document_is(app):
    answer = app.test_client().get("/")
    assert answer.status_code == 200
    assert answer.json == {
        "name": "coze-session-node",
        "title": spec.TITLE,
        "version": spec.VERSION,
        "openapi": "/openapi.json",
    }
    assert app.test_client().get(answer.json["openapi"]).status_code == 200


# -- the OpenAPI document's address ------------------------------------------------------------------


def server_url(client, **kw) -> str:
    return client.get("/openapi.json", **kw).json["servers"][0]["url"]


def test_without_public_base_url_the_document_names_the_address_it_was_fetched_from(settings, make_app):
    client = make_app(dataclasses.replace(settings, public_base_url="")).test_client()
    assert server_url(client, base_url="http://10.1.2.3:9123") == "http://10.1.2.3:9123"
    assert server_url(client, base_url="https://sessions.example.com") == "https://sessions.example.com"
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example.com"}
    assert server_url(client, base_url="http://127.0.0.1:8123", headers=forwarded) == "http://127.0.0.1:8123"
    assert server_url(client, headers={"Host": "a b/<script>"}) == "http://127.0.0.1"  # never echoes junk


def test_forwarded_headers_name_the_address_only_when_trusted(settings, make_app):
    trusted = make_app(dataclasses.replace(settings, public_base_url="", trust_proxy_headers=True)).test_client()
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "sessions.example.com"}
    assert server_url(trusted, base_url="http://127.0.0.1:8123", headers=forwarded) == "https://sessions.example.com"
    pinned = make_app(dataclasses.replace(settings, public_base_url="https://pinned.example.com")).test_client()
    assert server_url(pinned, base_url="http://127.0.0.1:8123", headers=forwarded) == "https://pinned.example.com"


def test_public_base_url_and_trust_proxy_headers_are_checked_at_start_up():
    from app.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="PUBLIC_BASE_URL"):
        Settings.from_env({"PUBLIC_BASE_URL": "sessions.example.com"})
    with pytest.raises(SettingsError, match="TRUST_PROXY_HEADERS"):
        Settings.from_env({"TRUST_PROXY_HEADERS": "maybe"})
    assert Settings.from_env({"TRUST_PROXY_HEADERS": "1"}).trust_proxy_headers


# -- what compact requires, and bounds that cannot be met -----------------------------------------------


def test_the_compact_tools_document_marks_summary_and_options_upto_seq_required():
    document = schemas.openapi_document("https://sessions.example.com")
    body = document["paths"]["/v1/session/compact"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"session_id", "summary", "options"} <= set(body["required"])
    assert body["properties"]["options"]["required"] == ["upto_seq"]
    assert cozerules.openapi_problems(document) == []
    committed = json.loads((ROOT / "openapi.json").read_text())
    assert committed["paths"]["/v1/session/compact"] == document["paths"]["/v1/session/compact"]


def _sample(prop: dict) -> object:
    """A value of a request property's type that its schema accepts, for a body of the required fields only."""
    if "enum" in prop:
        return prop["enum"][0]
    return {"object": {}, "string": "s1", "integer": 1, "boolean": True}[prop.get("type", "string")]


def test_every_option_a_tool_cannot_run_without_is_marked_required_in_its_document():
    document = schemas.openapi_document("https://sessions.example.com")
    refused_without: dict[str, str] = {}
    for tool in spec.TOOLS:
        body_schema = document["paths"][tool.path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        body = {"user_id": "u1"}  # Coze's connector fills it: never required in the document
        body.update({name: _sample(body_schema["properties"][name]) for name in body_schema.get("required", [])})
        options = body_schema["properties"].get("options", {})
        if isinstance(body.get("options"), dict):  # marked required: given, the tool runs
            body["options"] = {name: _sample(options["properties"][name]) for name in options.get("required", [])}
        try:
            validation.parse(tool.name, body)
        except errors.InvalidArgument as exc:
            if exc.field.startswith("options.") and exc.reason == "required":
                refused_without[tool.name] = exc.field.removeprefix("options.")
    assert refused_without == {}  # every option a tool needs is asked for by its document
    marked = {
        tool.name: document["paths"][tool.path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        .get("properties", {})
        .get("options", {})
        .get("required", [])
        for tool in spec.TOOLS
    }
    assert {name: needs for name, needs in marked.items() if needs} == {
        "session_compact": ["upto_seq"],
        "session_rewind": ["to_seq"],
    }


def test_compact_on_a_session_without_messages_says_so(api):
    sid = api.create()["session_id"]
    english = {"user_id": "u1", "session_id": sid, "summary": "s", "options": {"upto_seq": 99, "lang": "en"}}
    answer = fail(api.call("compact", english), "INVALID_ARGUMENT")
    assert answer["error"] == "invalid argument: options.upto_seq the session has no messages to compact"
    api.call("append_messages", {"user_id": "u1", "session_id": sid, "role": "user", "content": "hi"})
    past = fail(api.call("compact", english), "INVALID_ARGUMENT")["error"]
    assert past.endswith("must be at most 1, the seq of the session's last message")
    missing = {"user_id": "u1", "session_id": sid, "summary": "s"}
    fail(api.call("compact", missing), "INVALID_ARGUMENT", field="options.upto_seq")  # direct callers too


# -- registration without credentials, and against the stand-in --------------------------------------


def test_a_dry_run_needs_no_coze_credentials(capsys):
    argv = ["--coze-url", "http://coze.example.com", "--base-url", "https://sessions.example.com", "--dry-run"]
    rc = register([*argv, "--debug", "--publish"], env={})
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "dry run" in out.out and "COZE_EMAIL" not in out.err


def test_a_dry_run_needs_no_argument_at_all(capsys):
    rc = register(["--dry-run"], env={"PORT": "9123"})
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "using http://127.0.0.1:9123" in out.out and "using http://127.0.0.1:8888" in out.out
    assert "would POST http://127.0.0.1:8888/api/plugin_api/register" in out.out
    rc = register(["--dry-run", "--debug"], env={"PUBLIC_BASE_URL": "https://s.example.com", "COZE_URL": "nope"})
    assert rc == 2 and "'nope' is not an http(s) URL" in capsys.readouterr().err


@pytest.mark.slow
def test_make_coze_standin_serves_a_stand_in_that_register_debug_and_publish_pass_against(mongo_uri, db_name):
    port = free_port()
    env = {**os.environ, "COZE_STANDIN_PORT": str(port), "COZE_EMAIL": "", "COZE_PASSWORD": ""}
    standin = subprocess.Popen(
        [sys.executable, "-m", "tests.coze_standin"], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        banner = standin.stdout.readline()
        deadline = time.monotonic() + 20
        while not port_open("127.0.0.1", port):
            assert time.monotonic() < deadline and standin.poll() is None
            time.sleep(0.1)
        email, password = re.search(r"COZE_EMAIL=(\S+) COZE_PASSWORD=(\S+)", banner).groups()
        with gunicorn(service_env(mongo_uri, db_name), workers=1) as base:
            coze_env = {"COZE_EMAIL": email, "COZE_PASSWORD": password, "SERVICE_TOKEN": TOKEN}
            argv = ["--coze-url", f"http://127.0.0.1:{port}", "--base-url", base, "--debug", "--publish"]
            assert register(argv, env=coze_env) == 0
    finally:
        standin.terminate()
        standin.wait(timeout=10)
        standin.stdout.close()
    with socket.socket() as probe:  # the stand-in let its port go
        probe.bind(("127.0.0.1", port))
