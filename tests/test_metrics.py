"""GET /metrics: every worker's counts summed in one scrape, no id in any label, METRICS_TOKEN enforced.

The multi-worker figures come from the real gunicorn, started as `make run` starts it; the
counters for each kind of event from the app in this process (a registry of its own).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app import errors, spec
from app.core import LOCK_WAIT, Limits, Sessions
from app.waiting import LockWaiting
from tests.servers import gunicorn, service_env
from tests.support import AUTH, Api, fail, ok, open_store, run
from tests.wire_faults import CommandFailure, DropConnection, Rule, command_named

ALLOWED_LABELS = {
    "tool": {t.name for t in spec.TOOLS},
    "error_code": {*spec.ERRORS, "OK"},
    "operation": set(spec.OPERATIONS),
    "tenant": {"default", ""},  # the tests' tenants: the operator's names, or "" when no token opened one
}


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples(text).items() if n == name and set(labels.items()) <= set(ls))


def assert_only_spec_labels(text: str) -> None:
    """Every label is a tool, an error code, an operation or a bucket bound: never an id."""
    for (name, labels), _ in samples(text).items():
        for label, value in labels:
            if label == "le":
                assert re.fullmatch(r"[0-9.e+]+|\+Inf", value), (name, value)
            else:
                assert value in ALLOWED_LABELS[label], (name, label, value)


@pytest.mark.slow
def test_forty_requests_over_two_gunicorn_workers_are_counted_exactly_forty_in_one_scrape(tmp_path, mongo_uri, db_name):
    counts = tmp_path / "metrics"
    env = service_env(mongo_uri, db_name, PROMETHEUS_MULTIPROC_DIR=str(counts))
    counts.mkdir()
    (counts / "counter_1.db").write_bytes(b"left by an earlier run")  # start-up empties the directory
    with gunicorn(env, workers=2, threads=4) as base:
        deadline = time.monotonic() + 30
        while len(list(counts.glob("counter_*.db"))) < 2:  # each worker writes its file once its app is built
            assert time.monotonic() < deadline, "the second worker did not start"
            time.sleep(0.05)
        user = "metrics-user-7f3a"
        sid = requests.post(f"{base}/v1/session/create", json={"user_id": user}, headers=AUTH, timeout=30).json()
        sid = sid["session_id"]
        barrier = threading.Barrier(8)

        def one(i: int) -> int:
            if i < 8:
                barrier.wait(timeout=30)  # the first eight at once: both workers' threads are busy
            body = {"user_id": user, "session_id": sid}
            return requests.post(f"{base}/v1/session/get", json=body, headers=AUTH, timeout=30).status_code

        with ThreadPoolExecutor(8) as pool:  # no keep-alive: every request on a connection of its own
            assert set(pool.map(one, range(39))) == {200}
        text = requests.get(f"{base}/metrics", timeout=30).text
        per_worker = {
            f.name: sum(
                s.value
                for m in MultiProcessCollector.merge([str(f)])
                for s in m.samples
                if m.name == "session_requests"
            )
            for f in counts.glob("counter_*.db")
        }
    assert total(text, "session_requests_total") == 40
    assert total(text, "session_requests_total", tool="session_get", error_code="OK") == 39
    assert total(text, "session_request_duration_seconds_count") == 40
    assert total(text, "session_request_duration_seconds_bucket", le="+Inf") == 40
    assert 'session_request_duration_seconds_bucket{le="0.005",tenant="default",tool="session_get"}' in text
    assert len([n for n in per_worker.values() if n > 0]) == 2, per_worker  # both workers answered some
    assert_only_spec_labels(text)
    assert user not in text and sid not in text


def test_a_scrape_has_the_histogram_and_the_counters_and_no_user_or_session_id_in_any_label(api, app):
    for user in ("user-a@example.com", "用户乙"):
        sid = api.create(user, session_id="sess-secret-1")["session_id"]
        ok(api.call("append_messages", {"user_id": user, "session_id": sid, "role": "user", "content": "hi"}))
        fail(api.call("get", {"user_id": user, "session_id": "no-such-session"}), "SESSION_NOT_FOUND")
    text = app.test_client().get("/metrics").data.decode()
    assert "# TYPE session_request_duration_seconds histogram" in text
    for family in ("requests", "database_errors", "lock_conflicts", "lock_waits", "replays", "resumes"):
        assert f"# TYPE session_{family}_total counter" in text or f"# TYPE session_{family} counter" in text
    assert total(text, "session_requests_total", tool="session_get", error_code="SESSION_NOT_FOUND") == 2
    assert total(text, "session_database_errors_total", error_code="STORAGE_UNAVAILABLE") == 0  # there from the start
    assert_only_spec_labels(text)
    for secret in ("user-a@example.com", "用户乙", "sess-secret-1", "no-such-session"):
        assert secret not in text


def test_metrics_token_is_required_as_a_bearer_token_when_it_is_set(settings, make_app):
    open_app = make_app().test_client()
    assert open_app.get("/metrics").status_code == 200  # without METRICS_TOKEN the endpoint is open
    client = make_app(dataclasses.replace(settings, metrics_token="metrics-token-0123456789")).test_client()
    for headers in ({}, {"Authorization": "Bearer wrong"}, AUTH, {"Authorization": "metrics-token-0123456789"}):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.json["error_code"] == "UNAUTHORIZED" and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = client.get("/metrics", headers={"Authorization": "Bearer metrics-token-0123456789"})
    assert r.status_code == 200 and "session_requests_total" in r.data.decode()


def test_lock_conflicts_waits_replays_and_resumes_are_counted(api, app, clock):
    sid = api.create("u1", options={"timeout": 60, "auto_clean": False})["session_id"]
    ids = {"user_id": "u1", "session_id": sid}
    token = ok(api.call("lock", {**ids, "options": {"lease": 30}}))["lock_token"]
    fail(api.call("update", {**ids, "context": "{}"}), "SESSION_LOCKED")
    fail(api.call("update", {**ids, "context": "{}", "lock_token": "not-the-holder"}), "LOCK_NOT_HELD")
    fail(api.call("lock", {**ids, "options": {"wait": 1}}), "SESSION_LOCKED")  # waited a second, in vain
    ok(api.call("unlock", {**ids, "lock_token": token}))
    for _ in range(3):
        ok(api.call("append_messages", {**ids, "role": "user", "content": "x", "request_id": "turn-1"}))
    clock.advance(61)
    fail(api.call("get", ids), "SESSION_EXPIRED")
    assert ok(api.call("get", {**ids, "options": {"resume": True}}))["resumed"]
    text = app.test_client().get("/metrics").data.decode()
    assert total(text, "session_lock_conflicts_total", error_code="SESSION_LOCKED") == 2
    assert total(text, "session_lock_conflicts_total", error_code="LOCK_NOT_HELD") == 1
    assert total(text, "session_lock_waits_total") == 1
    assert total(text, "session_replays_total", operation="append_messages") == 2
    assert total(text, "session_resumes_total", operation="get") == 1
    assert total(text, "session_requests_total", tool="session_get", error_code="SESSION_EXPIRED") == 1


def test_database_errors_are_counted_by_code_and_a_business_error_is_not(wire_proxy, settings, make_app):
    proxy = wire_proxy
    through = dataclasses.replace(settings, mongodb_uri=proxy.uri, mongodb_server_selection_timeout_ms=1000)
    app = make_app(through)
    api = Api(app.test_client())
    sid = api.create("u1")["session_id"]
    proxy.inject(Rule(command_named("findAndModify"), DropConnection(), times=1))
    assert api.post("session_get", {"user_id": "u1", "session_id": sid})[0] == 503
    proxy.inject(Rule(command_named("findAndModify"), CommandFailure(2, "bad value"), times=1))
    assert api.post("session_get", {"user_id": "u1", "session_id": sid})[0] == 500
    fail(api.call("get", {"user_id": "u1", "session_id": "missing"}), "SESSION_NOT_FOUND")
    text = app.test_client().get("/metrics").data.decode()
    assert total(text, "session_database_errors_total", error_code="STORAGE_UNAVAILABLE") == 1
    assert total(text, "session_database_errors_total", error_code="INTERNAL") == 1
    assert total(text, "session_database_errors_total") == 2


def test_the_core_reports_a_lock_that_waits_once_through_its_events_hook(mongo_uri, db_name, clock):
    store, client = open_store(mongo_uri, db_name, clock)
    heard: list[str] = []
    try:
        core = Sessions(store, Limits(1 << 20), LockWaiting(1), events=heard.append)
        sid = ok(run(core, "create"))["session_id"]
        ok(run(core, "lock", session_id=sid))
        with pytest.raises(errors.SessionLocked):
            run(core, "lock", session_id=sid)
        assert heard == []  # no wait asked: refused at once
        with pytest.raises(errors.SessionLocked):
            run(core, "lock", session_id=sid, options={"wait": 1})
        assert heard == [LOCK_WAIT]  # one waiting call, however many times it tried
    finally:
        client.close()


def test_gunicorn_start_up_creates_and_empties_a_metrics_directory_per_instance(tmp_path, mongo_uri, db_name):
    var = tmp_path / "var"
    with gunicorn({**service_env(mongo_uri, db_name), "VAR_DIR": str(var), "PROMETHEUS_MULTIPROC_DIR": ""}) as base:
        port = urlsplit(base).port
        assert requests.get(f"{base}/metrics", timeout=30).status_code == 200
        files = list(Path(var / f"metrics-{port}").glob("*.db"))
        assert files, "each worker writes its counts under VAR_DIR"
    assert not Path(var / f"metrics-{port}").exists()  # and the exit removes them
