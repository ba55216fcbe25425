"""Tenants: one deployment, several token-isolated namespaces (TENANTS), and SERVICE_TOKEN's data kept as it is.

Two tenants (and SERVICE_TOKEN's `default`) use the same user and session ids: every tool through
each token sees only its own tenant, and an other tenant's session answers byte for byte as a
session that never existed. A database written by the code before tenants is read as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest

from app import spec
from app.settings import Settings, SettingsError
from app.tenants import DEFAULT, parse, split_user_key, user_key
from tests.data import make_legacy_documents as legacy
from tests.support import AUTH, ROOT, TOKEN, Api, check_response, ctx, fail, ok

ACME_OLD, ACME = "acme-old-token-0123456789", "acme-new-token-0123456789"
GLOBEX = "globex-token-0123456789abcdef"
GLOBEX_HASH = "sha256:" + hashlib.sha256(GLOBEX.encode()).hexdigest()
TENANTS_YAML = f"""# two teams on one deployment
- name: acme
  tokens: [{ACME_OLD}, {ACME}]
- name: globex
  tokens: ["{GLOBEX_HASH}"]   # the file holds no secret: the token's SHA-256
"""
BEARER = {DEFAULT: TOKEN, "acme": ACME, "globex": GLOBEX}
LIMITS = {"max_sessions": 10, "timeout": 1800, "max_timeout": 86400, "max_history": 1000, "max_context_bytes": 1 << 20}


class TenantApi(Api):
    """An Api whose every call carries one tenant's token."""

    def __init__(self, client, token: str) -> None:
        super().__init__(client)
        self.auth = {"Authorization": f"Bearer {token}"}

    def post(self, tool_name, body, *, headers=None, raw=None):
        return super().post(tool_name, body, headers={**self.auth, **(headers or {})}, raw=raw)

    def raw(self, tool: spec.Tool, body: dict) -> tuple[int, bytes]:
        """The answer's status and exact bytes (schema-checked)."""
        response = self.client.post(tool.path, json=body, headers=self.auth)
        check_response(tool, json.loads(response.data))
        return response.status_code, response.data


@pytest.fixture
def tenants_file(tmp_path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    return path


@pytest.fixture
def tenant_app(make_app, settings, tenants_file):
    return make_app(dataclasses.replace(settings, tenants_path=str(tenants_file)))


@pytest.fixture
def apis(tenant_app) -> dict[str, TenantApi]:
    return {name: TenantApi(tenant_app.test_client(), token) for name, token in BEARER.items()}


def stored(app) -> list[dict]:
    return sorted(app.extensions["database"].store().collections.read.find({}), key=lambda d: d["_id"])


# the stored user key


def test_a_tenants_user_key_never_equals_a_plain_user_id_or_another_tenants_and_splits_back():
    assert user_key(DEFAULT, "u1") == "u1"  # SERVICE_TOKEN's data: the plain user id, as before tenants
    assert user_key("acme", "u1") == "acme\x1fu1" != user_key("globex", "u1")
    for tenant, uid in [(DEFAULT, "u1"), ("acme", "u1"), ("acme", "a\x1eb@c:d"), ("x", "acme")]:
        assert split_user_key(user_key(tenant, uid)) == (tenant, uid)
    import re

    assert not re.match(spec.USER_ID_PATTERN, "acme\x1fu1")  # no caller can name another tenant's key


# the file


def test_yaml_and_json_files_with_clear_and_hashed_tokens_and_limits_parse_alike():
    as_json = json.dumps(
        [{"name": "acme", "tokens": [ACME_OLD, ACME], "max_sessions": 3}, {"name": "globex", "tokens": [GLOBEX_HASH]}]
    )
    as_yaml = TENANTS_YAML.replace("- name: acme\n", "- name: acme\n  max_sessions: 3\n")
    for text in (as_json, as_yaml):
        t = parse(text, service_tokens=(TOKEN,), defaults=LIMITS, max_context_bytes=1 << 21)
        assert t.names == (DEFAULT, "acme", "globex")
        assert t.by_name["acme"].max_sessions == 3 and t.by_name["globex"].max_sessions == 10
        assert t.pick(f"Bearer {ACME_OLD}").name == t.pick(ACME).name == "acme"
        assert t.pick(f"Bearer {GLOBEX}").name == "globex"
        assert t.pick(f"Bearer {TOKEN}").name == DEFAULT
        assert t.pick(f"Bearer {GLOBEX_HASH}") is None  # the hash is not a token
        assert t.pick("Bearer ") is None and t.pick("") is None and t.pick(f"Bearer {ACME}x") is None


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must be a non-empty list"),
        ("name: acme\ntokens: [x]", "must be a non-empty list"),
        ("- name: acme\n  tokens: [a\n", "not valid YAML or JSON at line"),
        ("- name: Acme\n  tokens: [x]", "name must be 1-32 characters of a-z 0-9 _ -"),
        ("- name: " + "a" * 33 + "\n  tokens: [x]", "name must be 1-32"),
        ("- name: acme", "tokens must be a non-empty list of strings"),
        ("- name: acme\n  tokens: secret", "tokens must be a non-empty list of strings"),
        ("- name: acme\n  tokens: [x]\n  max_sesions: 3", "unknown key 'max_sesions'"),
        ("- name: acme\n  tokens: [x]\n  max_sessions: 0", "max_sessions must be a positive integer"),
        ("- name: acme\n  tokens: [x]\n  timeout: '60'", "timeout must be a positive integer"),
        ("- name: acme\n  tokens: [x]\n  timeout: 900\n  max_timeout: 600", "timeout (900) must not exceed"),
        ("- name: acme\n  tokens: [x]\n  max_history: 1001", "max_history must be at most 1000"),
        ("- name: acme\n  tokens: [x]\n  max_context_bytes: 99999999", "max_context_bytes must be at most"),
        ("- name: acme\n  tokens: ['sha256:abc']", "sha256: token must be followed by 64 hex digits"),
        ("- name: acme\n  tokens: [x]\n- name: acme\n  tokens: [y]", "tenant 'acme' is declared twice"),
        ("- name: default\n  tokens: [y]", "declared twice (SERVICE_TOKEN is the tenant default)"),
        ("- name: acme\n  tokens: [x]\n- name: b\n  tokens: [x]", "a token is also a token of tenant 'acme'"),
        (f"- name: acme\n  tokens: [{TOKEN}]", "a token is also a token of tenant default (SERVICE_TOKEN)"),
        ("- name: acme\n  tokens: [short]", "tokens must be at least 16 characters in production"),
    ],
)
def test_a_bad_tenants_file_stops_start_up_with_a_settings_error_naming_tenants_and_the_reason(tmp_path, text, reason):
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    env = {"TENANTS": str(path), "SERVICE_TOKEN": TOKEN}
    if "production" in reason:
        env |= {"APP_ENV": "production", "MONGODB_URI": "mongodb://db"}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert str(raised.value).startswith(f"TENANTS ({path}): "), raised.value
    assert reason in str(raised.value), raised.value


def test_a_missing_tenants_file_is_refused_naming_it(tmp_path):
    with pytest.raises(SettingsError, match=r"^TENANTS \(.*nope.yaml\): cannot read"):
        Settings.from_env({"TENANTS": str(tmp_path / "nope.yaml")})


def test_production_accepts_tenants_without_service_token(tmp_path, tenants_file):
    settings = Settings.from_env({"TENANTS": str(tenants_file), "APP_ENV": "production", "MONGODB_URI": "mongodb://db"})
    assert settings.tenants.names == ("acme", "globex")  # no SERVICE_TOKEN: no default tenant
    assert settings.tenants.pick(f"Bearer {TOKEN}") is None


# isolation through HTTP

OTHER_TENANTS_CALLS = [  # (tool, body): each on u1's sess_1, which exists only in the owner's tenant
    ("session_get", {}),
    ("session_get", {"options": {"resume": True}}),
    ("session_update", {"context": '{"stolen": true}', "request_id": "r-1"}),
    ("session_update", {"context": "{}", "options": {"merge": False}}),
    ("session_append_messages", {"role": "user", "content": "injected", "request_id": "r-2"}),
    ("session_history", {}),
    ("session_clear_history", {}),
    ("session_touch", {"options": {"timeout": 60}}),
    ("session_list", {}),
    ("session_close", {}),
    ("session_lock", {"options": {"lease": 60}}),
    ("session_unlock", {"lock_token": "any"}),
    ("session_compact", {"summary": "s", "options": {"upto_seq": 1}}),
    ("session_delete", {"request_id": "r-3"}),
    ("session_create", {"request_id": "make-1"}),  # replays in the owner's tenant: here a new session
    *((spec.MANAGE_TOOL.name, {"operation": op}) for op in ("get", "history", "touch", "list", "close", "delete")),
]


def owners_session(api: TenantApi) -> str:
    """u1's sess_1 in `api`'s tenant with a context, messages, a lock and a request id; the lock token."""
    api.create("u1", session_id="sess_1", context='{"secret": 42}', request_id="make-1")
    for i in range(5):  # into the archive
        ok(api.call("append_messages", {"user_id": "u1", "session_id": "sess_1", "role": "user", "content": f"m{i}"}))
    return ok(api.call("lock", {"user_id": "u1", "session_id": "sess_1", "options": {"lease": 600}}))["lock_token"]


@pytest.mark.parametrize(("owner", "intruder"), [("acme", "globex"), ("globex", DEFAULT), (DEFAULT, "acme")])
def test_every_tool_through_another_tenants_token_answers_byte_for_byte_as_a_missing_session(
    tenant_app, apis, owner, intruder
):
    def intrude(round_: str) -> list[tuple[int, bytes]]:
        answers = []
        for tool, extra in calls:
            body = {"user_id": "u1", "session_id": "sess_1", **extra}
            if "request_id" in body:  # a request id of its own each round: a repeat would be answered as one
                body["request_id"] += round_
            answers.append(apis[intruder].raw(spec.TOOLS_BY_NAME[tool], body))
        return answers

    calls = [(t, b) for t, b in OTHER_TENANTS_CALLS if t != "session_create"]
    never_existed = intrude("-first")  # nothing stored anywhere yet
    token = owners_session(apis[owner])

    def owners() -> list[dict]:
        return [d for d in stored(tenant_app) if d["uid"] == user_key(owner, "u1")]

    before = owners()
    assert intrude("-second") == never_existed
    assert owners() == before  # nothing of the owner's read, counted, locked, changed or erased
    assert json.loads(never_existed[0][1])["error_code"] == "SESSION_NOT_FOUND"
    assert json.loads(never_existed[calls.index(("session_list", {}))][1])["sessions"] == []
    # the owner's session is whole: context, messages, its lock
    mine = ok(apis[owner].call("get", {"user_id": "u1", "session_id": "sess_1"}))
    assert (ctx(mine), mine["message_count"], mine["version"]) == ({"secret": 42}, 5, 6)
    write = {"user_id": "u1", "session_id": "sess_1", "context": "{}"}
    fail(apis[owner].call("update", write), "SESSION_LOCKED")
    ok(apis[owner].call("update", {**write, "lock_token": token}))


def test_the_same_user_and_session_ids_are_separate_sessions_in_each_tenant_through_every_tool(tenant_app, apis):
    def workflow(name: str, api: TenantApi) -> dict:
        ids = {"user_id": "u1", "session_id": "sess_1"}
        seen = {"create": api.create("u1", session_id="sess_1", context=json.dumps({"team": name}))["created"]}
        seen["derived"] = api.create("u1", request_id="same-request")["session_id"]
        for i in range(4):
            body = {**ids, "role": "user", "content": f"{name}-{i}", "request_id": f"append-{i}"}
            seen[f"append{i}"] = ok(api.call("append_messages", body))["replayed"]
        token = ok(api.call("lock", {**ids, "request_id": "lock-1"}))["lock_token"]
        locked = {**ids, "lock_token": token}
        ok(api.call("update", {**locked, "context": json.dumps({"n": name}), "request_id": "upd-1"}))
        ok(api.call("compact", {**locked, "summary": f"summary of {name}", "options": {"upto_seq": 1}}))
        ok(api.call("unlock", locked))
        ok(api.call("touch", {**ids, "options": {"timeout": 600}}))
        history = ok(api.call("history", {**ids, "options": {"format": "transcript"}}))
        seen["transcript"] = history["transcript"]
        seen["get"] = ctx(ok(api.call("get", ids)))
        seen["manage"] = ctx(ok(api.call("get", ids, manage=True)))
        seen["list"] = sorted(s["session_id"] for s in ok(api.call("list", {"user_id": "u1"}))["sessions"])
        ok(api.call("close", ids))
        ok(api.call("clear_history", {**ids, "session_id": seen["derived"]}))
        ok(api.call("delete", {**ids, "session_id": seen["derived"], "request_id": "del-1"}))
        return seen

    results = {name: workflow(name, api) for name, api in apis.items()}
    for name, seen in results.items():
        assert seen["create"] is True and not any(seen[f"append{i}"] for i in range(4)), name  # nothing replayed
        assert seen["get"] == seen["manage"] == {"team": name, "n": name}
        assert seen["transcript"] == f"summary: summary of {name}\n" + "\n".join(f"user: {name}-{i}" for i in (1, 2, 3))
        assert seen["list"] == sorted(["sess_1", seen["derived"]])
    derived = {seen["derived"] for seen in results.values()}
    assert len(derived) == 3  # a request id derives a session id per tenant
    uids = {d["uid"] for d in stored(tenant_app)}
    assert uids == {"u1", "acme\x1fu1", "globex\x1fu1"}  # default's documents hold the plain user id


def test_a_request_without_a_known_token_is_401_before_any_tenant_is_chosen(apis, tenant_app):
    client = tenant_app.test_client()
    for header in ({}, {"Authorization": f"Bearer {GLOBEX_HASH}"}, {"Authorization": "Bearer nope"}):
        response = client.post("/v1/session/get", json={"user_id": "u1", "session_id": "s"}, headers=header)
        assert response.status_code == 401 and response.get_json()["error_code"] == "UNAUTHORIZED"


def test_both_tokens_of_a_tenant_open_the_same_tenant_during_a_rotation(tenant_app):
    old, new = (TenantApi(tenant_app.test_client(), t) for t in (ACME_OLD, ACME))
    old.create("u1", session_id="rotated", context='{"a": 1}')
    assert ctx(ok(new.call("get", {"user_id": "u1", "session_id": "rotated"}))) == {"a": 1}


# limits per tenant


def test_each_tenant_has_its_own_limits(make_app, settings, tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(
        TENANTS_YAML.replace(
            "- name: acme\n",
            "- name: acme\n  max_sessions: 2\n  timeout: 60\n  max_timeout: 120\n  max_history: 3\n"
            "  max_context_bytes: 64\n",
        )
    )
    app = make_app(dataclasses.replace(settings, tenants_path=str(path)))
    acme, globex = TenantApi(app.test_client(), ACME), TenantApi(app.test_client(), GLOBEX)
    first = acme.create("u1", session_id="a")
    assert (first["timeout"], first["max_history"]) == (60, 3)
    acme.create("u1", session_id="b")
    fail(acme.call("create", {"user_id": "u1", "session_id": "c"}), "SESSION_LIMIT_EXCEEDED")
    fail(
        acme.call("create", {"user_id": "u2", "options": {"timeout": 121}}), "INVALID_ARGUMENT", field="options.timeout"
    )
    fail(acme.call("touch", {"user_id": "u1", "session_id": "a", "options": {"max_history": 4}}), "INVALID_ARGUMENT")
    fail(
        acme.call("update", {"user_id": "u1", "session_id": "a", "context": json.dumps({"x": "y" * 64})}),
        "CONTEXT_TOO_LARGE",
    )
    msgs = [{"role": "user", "content": str(i)} for i in range(5)]
    assert ok(acme.call("append_messages", {"user_id": "u1", "session_id": "a", "messages": msgs}))["dropped"] == 2
    for i in range(3):  # the server's limits for the other tenant
        made = globex.create("u1", session_id=f"g{i}", options={"timeout": 3600})
        assert (made["timeout"], made["max_history"]) == (3600, settings.max_history)
    ok(globex.call("update", {"user_id": "u1", "session_id": "g0", "context": json.dumps({"x": "y" * 64})}))


# a database written before tenants


@pytest.fixture(params=["with TENANTS", "without TENANTS"])
def legacy_app(request, make_app, settings, tenants_file, clock):
    documents = json.loads((ROOT / "tests" / "data" / "legacy_documents.json").read_text())
    clock.now = legacy.NOW
    path = str(tenants_file) if request.param == "with TENANTS" else ""
    app = make_app(dataclasses.replace(settings, service_tokens=(legacy.TOKEN,), tenants_path=path))
    app.extensions["database"].store().collections.read.insert_many([legacy.decode(d) for d in documents])
    return app, documents


def test_a_database_written_before_tenants_is_the_default_tenants_data_as_it_is(legacy_app):
    app, documents = legacy_app
    assert [legacy.encode(d) for d in stored(app)] == documents  # started with TENANTS: nothing rewritten
    old = TenantApi(app.test_client(), legacy.TOKEN)
    session = ok(old.call("get", {"user_id": "u1", "session_id": "legacy"}))
    assert ctx(session) == {"lang": "zh", "cart": [1, 2], "b": {"c": 1}}
    history = ok(old.call("history", {"user_id": "u1", "session_id": "legacy", "options": {"limit": 10}}))
    assert [m["content"] for m in history["messages"]] == [f"m{i}" for i in range(7)]  # archive chunks too
    replay = {"user_id": "u1", "session_id": "legacy", "role": "user", "content": "m1", "request_id": "append-1"}
    assert ok(old.call("append_messages", replay))["replayed"] is True  # its request ids still count
    assert old.create("u1", request_id="make-1")["replayed"] is True  # and its derived session ids
    fail(old.call("update", {"user_id": "u2", "session_id": "locked", "context": "{}"}), "SESSION_LOCKED")
    if app.extensions["database"].settings.tenants_path:
        acme = TenantApi(app.test_client(), ACME)
        fail(acme.call("get", {"user_id": "u1", "session_id": "legacy"}), "SESSION_NOT_FOUND")
        assert ok(acme.call("list", {"user_id": "u1"}))["sessions"] == []
    keys = {(d["_id"], d["uid"]) for d in stored(app)}
    assert keys == {(d["_id"], d["uid"]) for d in documents}


def test_the_default_tenant_stores_under_the_keys_the_code_before_tenants_used(make_app, settings, tenants_file, clock):
    clock.now = legacy.NOW
    app = make_app(dataclasses.replace(settings, service_tokens=(legacy.TOKEN,), tenants_path=str(tenants_file)))
    legacy.workload(app.test_client(), {"Authorization": f"Bearer {legacy.TOKEN}"})
    expected = json.loads((ROOT / "tests" / "data" / "legacy_documents.json").read_text())
    # the keys, ids and kinds every filter uses; fields other work adds later (say `cq`) may differ
    keys = ("_id", "k", "uid", "sid", "slot", "r")
    assert [{k: d.get(k) for k in keys} for d in normalized([legacy.encode(d) for d in stored(app)])] == [
        {k: d.get(k) for k in keys} for d in normalized(expected)
    ]


def normalized(documents: list[dict]) -> list[dict]:
    """Documents without what is random on every run: incarnations, lock tokens, slot numbers."""
    nonces = {d["r"]: "R" for d in documents if "r" in d}
    out = []
    for d in documents:
        text = json.dumps(d)
        for nonce in nonces:
            text = text.replace(nonce, "R")
        d = json.loads(text)
        d.update({k: "*" for k in ("lk",) if d.get(k)})
        if type(d.get("slot")) is int:
            d["slot"] = "N"
        out.append(d)
    return sorted(out, key=lambda d: d["_id"])


def test_without_tenants_service_token_is_the_single_default_tenant(api, collection):
    api.create("u1", session_id="s1")
    assert {(d["_id"], d["uid"]) for d in collection.find({"k": "s"})} == {("s1@u1", "u1")}
    assert AUTH["Authorization"] == f"Bearer {TOKEN}"


# metrics and logs


def test_metrics_count_each_tenants_requests_under_its_name_and_nothing_else(tenant_app, apis):
    from tests.test_metrics import assert_only_spec_labels, total

    for name in ("acme", "acme", "globex"):
        apis[name].create("u1")
    tenant_app.test_client().post("/v1/session/get", json={"user_id": "u1", "session_id": "s"})  # no token
    text = tenant_app.test_client().get("/metrics").data.decode()
    for tenant, n in (("acme", 2), ("globex", 1), (DEFAULT, 0)):
        assert total(text, "session_requests_total", tenant=tenant, tool="session_create", error_code="OK") == n
    assert total(text, "session_requests_total", tenant="", error_code="UNAUTHORIZED") == 1
    assert total(text, "session_database_errors_total", tenant="globex", error_code="STORAGE_UNAVAILABLE") == 0
    assert_only_spec_labels(text.replace('tenant="acme"', 'tenant="default"').replace('tenant="globex"', 'tenant=""'))
    assert "u1" not in text


def test_json_logs_carry_the_tenant_and_one_user_id_in_two_tenants_hashes_as_two_users(
    make_app, settings, tenants_file, caplog
):
    from app import logs

    tenant_app = make_app(dataclasses.replace(settings, tenants_path=str(tenants_file), log_format="json"))
    apis = {name: TenantApi(tenant_app.test_client(), token) for name, token in BEARER.items()}
    with caplog.at_level(logging.INFO, logger="app.api"):
        for name in (DEFAULT, "acme", "globex"):
            apis[name].create("bob")
    lines = [json.loads(logs.JsonFormatter().format(r)) for r in caplog.records if r.name == "app.api"]
    assert [line["tenant"] for line in lines] == [DEFAULT, "acme", "globex"]
    key = logs.hash_key(tenant_app.extensions["database"].settings)
    assert lines[0]["user"] == logs.user_hash(key, "bob")  # the default tenant's hashes are those of before
    assert len({line["user"] for line in lines}) == 3
    assert "bob" not in json.dumps(lines)


def test_every_token_of_every_tenant_is_compared_in_constant_time_whichever_matches(tenant_app, monkeypatch):
    from app import tenants as tenants_module

    calls = []
    real = tenants_module.hmac.compare_digest
    monkeypatch.setattr(tenants_module.hmac, "compare_digest", lambda a, b: calls.append(b) or real(a, b))
    stored_tokens = {TOKEN.encode(), ACME_OLD.encode(), ACME.encode(), hashlib.sha256(GLOBEX.encode()).digest()}
    for token, expected in ((TOKEN, 200), (ACME_OLD, 200), (GLOBEX, 200), ("nope", 401)):
        calls.clear()
        response = tenant_app.test_client().post(
            "/v1/session/list", json={"user_id": "u"}, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == expected, token
        assert len(calls) == 4 and set(calls) == stored_tokens, token  # the first match does not stop the loop


def test_json_logs_in_production_need_a_log_hash_key_when_the_tenants_file_holds_only_hashes(tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(f'- name: globex\n  tokens: ["{GLOBEX_HASH}"]\n')
    env = {"TENANTS": str(path), "APP_ENV": "production", "MONGODB_URI": "mongodb://db", "LOG_FORMAT": "json"}
    with pytest.raises(SettingsError, match="LOG_FORMAT=json needs LOG_HASH_KEY when every token is a sha256"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "LOG_HASH_KEY": "k" * 16}).log_hash_key
    assert Settings.from_env({**env, "SERVICE_TOKEN": TOKEN}).tenants.any_clear_token
