"""The admin CLI with tenants: `--tenant NAME` on every command, stats by tenant, one tenant's erasure."""

from __future__ import annotations

import dataclasses
import json

import orjson
import pytest

from app.tenants import DEFAULT
from tests.support import ctx, fail, fresh_database, ok
from tests.test_admin import admin
from tests.test_tenants import BEARER, TENANTS_YAML, TenantApi


@pytest.fixture
def tenant_app(make_app, settings, tmp_path):
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    return make_app(dataclasses.replace(settings, tenants_path=str(path)))


@pytest.fixture
def three(tenant_app):
    """u1's session s1 (and u2's s2) in each tenant, the context naming the tenant; the tenants' Apis."""
    apis = {name: TenantApi(tenant_app.test_client(), token) for name, token in BEARER.items()}
    for name, api in apis.items():
        api.create("u1", session_id="s1", context=json.dumps({"team": name}))
        ok(api.call("append_messages", {"user_id": "u1", "session_id": "s1", "role": "user", "content": name}))
        api.create("u2", session_id="s2")
    api = apis["acme"]
    api.create("u3", session_id="only-acme")
    ok(api.call("delete", {"user_id": "u3", "session_id": "only-acme", "request_id": "del-1"}))  # a receipt
    return apis


def records(path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()[1:-1]]


def test_stats_counts_by_tenant_and_for_one_tenant(tenant_app, three):
    whole = admin(tenant_app, "stats", "--json")
    assert whole.exit_code == 0, whole.output
    counts = json.loads(whole.stdout)
    assert counts["tenants"] == {name: {"sessions": 2, "active": 2, "users": 2} for name in ("acme", DEFAULT, "globex")}
    assert counts["sessions"]["total"] == 6 and counts["users"]["total"] == 6  # u1 of acme is not u1 of globex
    one = json.loads(admin(tenant_app, "stats", "--json", "--tenant", "acme").stdout)
    assert one["tenant"] == "acme" and one["sessions"]["total"] == 2 and one["users"]["total"] == 2
    assert one["documents"]["delete receipts"] == 1 and one["tenants"] == {
        "acme": {"sessions": 2, "active": 2, "users": 2}
    }
    text = admin(tenant_app, "stats").stdout
    assert "tenant acme: 2 sessions (2 active), 2 users\n" in text


def test_export_of_one_tenant_holds_its_records_with_the_plain_user_id_and_the_tenant(tenant_app, three, tmp_path):
    out = tmp_path / "acme.jsonl"
    done = admin(tenant_app, "export", "--tenant", "acme", "--out", str(out))
    assert done.exit_code == 0, done.output
    got = records(out)
    assert {(r["kind"], r["tenant"], r["user_id"]) for r in got} == {
        ("session", "acme", "u1"),
        ("session", "acme", "u2"),
        ("tombstone", "acme", "u1"),
        ("tombstone", "acme", "u2"),
        ("receipt", "acme", "u3"),
    }
    one = tmp_path / "one.jsonl"
    assert admin(tenant_app, "export", "--user", "u1", "--tenant", "globex", "--out", str(one)).exit_code == 0
    sessions = [r for r in records(one) if r["kind"] == "session"]
    assert [(r["tenant"], r["user_id"], json.loads(r["context"])) for r in sessions] == [
        ("globex", "u1", {"team": "globex"})
    ]


def test_a_command_about_one_user_needs_the_tenant_when_there_are_several(tenant_app, three, tmp_path):
    for args in (["wipe-user", "u1"], ["export", "--user", "u1", "--out", str(tmp_path / "x.jsonl")]):
        refused = admin(tenant_app, *args)
        assert refused.exit_code == 2, refused.output
        assert "several tenants are configured: give --tenant NAME (one of default, acme, globex)" in refused.output
    bad = admin(tenant_app, "stats", "--tenant", "Not A Name")
    assert bad.exit_code == 2 and "must be 1-32 characters of a-z 0-9 _ -" in bad.output


def test_wipe_user_erases_one_tenants_user_only(tenant_app, three):
    wiped = admin(tenant_app, "wipe-user", "u1", "--tenant", "acme")
    assert wiped.exit_code == 0, wiped.output
    assert wiped.stdout.startswith("removed 2 documents of user 'u1' of tenant 'acme' (sessions: 1, tombstones: 1,")
    ids = {"user_id": "u1", "session_id": "s1"}
    fail(three["acme"].call("get", ids), "SESSION_NOT_FOUND")
    for name in (DEFAULT, "globex"):
        assert ctx(ok(three[name].call("get", ids))) == {"team": name}
    assert ok(three["acme"].call("get", {"user_id": "u2", "session_id": "s2"}))


def test_an_export_imports_into_each_records_tenant_or_into_the_tenant_named(
    tenant_app, three, tmp_path, make_app, mongo_uri
):
    backup = tmp_path / "all.jsonl"
    assert admin(tenant_app, "export", "--out", str(backup)).exit_code == 0
    settings = tenant_app.extensions["database"].settings
    ids = {"user_id": "u1", "session_id": "s1"}
    with fresh_database(mongo_uri) as name:
        target = make_app(dataclasses.replace(settings, mongodb_db=name))
        imported = admin(target, "import", str(backup))
        assert imported.exit_code == 0, imported.output
        for tenant, token in BEARER.items():
            copy = TenantApi(target.test_client(), token)
            assert ctx(ok(copy.call("get", ids))) == {"team": tenant}
            history = ok(copy.call("history", ids))
            assert [m["content"] for m in history["messages"]] == [tenant]
    acme = tmp_path / "acme.jsonl"
    assert admin(tenant_app, "export", "--tenant", "acme", "--out", str(acme)).exit_code == 0
    with fresh_database(mongo_uri) as name:  # one tenant's data moved into another tenant
        target = make_app(dataclasses.replace(settings, mongodb_db=name))
        assert admin(target, "import", "--tenant", "globex", str(acme)).exit_code == 0
        assert ctx(ok(TenantApi(target.test_client(), BEARER["globex"]).call("get", ids))) == {"team": "acme"}
        fail(TenantApi(target.test_client(), BEARER["acme"]).call("get", ids), "SESSION_NOT_FOUND")


def test_user_hash_names_the_user_of_one_tenant_as_its_json_log_lines_do(tenant_app, three):
    from app import logs

    key = logs.hash_key(tenant_app.extensions["database"].settings)
    acme = admin(tenant_app, "user-hash", "u1", "--tenant", "acme")
    default = admin(tenant_app, "user-hash", "u1", "--tenant", DEFAULT)
    assert acme.exit_code == default.exit_code == 0, acme.output
    assert acme.stdout == logs.user_hash(key, "acme\x1fu1") + "\n" != default.stdout
    assert default.stdout == logs.user_hash(key, "u1") + "\n"  # the default tenant's hashes are those of before
    assert admin(tenant_app, "user-hash", "u1").exit_code == 2  # several tenants: which one?
