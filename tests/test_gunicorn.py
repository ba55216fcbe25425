"""The service as `make run` starts it: gunicorn, the embedded nx-27017, a generated dev token."""

from __future__ import annotations

import json

import pytest
import requests

from app import spec
from scripts.embedded import free_port
from tests.servers import gunicorn, service_env
from tests.support import check_response

pytestmark = pytest.mark.slow


def test_make_run_setup_starts_the_embedded_database_and_serves_the_spec_example(tmp_path):
    env = {
        "MONGODB_URI": "",
        "SERVICE_TOKEN": "",
        "APP_ENV": "development",
        "VAR_DIR": str(tmp_path / "var"),
        "EMBEDDED_DB_PORT": str(free_port()),
        "LOG_LEVEL": "info",
    }
    log = tmp_path / "gunicorn.log"
    with gunicorn(env, log=log) as base:
        token = (tmp_path / "var" / "dev-token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        body = {
            "operation": "create",
            "user_id": "user_123",
            "context": json.dumps({"language": "zh-CN", "timezone": "Asia/Shanghai"}),
        }
        r = requests.post(base + "/v1/session", json=body, headers=headers, timeout=10)
        assert r.status_code == 200
        check_response(spec.MANAGE_TOOL, r.json())
        assert r.json()["status"] == "active"
        assert requests.post(base + "/v1/session", json=body, timeout=10).status_code == 401
        assert requests.get(base + "/readyz", timeout=10).json() == {"status": "ready"}
    text = log.read_text()
    assert "embedded database: nx-27017" in text
    assert token in text  # printed for the developer
    assert (tmp_path / "var" / "sessions.db").exists()


def test_each_instance_keeps_its_own_control_socket_when_another_stops(tmp_path, mongo_uri):
    sockets = []
    with gunicorn({**service_env(mongo_uri, "test_ctl"), "VAR_DIR": str(tmp_path / "a")}) as first:
        sockets.append(tmp_path / "a" / f"gunicorn-{first.rsplit(':', 1)[1]}.ctl")
        with gunicorn({**service_env(mongo_uri, "test_ctl"), "VAR_DIR": str(tmp_path / "b")}) as second:
            sockets.append(tmp_path / "b" / f"gunicorn-{second.rsplit(':', 1)[1]}.ctl")
            assert all(s.is_socket() for s in sockets)
        assert sockets[0].is_socket()  # the other's exit left this one alone
        assert requests.get(first + "/healthz", timeout=10).status_code == 200


def test_the_service_does_not_start_when_its_indexes_cannot_be_built_and_says_why(tmp_path):
    env = {
        **service_env(f"mongodb://127.0.0.1:{free_port()}", "test_dead"),
        "MONGODB_SERVER_SELECTION_TIMEOUT_MS": "300",
        "VAR_DIR": str(tmp_path),
    }
    log = tmp_path / "gunicorn.log"
    with pytest.raises(RuntimeError, match="gunicorn exited"), gunicorn(env, log=log):
        pass
    text = log.read_text()
    assert "could not build the indexes of 127.0.0.1:" in text and "STORAGE_UNAVAILABLE" in text
