"""The HTTP edge: auth, status codes, size limit, health, unknown routes, database outages."""

from __future__ import annotations

import dataclasses
import json

from app import spec
from app.core import Sessions
from scripts.embedded import free_port
from tests.support import TOKEN, Api, check_response


def test_a_missing_or_wrong_token_gets_401_json_of_the_output_shape(app):
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN[:-1]}):
        r = client.post("/v1/session/get", json={"user_id": "u", "session_id": "s"}, headers=headers)
        assert r.status_code == 401
        check_response(spec.TOOLS_BY_NAME["session_get"], r.get_json())
        assert r.get_json()["error_code"] == "UNAUTHORIZED"


def test_the_token_is_accepted_bare_or_as_bearer(app):
    client = app.test_client()
    for value in (TOKEN, f"Bearer {TOKEN}", f"bearer {TOKEN}"):
        r = client.post("/v1/session/list", json={"user_id": "u"}, headers={"Authorization": value})
        assert r.status_code == 200, value


def test_rotated_tokens_are_all_accepted_and_a_custom_header_is_used(settings, make_app):
    app = make_app(dataclasses.replace(settings, service_tokens=("old-token", "new-token"), auth_header="X-Api-Key"))
    client = app.test_client()
    for token in ("old-token", "new-token"):
        assert client.post("/v1/session/list", json={"user_id": "u"}, headers={"X-Api-Key": token}).status_code == 200
    assert (
        client.post("/v1/session/list", json={"user_id": "u"}, headers={"Authorization": "new-token"}).status_code
        == 401
    )


def test_a_body_over_the_limit_gets_413_json(settings, make_app):
    app = make_app(dataclasses.replace(settings, max_body_bytes=2048))
    api = Api(app.test_client())
    status, body = api.post("session_create", None, raw=json.dumps({"user_id": "u", "context": "x" * 5000}).encode())
    assert status == 413
    assert body["error_code"] == "PAYLOAD_TOO_LARGE"


def test_business_errors_are_http_200_with_an_error_code(api):
    status, body = api.post("session_get", {"user_id": "u", "session_id": "missing"})
    assert (status, body["error_code"], body["status"]) == (200, "SESSION_NOT_FOUND", "")


def test_health_answers_without_the_database_and_readiness_with_it(app):
    client = app.test_client()
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def test_an_unreachable_database_answers_503_storage_unavailable_and_readiness_fails(settings, make_app):
    dead = dataclasses.replace(
        settings, mongodb_uri=f"mongodb://127.0.0.1:{free_port()}", mongodb_server_selection_timeout_ms=300
    )
    app = make_app(dead)
    api = Api(app.test_client())
    status, body = api.post("session_get", {"user_id": "u", "session_id": "s"})
    assert status == 503
    assert body["error_code"] == "STORAGE_UNAVAILABLE"
    assert "127.0.0.1" not in body["error"]
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["error_code"] == "STORAGE_UNAVAILABLE"


def test_an_unknown_path_or_method_gets_json_not_html(app):
    client = app.test_client()
    r = client.post("/v1/session/nope", json={}, headers={"Authorization": TOKEN})
    assert r.status_code == 404
    assert r.is_json and r.get_json()["error_code"] == "INVALID_ARGUMENT"
    r = client.get("/v1/session/get")
    assert r.status_code == 405 and r.is_json


def test_the_service_serves_its_openapi_document_with_the_public_url(settings, make_app):
    app = make_app(dataclasses.replace(settings, public_base_url="https://sessions.example.com"))
    doc = app.test_client().get("/openapi.json").get_json()
    assert doc["servers"] == [{"url": "https://sessions.example.com"}]
    assert set(doc["paths"]) == {t.path for t in spec.TOOLS}


def test_the_service_never_sets_cookies(api):
    r = api.client.post("/v1/session/create", json={"user_id": "u"}, headers={"Authorization": TOKEN})
    assert "Set-Cookie" not in r.headers


def test_an_unexpected_failure_is_a_500_without_details(app, monkeypatch):
    def boom(call):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Sessions, "execute", lambda self, call: boom(call))
    api = Api(app.test_client())
    status, body = api.post("session_get", {"user_id": "u", "session_id": "s"})
    assert status == 500
    assert body["error_code"] == "INTERNAL"
    assert "secret" not in json.dumps(body)
