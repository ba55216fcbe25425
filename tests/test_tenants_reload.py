"""Tenants under a real gunicorn: a token rotated by editing TENANTS and `kill -HUP`, with requests in flight.

gunicorn's HUP starts new workers (which read the tenants the master accepted) and lets the old ones
finish what they are answering: no request is dropped. A file that does not parse is refused with
its reason in the log, and the service goes on with the tenants it had.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.servers import gunicorn_process, service_env
from tests.test_tenants import ACME, ACME_OLD, GLOBEX, TENANTS_YAML

pytestmark = pytest.mark.slow


def status(base: str, token: str, user: str = "u1") -> int:
    body = {"user_id": user}
    return requests.post(
        f"{base}/v1/session/list", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).status_code


def wait_until(condition, seconds: float = 45) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.2)


class Traffic:
    """Threads creating sessions with a token until stopped: half of them open a new connection for
    each request, the others keep theirs alive (an old worker closes it when it stops)."""

    def __init__(self, base: str, token: str, threads: int = 4) -> None:
        self.base, self.token = base, token
        self.answers: list[int | str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, n: int) -> None:
        i = 0
        client = requests.Session() if n % 2 else requests
        close = {} if n % 2 else {"Connection": "close"}
        while not self.stop.is_set():
            i += 1
            body = {"user_id": f"traffic-{n}", "session_id": f"s{i % 8}", "context": '{"n": 1}'}
            try:
                r = client.post(
                    f"{self.base}/v1/session/create",
                    json=body,
                    headers={"Authorization": f"Bearer {self.token}", **close},
                    timeout=30,
                )
                self.answers.append(
                    r.status_code if r.json()["error_code"] in ("", "SESSION_LIMIT_EXCEEDED") else r.text
                )
            except requests.RequestException as exc:
                self.answers.append(repr(exc))

    def finish(self) -> list[int | str]:
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.answers


def test_a_token_is_rotated_by_a_reload_without_dropping_a_request_and_a_broken_file_keeps_the_tenants(
    tmp_path, mongo_uri, db_name
):
    path = tmp_path / "tenants.yaml"
    path.write_text(TENANTS_YAML)
    log = tmp_path / "gunicorn.log"
    env = {
        **service_env(mongo_uri, db_name),
        "TENANTS": str(path),
        "VAR_DIR": str(tmp_path / "var"),
        "LOG_LEVEL": "info",
    }
    with gunicorn_process(env, workers=2, threads=4, log=log) as (base, master):
        assert status(base, ACME_OLD) == status(base, ACME) == status(base, GLOBEX) == 200  # both tokens, mid-rotation
        traffic = Traffic(base, ACME)
        time.sleep(1)
        path.write_text(TENANTS_YAML.replace(f"[{ACME_OLD}, {ACME}]", f"[{ACME}]"))  # the rotation's end
        master.send_signal(signal.SIGHUP)
        wait_until(lambda: status(base, ACME_OLD) == 401)
        time.sleep(1)
        answers = traffic.finish()
        assert len(answers) > 20 and set(answers) == {200}, [a for a in answers if a != 200][:5]
        assert status(base, ACME) == status(base, GLOBEX) == 200

        traffic = Traffic(base, ACME)
        path.write_text("- name: acme\n  tokens: [unclosed\n")
        master.send_signal(signal.SIGHUP)
        wait_until(lambda: "the workers keep the tenants of the last good file" in log.read_text())
        time.sleep(2)  # the new workers are up: they answer with the tenants of the last good file
        answers = traffic.finish()
        assert len(answers) > 10 and set(answers) == {200}, [a for a in answers if a != 200][:5]
        assert (status(base, ACME), status(base, GLOBEX), status(base, ACME_OLD)) == (200, 200, 401)
        assert master.poll() is None
    text = log.read_text()
    assert f"TENANTS ({path}): not valid YAML or JSON at line" in text


def test_gunicorn_refuses_to_start_with_a_bad_tenants_file_and_says_why(tmp_path, mongo_uri, db_name):
    path = tmp_path / "tenants.yaml"
    path.write_text("- name: acme\n  tokens: [x]\n- name: acme\n  tokens: [y]\n")
    log = tmp_path / "gunicorn.log"
    env = {**service_env(mongo_uri, db_name), "TENANTS": str(path), "VAR_DIR": str(tmp_path / "var")}
    with pytest.raises(RuntimeError, match="gunicorn exited"), gunicorn_process(env, log=log):
        pass
    assert f"configuration: TENANTS ({path}): tenant 'acme' is declared twice" in Path(log).read_text()
