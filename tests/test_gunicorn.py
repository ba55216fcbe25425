"""The service as `make run` starts it: gunicorn, the embedded nx-27017, a generated dev token."""

from __future__ import annotations

import json

import pytest
import requests

from app import spec
from scripts.embedded import free_port
from tests.servers import gunicorn
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
