"""Lifecycle events: recorded by the write that causes them, announced once, signed, retried, never lost.

A real receiver (tests/receiver.py, a threaded HTTP server on a free port) takes the events; the
sweeper's passes are run by the test on the fake clock (`sweep`), so hours of retries take no time.
The real-time loop, gunicorn, SIGKILL and two instances are in tests/test_events_live.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest

from app import events
from app.settings import Settings, SettingsError
from app.storage.database import events_collection
from tests.receiver import Receiver
from tests.support import ROOT, Api, fail, ok

SECRET = "whsec_test_0123456789abcdef"


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def event_settings(settings: Settings, receiver: Receiver, **more) -> Settings:
    more = {"webhook_poll_ms": 0, **more}  # the test runs the sweeper's passes itself (`sweep`)
    return dataclasses.replace(settings, webhook_url=receiver.url, webhook_secret=SECRET, **more)


@pytest.fixture
def events_app(make_app, settings, receiver):
    return make_app(event_settings(settings, receiver))


@pytest.fixture
def api(events_app) -> Api:
    return Api(events_app.test_client())


@pytest.fixture
def sessions(events_app):
    return events_app.extensions["database"].store().collections.read


@pytest.fixture
def deliveries(events_app, settings):
    store = events_app.extensions["database"].store()
    return store.outbox.deliveries.read


def sweep(app, times: int = 1) -> None:
    for _ in range(times):
        app.extensions["events"].run_once()


def call(api: Api, op: str, sid: str, user: str = "u1", **body) -> dict:
    return api.call(op, {"user_id": user, "session_id": sid, **body})


def recipe() -> str:
    """The receiver recipe of docs/events.md, exactly as printed there."""
    text = (ROOT / "docs" / "events.md").read_text()
    return re.search(r"<!-- recipe -->\n```python\n(.*?)```", text, re.S).group(1)


def verify_with_recipe(received) -> bool:
    scope: dict = {}
    exec(recipe(), scope)  # noqa: S102 - the documented code, run as a receiver would run it
    return scope["verify"](received.body.encode(), received.headers["X-Session-Signature"], SECRET)


# every event type, the body and the signature


def test_close_is_announced_signed_with_the_contract_body(api, events_app, receiver, clock):
    sid = api.create("u1", context='{"cart": ["apple"]}', options={"timeout": 600})["session_id"]
    ok(call(api, "append_messages", sid, role="user", content="hi"))
    closed = ok(call(api, "close", sid))
    assert receiver.received == []  # recorded by the close, sent by the sweeper
    sweep(events_app)
    [got] = receiver.received
    body = got.json
    assert list(body) == [
        "id",
        "type",
        "occurred_at",
        "tenant",
        "user_id",
        "session_id",
        "status",
        "version",
        "expires_at",
        "message_count",
        "context",
    ]
    assert body["type"] == "session.closed" and body["status"] == "closed"
    assert (body["tenant"], body["user_id"], body["session_id"]) == ("default", "u1", sid)
    assert (body["version"], body["message_count"], body["expires_at"]) == (
        closed["version"],
        1,
        closed["expires_at"],
    )
    assert json.loads(body["context"]) == {"cart": ["apple"]}
    assert body["id"].startswith("evt_") and got.headers["X-Session-Event-Id"] == body["id"]
    assert got.headers["Content-Type"] == "application/json"
    assert verify_with_recipe(got)
    assert events.verify(SECRET, got.headers["X-Session-Signature"], got.body, int(time.time()))
    tampered = dataclasses.replace(got, body=got.body.replace("apple", "pear"))
    assert not verify_with_recipe(tampered)
    sweep(events_app, 3)
    assert len(receiver.received) == 1  # delivered once


def test_the_recipe_refuses_an_old_signature_and_another_secret(receiver, api, events_app):
    sid = api.create("u1")["session_id"]
    ok(call(api, "close", sid))
    sweep(events_app)
    [got] = receiver.received
    scope: dict = {}
    exec(recipe(), scope)  # noqa: S102
    verify = scope["verify"]
    old = events.signature(SECRET, int(time.time()) - 600, got.body)
    assert not verify(got.body.encode(), old, SECRET)
    assert not verify(got.body.encode(), got.headers["X-Session-Signature"], "another-secret")
    assert verify(got.body.encode(), got.headers["X-Session-Signature"], SECRET)


def test_delete_is_announced_and_the_session_goes_with_its_event_moved(api, events_app, receiver, sessions):
    sid = api.create("u1", context='{"a": 1}')["session_id"]
    for i in range(5):  # into archive chunks (HISTORY_INLINE is 3 in the tests)
        ok(call(api, "append_messages", sid, role="user", content=f"m{i}"))
    ok(api.call("delete", {"user_id": "u1", "session_id": sid}))
    fail(call(api, "get", sid), "SESSION_NOT_FOUND")
    assert sessions.count_documents({"sid": sid, "k": {"$ne": "s"}}) == 0  # chunks and tombstone gone now
    sweep(events_app)
    [body] = receiver.delivered()
    assert (body["type"], body["status"], body["session_id"], body["message_count"]) == (
        "session.deleted",
        "deleted",
        sid,
        5,
    )
    assert json.loads(body["context"]) == {"a": 1}
    assert sessions.count_documents({"sid": sid}) == 0  # the session itself, once its event is stored


def test_a_session_re_created_under_a_deleted_id_before_the_sweep_keeps_the_delete_event(
    api, events_app, receiver, sessions
):
    api.create("u1", session_id="cart")
    ok(api.call("delete", {"user_id": "u1", "session_id": "cart"}))
    again = api.create("u1", session_id="cart", context='{"fresh": true}')
    assert again["created"] is True and again["context"] == '{"fresh":true}'
    sweep(events_app)
    assert [b["type"] for b in receiver.delivered()] == ["session.deleted"]
    assert ok(call(api, "get", "cart"))["status"] == "active"  # the sweep left the new one alone


def test_close_then_delete_before_the_sweep_announces_both(api, events_app, receiver):
    sid = api.create("u1")["session_id"]
    ok(call(api, "close", sid))
    ok(api.call("delete", {"user_id": "u1", "session_id": sid}))
    sweep(events_app)
    assert [b["type"] for b in receiver.delivered()] == ["session.closed", "session.deleted"]


def test_expiring_then_expired_once_each_on_the_clock(api, events_app, receiver, clock, sessions):
    sid = api.create("u1", options={"timeout": 900})["session_id"]
    created = ok(call(api, "get", sid))
    sweep(events_app)
    assert receiver.received == []
    clock.advance(599)  # 301 s before expiry: not yet
    ok(call(api, "get", sid))  # slides: the warning moves with the expiry
    clock.advance(599)
    sweep(events_app, 2)
    assert receiver.received == []
    clock.advance(1)  # exactly the lead (300 s) before the expiry
    sweep(events_app, 2)
    [warning] = receiver.delivered()
    assert (warning["type"], warning["status"], warning["version"]) == ("session.expiring", "active", 1)
    assert warning["expires_at"] > created["expires_at"]
    clock.advance(300)
    fail(call(api, "get", sid), "SESSION_EXPIRED")
    sweep(events_app, 3)
    kinds = [b["type"] for b in receiver.delivered()]
    assert kinds == ["session.expiring", "session.expired"]
    expired = receiver.delivered()[1]
    assert (expired["status"], expired["expires_at"], expired["occurred_at"]) == (
        "expired",
        warning["expires_at"],
        warning["expires_at"],
    )


def test_a_touch_after_the_warning_gives_a_new_expiry_its_own_events(api, events_app, receiver, clock):
    sid = api.create("u1", options={"timeout": 600})["session_id"]
    clock.advance(300)
    sweep(events_app)
    ok(call(api, "touch", sid))
    for _ in range(2):
        clock.advance(300)
        sweep(events_app, 2)
    kinds = [b["type"] for b in receiver.delivered()]
    assert kinds == ["session.expiring", "session.expiring", "session.expired"]
    assert len({b["id"] for b in receiver.delivered()}) == 3


def test_lead_zero_sends_no_warning_and_a_short_timeout_none_either(make_app, settings, receiver, clock):
    app = make_app(event_settings(settings, receiver, webhook_expiring_lead=0))
    api = Api(app.test_client())
    api.create("u1", options={"timeout": 900})
    clock.advance(900)
    sweep(app)
    assert [b["type"] for b in receiver.delivered()] == ["session.expired"]
    app2 = make_app(event_settings(settings, receiver))
    Api(app2.test_client()).create("u2", options={"timeout": 120})  # shorter than the 300 s lead
    clock.advance(120)
    sweep(app2)
    assert [b["type"] for b in receiver.delivered()] == ["session.expired", "session.expired"]


def test_without_context_when_told(make_app, settings, receiver):
    app = make_app(event_settings(settings, receiver, webhook_include_context=False))
    api = Api(app.test_client())
    sid = api.create("u1", context='{"secret": 1}')["session_id"]
    ok(call(api, "close", sid))
    sweep(app)
    [got] = receiver.received
    assert "context" not in got.json and "secret" not in got.body


# the purge waits for session.expired


def test_no_document_carries_a_purge_date_before_its_expiry_is_recorded(api, events_app, clock, sessions):
    sid = api.create("u1", options={"timeout": 120})["session_id"]
    for i in range(7):
        ok(call(api, "append_messages", sid, role="user", content=f"m{i}"))
    mine = {"sid": sid, "k": {"$in": ["s", "m"]}}
    assert sessions.count_documents(mine) >= 2  # the session and archive chunks
    assert sessions.count_documents({**mine, "pa": {"$exists": True}}) == 0
    clock.advance(3600)  # long expired, the sweeper not run: still no purge date
    fail(call(api, "get", sid), "SESSION_EXPIRED")
    assert sessions.count_documents({**mine, "pa": {"$exists": True}}) == 0
    sweep(events_app)
    assert sessions.count_documents({**mine, "pa": {"$exists": False}}) == 0  # recorded: purgeable, chunks too
    doc = sessions.find_one({"_id": f"{sid}@u1"})
    assert doc["pms"] == doc["exp"] + 120_000
    ok(call(api, "touch", sid))  # revived: the purge date of the last expiry goes
    assert sessions.count_documents({**mine, "pa": {"$exists": True}}) == 0
    clock.advance(120)
    sweep(events_app)
    assert sessions.count_documents({**mine, "pa": {"$exists": False}}) == 0


def test_a_create_that_replaces_an_expired_session_announces_it_first(api, events_app, receiver, clock):
    api.create("u1", session_id="cart", options={"timeout": 60})
    clock.advance(60)
    again = api.create("u1", session_id="cart")
    assert again["created"] is True
    sweep(events_app)
    assert [b["type"] for b in receiver.delivered()] == ["session.expired"]


# retries


def test_a_500_is_retried_with_the_same_id_after_a_pause(api, events_app, receiver, clock, deliveries):
    receiver.answers = [500, 503]
    sid = api.create("u1")["session_id"]
    ok(call(api, "close", sid))
    sweep(events_app)
    assert [r.status for r in receiver.received] == [500]
    sweep(events_app)  # the pause (1 s) has not passed on the clock
    assert len(receiver.received) == 1
    clock.advance(1)
    sweep(events_app)
    clock.advance(1)
    sweep(events_app)  # the second pause is 2 s
    assert [r.status for r in receiver.received] == [500, 503]
    clock.advance(1)
    sweep(events_app)
    assert [r.status for r in receiver.received] == [500, 503, 200]
    ids = {r.headers["X-Session-Event-Id"] for r in receiver.received}
    assert len(ids) == 1 and {r.body for r in receiver.received} == {receiver.received[0].body}
    assert deliveries.find_one({"_id": ids.pop()})["s"] == "delivered"


def test_a_receiver_down_for_hours_gets_every_event_when_back(api, events_app, receiver, clock):
    receiver.stop()
    sids = [api.create("u1")["session_id"] for _ in range(3)]
    for sid in sids:
        ok(call(api, "close", sid))
    pauses = []
    for _ in range(25):  # 1, 2, 4 ... 3600 s: about fourteen hours of the clock
        sweep(events_app)
        step = events.pause_s(len(pauses) + 1)
        pauses.append(step)
        clock.advance(step)
    assert pauses[:4] == [1, 2, 4, 8] and max(pauses) == 3600
    receiver.start()
    sweep(events_app)
    assert sorted(b["session_id"] for b in receiver.delivered()) == sorted(sids)


def test_dead_after_the_retry_window_then_redelivered_by_the_admin_cli(make_app, settings, receiver, clock, deliveries):
    app = make_app(event_settings(settings, receiver, webhook_retry_hours=1))
    api = Api(app.test_client())
    receiver.stop()
    sid = api.create("u1")["session_id"]
    ok(call(api, "close", sid))
    for _ in range(30):
        sweep(app)
        clock.advance(600)
    outbox = app.extensions["database"].store().outbox
    [dead] = list(outbox.deliveries.read.find({"s": "dead"}))
    assert dead["le"] == "ConnectionRefusedError" and dead["t"] == "session.closed"
    runner = app.test_cli_runner()
    listing = runner.invoke(args=["admin", "events"])
    assert listing.exit_code == 0, listing.output
    assert "dead: 1 (session.closed: 1)" in listing.output and dead["_id"] in listing.output
    assert "ConnectionRefusedError" in listing.output
    receiver.start()
    again = runner.invoke(args=["admin", "events", "--redeliver", dead["_id"]])
    assert again.exit_code == 0 and "1 dead event" in again.output, again.output
    sweep(app)
    assert [b["id"] for b in receiver.delivered()] == [dead["_id"]]
    assert runner.invoke(args=["admin", "events", "--redeliver", "evt_nope"]).exit_code == 1
    assert "dead: 0" in runner.invoke(args=["admin", "events"]).output


def test_admin_events_counts_pending_and_retrying_by_type_and_redelivers_all_dead(make_app, settings, receiver, clock):
    app = make_app(event_settings(settings, receiver, webhook_retry_hours=1))
    api = Api(app.test_client())
    receiver.answers = [500]
    a, b = api.create("u1")["session_id"], api.create("u1")["session_id"]
    ok(call(api, "close", a))
    sweep(app)  # a: tried once, failed
    ok(api.call("delete", {"user_id": "u1", "session_id": b}))
    app.extensions["database"].store().outbox.settle_now(f"{b}@u1", "u1", clock())
    out = app.test_cli_runner().invoke(args=["admin", "events", "--json"])
    counts = json.loads(out.output)
    assert counts["retrying"] == {"total": 1, "session.closed": 1}
    assert counts["pending"] == {"total": 1, "session.deleted": 1}
    receiver.stop()
    for _ in range(20):
        clock.advance(600)
        sweep(app)
    assert json.loads(app.test_cli_runner().invoke(args=["admin", "events", "--json"]).output)["dead"]["total"] == 2
    receiver.start()
    out = app.test_cli_runner().invoke(args=["admin", "events", "--all-dead"])
    assert "2 dead events" in out.output, out.output
    sweep(app)
    assert sorted(x["type"] for x in receiver.delivered()) == ["session.closed", "session.deleted"]


def test_admin_events_counts_lists_and_redelivers_one_tenants_events_only(
    make_app, settings, receiver, clock, tmp_path
):
    from tests.test_tenants import BEARER, TENANTS_YAML, TenantApi

    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    app = make_app(event_settings(settings, receiver, tenants_path=str(path), webhook_retry_hours=1))
    for name in ("acme", "globex", "globex"):
        api = TenantApi(app.test_client(), BEARER[name])
        ok(call(api, "close", api.create("u1")["session_id"]))

    def admin(*args: str) -> str:
        return app.test_cli_runner().invoke(args=["admin", "events", *args]).output

    receiver.stop()
    sweep(app)  # recorded, tried once, failed
    assert json.loads(admin("--json", "--tenant", "acme"))["retrying"] == {"total": 1, "session.closed": 1}
    assert json.loads(admin("--json", "--tenant", "globex"))["retrying"]["total"] == 2
    assert json.loads(admin("--json"))["retrying"]["total"] == 3
    for _ in range(20):
        clock.advance(600)
        sweep(app)
    listed = admin("--tenant", "globex")
    assert listed.count("of tenant globex") == 2 and "acme" not in listed, listed
    receiver.start()
    assert "1 dead event queued" in admin("--all-dead", "--tenant", "acme")
    sweep(app)
    assert [x["tenant"] for x in receiver.delivered()] == ["acme"]
    assert json.loads(admin("--json"))["dead"] == {"total": 2, "session.closed": 2}


# several sweepers, many sessions


def test_1000_sessions_expiring_within_a_minute_are_announced_once_by_two_sweepers(
    make_app, settings, receiver, clock, mongo_uri
):
    """On the fake clock: 1,000 expiries spread over one minute, two apps (two clients, as two
    instances) sweeping at once in threads; each session.expired arrives exactly once."""
    import threading

    one, two = (make_app(event_settings(settings, receiver, webhook_expiring_lead=0)) for _ in range(2))
    store = one.extensions["database"].store()
    from app.model import NewSession

    for i in range(1000):
        new = NewSession(f"u{i % 100}", f"s{i}", "{}", 60_000 + 60 * i, 1000, True)
        store.create(new, now=clock(), persist=False, caller_id=True)
    clock.advance(121)
    errors: list = []

    def run(app) -> None:
        try:
            for _ in range(6):
                sweep(app)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(app,)) for app in (one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    got = receiver.delivered()
    assert len(got) == 1000 and len({b["id"] for b in got}) == 1000
    assert {b["type"] for b in got} == {"session.expired"}
    assert sorted(b["session_id"] for b in got) == sorted(f"s{i}" for i in range(1000))


# the Coze workflow target


def test_coze_workflow_target_runs_the_workflow_with_the_event_as_parameters(make_app, settings, receiver, clock):
    coze = dataclasses.replace(
        settings,
        webhook_target="coze_workflow",
        coze_api_base=receiver.base,
        coze_api_token="pat_abc",
        coze_workflow_id="7412",
        webhook_poll_ms=0,
    )
    app = make_app(coze)
    api = Api(app.test_client())
    receiver.coze_code = 4000  # HTTP 200 with a Coze error code: a failure
    sid = api.create("u1", context='{"a": 1}')["session_id"]
    ok(call(api, "close", sid))
    sweep(app)
    receiver.coze_code = 0
    clock.advance(1)
    sweep(app)
    first, second = receiver.received
    assert first.path == second.path == "/v1/workflow/run"
    assert first.headers["Authorization"] == "Bearer pat_abc"
    request = second.json
    assert (request["workflow_id"], request["is_async"]) == ("7412", True)
    params = request["parameters"]
    assert (params["type"], params["session_id"], params["user_id"]) == ("session.closed", sid, "u1")
    assert json.loads(params["context"]) == {"a": 1}
    assert first.json == second.json
    store = app.extensions["database"].store()
    assert store.outbox.deliveries.read.find_one({"_id": params["id"]})["s"] == "delivered"


# without WEBHOOK_URL nothing changes


def test_without_events_the_writes_carry_no_event_field_and_no_sweeper_exists(app, collection):
    api = Api(app.test_client())  # the suite's app: no WEBHOOK_URL
    sid = api.create("u1", options={"timeout": 60})["session_id"]
    ok(api.call("close", {"user_id": "u1", "session_id": sid}))
    doc = collection.find_one({"_id": f"{sid}@u1"})
    assert not {"nd", "ei", "et", "eo", "ex"} & set(doc), doc
    assert "pa" in doc
    assert "events" not in app.extensions
    db = collection.database
    assert events_collection(app.extensions["database"].settings) not in db.list_collection_names()


# settings


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WEBHOOK_URL": "ftp://x/hook", "WEBHOOK_SECRET": "s"}, "WEBHOOK_URL"),
        ({"WEBHOOK_URL": "hook.example.com", "WEBHOOK_SECRET": "s"}, "WEBHOOK_URL"),
        ({"WEBHOOK_URL": "https://hook.example.com/x"}, "WEBHOOK_SECRET"),
        (
            {"WEBHOOK_URL": "https://h/x", "WEBHOOK_SECRET": "s", "WEBHOOK_EXPIRING_LEAD": "99999999"},
            "WEBHOOK_EXPIRING_LEAD",
        ),
        ({"WEBHOOK_URL": "https://h/x", "WEBHOOK_SECRET": "s", "WEBHOOK_EXPIRING_LEAD": "-1"}, "WEBHOOK_EXPIRING_LEAD"),
        ({"WEBHOOK_URL": "https://h/x", "WEBHOOK_SECRET": "s", "WEBHOOK_RETRY_HOURS": "0"}, "WEBHOOK_RETRY_HOURS"),
        (
            {"WEBHOOK_URL": "https://h/x", "WEBHOOK_SECRET": "s", "WEBHOOK_INCLUDE_CONTEXT": "maybe"},
            "WEBHOOK_INCLUDE_CONTEXT",
        ),
        ({"WEBHOOK_TARGET": "coze_workflow", "COZE_API_TOKEN": "t", "COZE_WORKFLOW_ID": "1"}, "COZE_API_BASE"),
        (
            {"WEBHOOK_TARGET": "coze_workflow", "COZE_API_BASE": "https://api.coze.com", "COZE_WORKFLOW_ID": "1"},
            "COZE_API_TOKEN",
        ),
        (
            {"WEBHOOK_TARGET": "coze_workflow", "COZE_API_BASE": "https://api.coze.com", "COZE_API_TOKEN": "t"},
            "COZE_WORKFLOW_ID",
        ),
        ({"WEBHOOK_TARGET": "slack"}, "WEBHOOK_TARGET"),
    ],
)
def test_bad_event_settings_are_refused_at_start_up_naming_the_setting(env, named):
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)


def test_good_event_settings_and_their_defaults():
    s = Settings.from_env({"WEBHOOK_URL": "https://hook.example.com/x", "WEBHOOK_SECRET": "s"})
    assert s.events_enabled and (s.webhook_expiring_lead, s.webhook_retry_hours, s.webhook_include_context) == (
        300,
        24,
        True,
    )
    assert not Settings.from_env({}).events_enabled
    coze = {"WEBHOOK_TARGET": "coze_workflow", "COZE_API_BASE": "https://api.coze.cn", "COZE_API_TOKEN": "t"}
    assert Settings.from_env({**coze, "COZE_WORKFLOW_ID": "1"}).events_enabled


def test_docs_name_every_setting():
    text = Path(ROOT / "docs" / "events.md").read_text()
    for name in (
        "WEBHOOK_URL",
        "WEBHOOK_SECRET",
        "WEBHOOK_EXPIRING_LEAD",
        "WEBHOOK_RETRY_HOURS",
        "WEBHOOK_INCLUDE_CONTEXT",
        "WEBHOOK_TARGET",
        "COZE_API_BASE",
        "COZE_API_TOKEN",
        "COZE_WORKFLOW_ID",
    ):
        assert name in text, name


# metrics and logs


def test_metrics_count_delivered_retried_and_pending_by_type_with_a_latency_histogram(api, events_app, receiver, clock):
    from prometheus_client.parser import text_string_to_metric_families

    receiver.answers = [500]
    sid = api.create("u1")["session_id"]
    ok(call(api, "close", sid))
    sweep(events_app)
    clock.advance(2)
    sweep(events_app)
    text = events_app.test_client().get("/metrics").data.decode()
    values = {
        (s.name, s.labels.get("type", ""), s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("tenant", "default") == "default"  # the one tenant without TENANTS
    }
    assert values[("session_events_delivered_total", "session.closed", "")] == 1
    assert values[("session_events_retried_total", "session.closed", "")] == 1
    assert values[("session_events_dead_total", "session.deleted", "")] == 0
    assert values[("session_events_pending", "session.expired", "")] == 0
    assert values[("session_event_delivery_seconds_count", "session.closed", "")] == 1
    assert values[("session_event_delivery_seconds_bucket", "session.closed", "2.5")] == 1
    assert values[("session_event_delivery_seconds_bucket", "session.closed", "1.0")] == 0


def test_json_logs_name_the_event_id_and_type_never_the_context(make_app, settings, receiver, caplog):
    import logging

    from app.logs import JsonFormatter

    app = make_app(event_settings(settings, receiver, log_format="json"))
    api = Api(app.test_client())
    receiver.answers = [503]
    sid = api.create("u1", context='{"secret_note": "do not log"}')["session_id"]
    ok(call(api, "close", sid))
    with caplog.at_level(logging.INFO, logger="app"):
        sweep(app)
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name.startswith("app.")]
    about = [line for line in lines if "event" in line]
    assert {line["type"] for line in about} == {"session.closed"}
    assert any(line.get("error") == "HTTP 503" and line["state"] == "retried" for line in about)
    assert all(line["event"].startswith("evt_") for line in about)
    text = "\n".join(json.dumps(line) for line in lines)
    assert "do not log" not in text and "secret_note" not in text and sid not in text


def test_each_tenants_events_name_their_tenant_in_the_body_the_metrics_and_the_logs(
    make_app, settings, receiver, tmp_path, caplog
):
    import logging

    from app.logs import JsonFormatter
    from tests.test_metrics import total
    from tests.test_tenants import BEARER, TENANTS_YAML, TenantApi

    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    app = make_app(event_settings(settings, receiver, tenants_path=str(path), log_format="json"))
    for name in ("default", "acme", "globex"):  # one user id and one session id in each tenant
        api = TenantApi(app.test_client(), BEARER[name])
        api.create("u1", session_id="cart")
        ok(call(api, "close", "cart"))
    with caplog.at_level(logging.INFO, logger="app"):
        sweep(app)
    bodies = sorted((got.json["tenant"], got.json["user_id"], got.json["session_id"]) for got in receiver.received)
    assert bodies == [("acme", "u1", "cart"), ("default", "u1", "cart"), ("globex", "u1", "cart")]
    text = app.test_client().get("/metrics").data.decode()
    for name in ("default", "acme", "globex"):
        assert total(text, "session_events_delivered_total", tenant=name, type="session.closed") == 1
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name.startswith("app.")]
    about = sorted((line["tenant"], line["state"]) for line in lines if "event" in line)
    assert about == [(name, state) for name in ("acme", "default", "globex") for state in ("delivered", "recorded")]


def test_start_up_builds_the_event_indexes(events_app, sessions, deliveries):
    events_app.extensions["database"].ensure_indexes()
    keys = [[k for k, _ in index["key"]] for index in sessions.index_information().values()]
    assert ["nd"] in keys and ["ei"] in keys
    keys = [[k for k, _ in index["key"]] for index in deliveries.index_information().values()]
    assert ["s", "due"] in keys and ["pa"] in keys


# no round trip added to a request


def _commands_of_each_operation(mongo_uri: str, db: str, clock, with_events: bool) -> dict[str, list[str]]:
    from pymongo import MongoClient

    from app.model import Close, Expect, NewSession, Slide
    from app.storage.database import build_indexes
    from app.storage.mongo import Collections
    from app.storage.outbox import Outbox
    from app.storage.store import SessionStore
    from tests.support import CommandLog

    log = CommandLog()
    client = MongoClient(mongo_uri, event_listeners=[log])  # the store's and the outbox's commands, all seen
    collections = Collections(client[db]["sessions"], 5000)
    outbox = None
    if with_events:
        outbox = Outbox(
            collections,
            Collections(client[db]["sessions_events"], 5000),
            lead_ms=300_000,
            include_context=True,
            retry_ms=3_600_000,
            purge_grace_ms=300_000,
            retention_ms=86_400_000,
        )
    store = SessionStore(collections, clock, outbox=outbox)
    build_indexes(collections)
    seen: dict[str, list[str]] = {}
    try:
        for sid in ("a", "b"):
            store.create(NewSession("u1", sid, "{}", 600_000, 100, True), now=clock(), persist=True, caller_id=False)
        for name, run_it in (
            (
                "get",
                lambda: store.apply(
                    "u1", "a", Slide(), Expect(writable=False, guarded=False), now=clock(), persist=False
                ),
            ),
            ("close", lambda: store.apply("u1", "a", Close(), Expect(), now=clock(), persist=True)),
            ("delete", lambda: store.delete("u1", "b", Expect(writable=False, live=False), now=clock(), persist=True)),
        ):
            log.clear()
            run_it()
            seen[name] = log.names
    finally:
        client.close()
    return seen


def test_close_and_delete_add_no_round_trip_and_a_read_none(mongo_uri, clock):
    from tests.support import fresh_database

    with fresh_database(mongo_uri) as off_db, fresh_database(mongo_uri) as on_db:
        off = _commands_of_each_operation(mongo_uri, off_db, clock, with_events=False)
        on = _commands_of_each_operation(mongo_uri, on_db, clock, with_events=True)
    assert on["get"] == off["get"] == ["findAndModify"]
    assert on["close"] == off["close"]
    assert len(on["delete"]) == len(off["delete"]) - 1  # the marked session is removed by the sweeper instead


def test_a_session_document_the_sweeper_cannot_read_holds_back_no_other_event(api, events_app, receiver, sessions):
    broken = api.create("u1")["session_id"]
    ok(call(api, "close", broken))
    sessions.update_one({"_id": f"{broken}@u1"}, {"$unset": {"v": ""}})  # say, written by a buggy tool
    good = api.create("u1")["session_id"]
    ok(call(api, "close", good))
    sweep(events_app)
    assert [b["session_id"] for b in receiver.delivered()] == [good]


def test_a_redirect_is_not_delivery(api, events_app, receiver, clock, deliveries):
    receiver.answers = [302]
    sid = api.create("u1")["session_id"]
    ok(call(api, "close", sid))
    sweep(events_app)
    [first] = receiver.received
    assert deliveries.find_one({"_id": first.json["id"]})["le"] == "HTTP 302"
    clock.advance(1)
    sweep(events_app)
    assert [r.status for r in receiver.received] == [302, 200]


def test_an_event_of_a_tenant_carries_the_plain_user_id(events_app, receiver, clock):
    from app.model import Close, Expect, NewSession
    from app.tenants import user_key

    store = events_app.extensions["database"].store()
    stored_user = user_key("acme", "u1")
    store.create(NewSession(stored_user, "cart", "{}", 600_000, 100, True), now=clock(), persist=True, caller_id=True)
    store.apply(stored_user, "cart", Close(), Expect(), now=clock(), persist=True)
    sweep(events_app)
    [body] = receiver.delivered()
    assert (body["user_id"], body["session_id"]) == ("u1", "cart")
