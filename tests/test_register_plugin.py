"""The registration script against the Coze Studio stand-in, whose debug calls reach the real service."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
import yaml

from app import spec
from scripts import cozerules
from scripts.register_plugin import main
from tests.coze_standin import CozeStandIn, faulty_front, serve, standin
from tests.servers import gunicorn, service_env
from tests.support import AUTH, ROOT, TOKEN, fresh_database

EMAIL = "operator@example.com"
PASSWORD = "pa55-w0rd-never-printed"
ENV = {"COZE_EMAIL": EMAIL, "COZE_PASSWORD": PASSWORD, "SERVICE_TOKEN": TOKEN}
TOOL_NAMES = [t.name for t in spec.TOOLS]


@pytest.fixture(scope="module")
def service(mongo_uri: str) -> Iterator[str]:
    """The real service under gunicorn, on its own database."""
    with (
        fresh_database(mongo_uri, "test_register") as db,
        gunicorn(service_env(mongo_uri, db), workers=1, threads=4) as base,
    ):
        yield base


@pytest.fixture
def coze() -> Iterator[CozeStandIn]:
    with standin(EMAIL, PASSWORD) as c:
        yield c


def run(capsys: pytest.CaptureFixture, coze: CozeStandIn | None, *argv: str, env: dict | None = None):
    """main() in-process; no password, token or login cookie may appear in what it printed."""
    env = ENV if env is None else env
    rc = main(list(argv), env=env)
    out, err = capsys.readouterr()
    leaks = [PASSWORD, TOKEN, *(v for k, v in env.items() if k != "COZE_EMAIL" and v)]
    leaks += list(coze.sessions) if coze else []
    for secret in leaks:
        assert secret not in out and secret not in err, "a secret was printed"
    return rc, out, err


def paths(coze: CozeStandIn) -> list[str]:
    return [path for path, _ in coze.requests]


def only_plugin(coze: CozeStandIn):
    assert len(coze.plugins) == 1, coze.plugins
    return next(iter(coze.plugins.values()))


def test_the_first_run_registers_debugs_every_tool_against_the_real_service_and_publishes(service, coze, capsys):
    rc, out, err = run(capsys, coze, "--coze-url", coze.url, "--base-url", service, "--debug", "--publish")

    assert rc == 0, err
    plugin = only_plugin(coze)
    assert plugin.manifest["auth"]["service_token"] == TOKEN
    assert plugin.openapi["servers"] == [{"url": service}]
    register = next(body for path, body in coze.requests if path == "/api/plugin_api/register")
    assert isinstance(register["ai_plugin"], str) and isinstance(register["openapi"], str)
    assert [t.debug_status for t in plugin.tools] == [1] * len(TOOL_NAMES)
    assert "answered error_code" not in out, out  # every sample succeeds: unlock gets the token lock took
    assert plugin.versions == ["v0.0.1"]
    called = [c["tool"] for c in coze.service_calls]
    assert sorted(called) == sorted([*TOOL_NAMES, "session_delete"])  # the second delete: session_fork's session
    assert called[0] == "session_create" and called[-2:] == ["session_delete", "session_delete"]
    assert {c["headers"]["Authorization"] for c in coze.service_calls} == {TOKEN}
    user_id = coze.service_calls[0]["body"]["user_id"]
    assert user_id.startswith("coze-debug-")
    left = requests.post(f"{service}/v1/session/list", json={"user_id": user_id}, headers=AUTH, timeout=10).json()
    assert left["sessions"] == [], "the debug session was not deleted"
    for line in ("login: ok", "register: plugin", "cleanup: debug session", "publish: plugin"):
        assert line in out
    for name in TOOL_NAMES:
        assert f"debug {name}: pass\n" in out


def test_a_second_run_updates_the_same_plugin_and_publishes_a_higher_version(service, coze, capsys):
    first = run(capsys, coze, "--coze-url", coze.url, "--base-url", service, "--debug", "--publish")
    second = run(capsys, coze, "--coze-url", coze.url, "--base-url", service, "--debug", "--publish")

    assert first[0] == 0 and second[0] == 0, second[2]
    plugin = only_plugin(coze)
    assert paths(coze).count("/api/plugin_api/register") == 1
    assert paths(coze).count("/api/plugin_api/update") == 1
    assert f"update: plugin {plugin.plugin_id} updated" in second[1]
    assert plugin.versions == ["v0.0.1", "v0.0.2"]

    rc, out, err = run(
        capsys, coze, "--coze-url", coze.url, "--base-url", service,
        "--plugin-id", plugin.plugin_id, "--publish", "--version", "v1.0.0",
    )  # fmt: skip
    assert rc == 0, err
    assert only_plugin(coze) is plugin
    assert plugin.versions == ["v0.0.1", "v0.0.2", "v1.0.0"]


def test_a_tool_that_fails_debug_stops_publish_and_names_the_tool_and_the_reason(service, coze, capsys):
    with serve(faulty_front(service, "/v1/session/history", status=500)) as front:
        rc, out, err = run(capsys, coze, "--coze-url", coze.url, "--base-url", front, "--debug", "--publish")

    assert rc == 1
    assert "debug session_history: FAILED: http request failed, status=500" in out
    assert "publish failed: refused, 1 tool(s) failed debug: session_history: http request failed, status=500" in err
    plugin = only_plugin(coze)
    assert plugin.versions == []
    assert "/api/plugin_api/publish_plugin" not in paths(coze)
    assert {t.name for t in plugin.tools if t.debug_status != 1} == {"session_history"}
    assert "cleanup: debug session" in out


def test_publish_without_debug_is_refused_early_listing_every_tool_not_yet_debugged(service, coze, capsys):
    rc, out, err = run(capsys, coze, "--coze-url", coze.url, "--base-url", service, "--publish")

    assert rc == 1
    assert f"publish failed: refused, {len(TOOL_NAMES)} tool(s) have not passed debug: {', '.join(TOOL_NAMES)}" in err
    assert "--debug" in err
    assert "/api/plugin_api/debug_api" not in paths(coze)
    assert "/api/plugin_api/publish_plugin" not in paths(coze)


def test_a_service_token_the_service_refuses_fails_every_tool_with_http_401(service, coze, capsys):
    env = {**ENV, "SERVICE_TOKEN": "a-token-the-service-does-not-know"}
    rc, out, err = run(capsys, coze, "--coze-url", coze.url, "--base-url", service, "--debug", env=env)

    assert rc == 1
    assert out.count("FAILED: http request failed, status=401") == len(TOOL_NAMES)
    assert f"debug failed: {len(TOOL_NAMES)} tool(s) failed" in err
    assert all(t.debug_status == 0 for t in only_plugin(coze).tools)


def test_a_wrong_password_fails_the_login_step_with_its_status_code_and_msg(coze, capsys):
    env = {**ENV, "COZE_PASSWORD": "not-the-password"}
    rc, out, err = run(capsys, coze, "--coze-url", coze.url, "--base-url", "https://s.example.com", env=env)

    assert rc == 1
    assert "login failed: HTTP 200, code 700012001, msg 'email or password is incorrect'" in err
    assert paths(coze) == ["/api/passport/web/email/login/"]


def test_coze_answering_http_200_with_a_non_zero_code_stops_the_run_at_that_step(coze, capsys):
    argv = ("--coze-url", coze.url, "--base-url", "https://s.example.com", "--space-id", "7100000000000000999")
    rc, out, err = run(capsys, coze, *argv, "--publish")

    assert rc == 1
    assert "find failed: HTTP 200, code 700012003, msg 'space 7100000000000000999 not found or no permission'" in err
    assert "/api/plugin_api/register" not in paths(coze)
    assert coze.plugins == {}


def test_a_version_not_higher_than_the_published_one_is_refused_by_coze_and_reported(service, coze, capsys):
    argv = ("--coze-url", coze.url, "--base-url", service, "--publish")
    assert run(capsys, coze, *argv, "--debug", "--version", "v1.2.0")[0] == 0
    rc, out, err = run(capsys, coze, *argv, "--version", "v1.1.9")

    assert rc == 1
    assert "publish failed: HTTP 200, code 702093021, msg 'version v1.1.9 must be higher than v1.2.0'" in err
    assert only_plugin(coze).versions == ["v1.2.0"]


def test_an_unknown_plugin_id_is_reported_and_nothing_is_registered(coze, capsys):
    argv = ("--coze-url", coze.url, "--base-url", "https://s.example.com", "--plugin-id", "7299999999999999999")
    rc, out, err = run(capsys, coze, *argv)

    assert rc == 1
    assert "find failed: HTTP 200, code 702093003, msg 'plugin 7299999999999999999 not found'" in err
    assert coze.plugins == {}


def test_dry_run_prints_every_request_with_secrets_masked_and_sends_nothing(coze, capsys):
    argv = ("--coze-url", coze.url, "--base-url", "https://sessions.example.com", "--debug", "--publish")
    rc, out, err = run(capsys, coze, *argv, "--dry-run")

    assert rc == 0, err
    assert coze.requests == [] and coze.service_calls == []
    for path in (
        "/api/passport/web/email/login/",
        "/api/playground_api/space/list",
        "/api/plugin_api/get_dev_plugin_list",
        "/api/plugin_api/register",
        "/api/plugin_api/get_plugin_apis",
        "/api/plugin_api/get_plugin_next_version",
        "/api/plugin_api/publish_plugin",
    ):
        assert f"would POST {coze.url}{path}" in out
    assert out.count(f"would POST {coze.url}/api/plugin_api/debug_api") == len(TOOL_NAMES)
    assert '"password": "***"' in out
    assert '\\"service_token\\": \\"***\\"' in out


def test_missing_credentials_or_a_missing_coze_url_are_refused_before_anything_is_sent(coze, capsys):
    env = {"COZE_EMAIL": EMAIL, "SERVICE_TOKEN": TOKEN}
    rc, out, err = run(capsys, coze, "--coze-url", coze.url, "--base-url", "https://s.example.com", env=env)

    assert rc == 2
    assert "set COZE_PASSWORD in the environment" in err
    rc, out, err = run(capsys, coze, "--base-url", "https://s.example.com", "--publish", "--debug")
    assert rc == 2
    assert "--debug, --publish need(s) --coze-url" in err
    rc, out, err = run(capsys, coze, "--publish", env={"PUBLIC_BASE_URL": ""})
    assert rc == 2
    assert "give --base-url (the service's public URL) or set PUBLIC_BASE_URL" in err
    assert coze.requests == []


def test_export_writes_import_ready_files_that_pass_the_coze_rules_and_prints_the_saas_steps(tmp_path, capsys):
    target = tmp_path / "coze-import"
    rc, out, err = run(capsys, None, "--base-url", "https://sessions.example.com", "--export", str(target))

    assert rc == 0, err
    openapi = json.loads((target / "openapi.json").read_text(encoding="utf-8"))
    manifest = json.loads((target / "ai_plugin.json").read_text(encoding="utf-8"))
    assert cozerules.openapi_problems(openapi) == []
    assert cozerules.manifest_problems(manifest) == []
    assert openapi["servers"] == [{"url": "https://sessions.example.com"}]
    committed = json.loads((ROOT / "openapi.json").read_text(encoding="utf-8"))
    assert {**committed, "servers": openapi["servers"]} == openapi
    assert manifest == yaml.safe_load((ROOT / "plugin.yaml").read_text(encoding="utf-8"))
    for name in ("openapi.json", "ai_plugin.json"):
        assert TOKEN not in (target / name).read_text(encoding="utf-8")
    assert "Library -> + -> Plugin -> Import" in out
    assert f"Enable all {len(TOOL_NAMES)} tools" in out and "Publish the plugin" in out
    assert "IP address" not in err


def test_export_warns_that_coze_saas_needs_a_domain_not_an_ip(tmp_path, capsys):
    rc, out, err = run(capsys, None, "--base-url", "https://203.0.113.7", "--export", str(tmp_path))

    assert rc == 0
    assert "Coze SaaS refuses a server URL on an IP address" in err


def test_the_standin_enforces_the_coze_studio_contract():
    manifest = yaml.safe_load((ROOT / "plugin.yaml").read_text(encoding="utf-8"))
    manifest["auth"]["service_token"] = TOKEN
    openapi = (ROOT / "openapi.json").read_text(encoding="utf-8")
    with standin(EMAIL, PASSWORD) as coze, requests.Session() as http:
        api = coze.url + "/api/plugin_api/"
        assert http.post(api + "get_plugin_apis", json={"plugin_id": "1", "page": 1, "size": 20}).status_code == 401
        login = http.post(coze.url + "/api/passport/web/email/login/", json={"email": EMAIL, "password": PASSWORD})
        assert login.json()["code"] == 0 and "session_key" in http.cookies
        space = http.post(coze.url + "/api/playground_api/space/list", json={}).json()["data"]["bot_space_list"][0]
        good = {"ai_plugin": json.dumps(manifest), "openapi": openapi, "space_id": space["id"]}

        assert http.post(api + "register", json={**good, "space_id": int(space["id"])}).status_code == 400
        as_object = http.post(api + "register", json={**good, "ai_plugin": manifest})
        assert as_object.status_code == 200 and as_object.json()["code"] != 0
        v31 = http.post(api + "register", json={**good, "openapi": openapi.replace('"3.0.1"', '"3.1.0"')})
        assert v31.status_code == 200 and "openapi must be 3.0.x" in v31.json()["msg"]
        no_auth = {k: v for k, v in manifest.items() if k != "auth"}
        assert http.post(api + "register", json={**good, "ai_plugin": json.dumps(no_auth)}).status_code == 500

        plugin_id = http.post(api + "register", json=good).json()["data"]["plugin_id"]
        assert isinstance(plugin_id, str)
        assert (
            http.post(api + "get_plugin_apis", json={"plugin_id": plugin_id, "page": 1, "size": 30}).status_code == 400
        )
        tools = http.post(api + "get_plugin_apis", json={"plugin_id": plugin_id, "page": 1, "size": 20}).json()
        assert [t["debug_status"] for t in tools["api_info"]] == [0] * len(TOOL_NAMES)
        publish = http.post(api + "publish_plugin", json={"plugin_id": plugin_id, "version_name": "v0.0.1"}).json()
        assert publish["code"] != 0 and "not passed debug" in publish["msg"]

        for tool in coze.plugins[plugin_id].tools:
            tool.debug_status = 1
        changed = json.loads(openapi)
        changed["paths"]["/v1/session/get"]["post"]["summary"] = "Read a session."
        update = {"plugin_id": plugin_id, "ai_plugin": json.dumps(manifest), "openapi": json.dumps(changed)}
        assert http.post(api + "update", json=update).json()["code"] == 0
        not_debugged = [t.name for t in coze.plugins[plugin_id].tools if t.debug_status != 1]
        assert not_debugged == ["session_get"]

        unreachable = copy.deepcopy(changed)
        unreachable["servers"] = [{"url": "http://127.0.0.1:9"}]
        update["openapi"] = json.dumps(unreachable)
        assert http.post(api + "update", json=update).json()["code"] == 0
        api_id = coze.plugins[plugin_id].tools[2].api_id
        params = json.dumps({"user_id": "u1", "session_id": "s1"})
        debug = http.post(api + "debug_api", json={"plugin_id": plugin_id, "api_id": api_id, "parameters": params})
        assert debug.status_code == 400  # operation missing
        body = {"plugin_id": plugin_id, "api_id": api_id, "parameters": params, "operation": 1}
        debug = http.post(api + "debug_api", json=body).json()
        assert debug["code"] == 0 and debug["success"] is False and "http request failed" in debug["reason"]


def test_the_script_runs_as_a_command_from_any_directory(coze, tmp_path):
    argv = [sys.executable, str(ROOT / "scripts" / "register_plugin.py"), "--coze-url", coze.url]
    argv += ["--base-url", "https://sessions.example.com", "--debug", "--publish", "--dry-run"]
    env = {**os.environ, **ENV}
    done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "would POST" in done.stdout and "publish_plugin" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr
    assert coze.requests == []


def test_with_a_context_schema_the_published_tools_declare_typed_fields_and_pass_debug(
    mongo_uri, coze, capsys, tmp_path
):
    schema = tmp_path / "cart.schema.json"
    schema.write_text(
        json.dumps({"type": "object", "properties": {"cart": {"type": "array", "items": {"type": "string"}}}})
    )
    with (
        fresh_database(mongo_uri, "test_register_typed") as db,
        gunicorn({**service_env(mongo_uri, db), "CONTEXT_SCHEMA": str(schema)}, workers=1, threads=4) as typed,
    ):
        rc, out, err = run(
            capsys,
            coze,
            "--coze-url",
            coze.url,
            "--base-url",
            typed,
            "--debug",
            "--publish",
            env={**ENV, "CONTEXT_SCHEMA": str(schema)},
        )
    assert rc == 0, err
    plugin = only_plugin(coze)
    assert [t.debug_status for t in plugin.tools] == [1] * len(TOOL_NAMES)
    update = plugin.openapi["paths"]["/v1/session/update"]["post"]
    assert update["requestBody"]["content"]["application/json"]["schema"]["properties"]["fields"]["properties"] == {
        "cart": {"type": "array", "items": {"type": "string"}}
    }
    assert "fields" in update["responses"]["200"]["content"]["application/json"]["schema"]["properties"]


def test_with_tenants_the_plugin_is_published_with_one_tenants_token_and_works_in_that_tenant(
    mongo_uri, tmp_path, coze, capsys
):
    from tests.test_tenants import ACME, GLOBEX, TENANTS_YAML

    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(TENANTS_YAML)
    with (
        fresh_database(mongo_uri, "test_register") as db,
        gunicorn({**service_env(mongo_uri, db), "TENANTS": str(tenants), "VAR_DIR": str(tmp_path)}, workers=1) as base,
    ):
        env = {**ENV, "SERVICE_TOKEN": ACME}  # the token of the tenant this workspace's plugin belongs to
        rc, out, err = run(capsys, coze, "--coze-url", coze.url, "--base-url", base, "--debug", "--publish", env=env)
        assert rc == 0, err
        plugin = only_plugin(coze)
        assert plugin.manifest["auth"]["service_token"] == ACME
        assert [t.debug_status for t in plugin.tools] == [1] * len(TOOL_NAMES)
        assert {c["headers"]["Authorization"] for c in coze.service_calls} == {ACME}
        user_id = coze.service_calls[0]["body"]["user_id"]
        calls = [c for c in coze.service_calls if c["tool"] == "session_get"]
        session_id = calls[0]["body"]["session_id"]
        for token in (ACME, GLOBEX, TOKEN):  # cleaned up in its tenant; never visible in another
            listed = requests.post(
                f"{base}/v1/session/list",
                json={"user_id": user_id},
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).json()
            assert listed["sessions"] == [], token
        assert session_id and plugin.versions == ["v0.0.1"]
