"""The container image, run with podman as an operator would: `make test-image` builds it and runs this file.

Not part of `make test` (the name is not test_*.py, so pytest collects it only when named; it needs
podman and the image `coze-session-node:dev`, or IMAGE). Each check starts real containers, publishes
them on free ports of 127.0.0.1, talks to them over HTTP with the tests' schema-checking client, and
removes them and their volumes after. podman reads var/podman/containers.conf (written by
scripts/container.sh) when CONTAINERS_CONF is not set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pymongo import MongoClient

from scripts.embedded import free_port
from tests.servers import ToolClient
from tests.support import ROOT, TOKEN

pytestmark = pytest.mark.image

IMAGE = os.environ.get("IMAGE", "coze-session-node:dev")
CONF = ROOT / "var" / "podman" / "containers.conf"
VAR = "/var/lib/coze-session"
UID = "10001"
HEALTHY_WITHIN = 10.0
# the public CA lists in the image: Debian's, and pip's copy of Mozilla's
PUBLIC_BUNDLES = "/etc/ssl/certs/ca-certificates.crt /opt/venv/lib/python3*/site-packages/pip/_vendor/certifi/*.pem"


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if CONF.exists():
        env.setdefault("CONTAINERS_CONF", str(CONF))
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited with {done.returncode}: {done.stderr[-2000:]}")
    return done


class Containers:
    """Starts containers and volumes with unique names; removes them all at the end of the test."""

    def __init__(self) -> None:
        self.prefix = f"coze-image-check-{uuid.uuid4().hex[:8]}"
        self.names: list[str] = []
        self.volumes: list[str] = []

    def volume(self) -> str:
        name = f"{self.prefix}-v{len(self.volumes)}"
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def volume_path(self, volume: str) -> Path:
        return Path(podman("volume", "inspect", "--format", "{{.Mountpoint}}", volume).stdout.strip())

    def run(self, *options: str, env: dict[str, str] | None = None, command: tuple[str, ...] = ()) -> str:
        name = f"{self.prefix}-c{len(self.names)}"
        self.names.append(name)
        env_args = [a for key, value in (env or {}).items() for a in ("-e", f"{key}={value}")]
        podman("run", "-d", "--name", name, *env_args, *options, IMAGE, *command)
        return name

    def logs(self, name: str) -> str:
        done = podman("logs", name, check=False)
        return done.stdout + done.stderr

    def wait_healthy(self, name: str, within: float = 30.0) -> float:
        """Seconds until the image's own HEALTHCHECK (GET /readyz) passes; fails past `within`."""
        start = time.monotonic()
        while podman("healthcheck", "run", name, check=False).returncode != 0:
            state = podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip()
            assert state == "running", f"{name} is {state}:\n{self.logs(name)[-3000:]}"
            assert time.monotonic() - start < within, f"{name} not healthy in {within} s:\n{self.logs(name)[-3000:]}"
            time.sleep(0.2)
        return time.monotonic() - start

    def remove_all(self) -> None:
        for name in reversed(self.names):  # a container sharing another's network goes first
            podman("rm", "-f", "-v", "-t", "0", name, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "-f", volume, check=False)
        left = podman("ps", "-a", "--filter", f"name={self.prefix}", "--format", "{{.Names}}").stdout.split()
        assert not left, f"containers left behind: {left}"


@pytest.fixture
def containers() -> Iterator[Containers]:
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"no image {IMAGE}: run `make test-image` (or `make image`) first")
    made = Containers()
    try:
        yield made
    finally:
        made.remove_all()


def published(port: int, inside: int = 8080) -> tuple[str, str]:
    return "-p", f"127.0.0.1:{port}:{inside}"


def service(
    containers: Containers, volume: str | None = None, options: tuple[str, ...] = (), **env: str
) -> tuple[str, ToolClient]:
    """The image with the embedded database (the tests' token; a volume if given), healthy, and a client."""
    port = free_port()
    options = (*options, *published(port), *(["-v", f"{volume}:{VAR}"] if volume else []))
    name = containers.run(*options, env={"SERVICE_TOKEN": TOKEN, **env})
    containers.wait_healthy(name)
    return name, ToolClient(f"http://127.0.0.1:{port}")


def history(client: ToolClient, user: str, sid: str) -> list[dict]:
    return client.ok("history", {"user_id": user, "session_id": sid, "options": {"limit": 1000}})["messages"]


def test_healthy_within_10_s_and_the_tools_answer_through_the_published_port(containers):
    port = free_port()
    name = containers.run(*published(port), env={"SERVICE_TOKEN": TOKEN})
    took = containers.wait_healthy(name, within=HEALTHY_WITHIN)
    print(f"healthy {took:.1f} s after `podman run`")
    client = ToolClient(f"http://127.0.0.1:{port}")
    assert requests.get(client.base + "/healthz", timeout=10).json() == {"status": "ok"}
    created = client.ok("create", {"user_id": "alice", "context": json.dumps({"lang": "en"})})
    sid = created["session_id"]
    appended = client.ok(
        "append_messages",
        {"user_id": "alice", "session_id": sid, "messages": [{"role": "user", "content": "hello"}]},
    )
    assert appended["message_count"] == 1
    got = client.ok("get", {"user_id": "alice", "session_id": sid})
    assert (got["message_count"], json.loads(got["context"])) == (1, {"lang": "en"})
    assert [m["content"] for m in history(client, "alice", sid)] == ["hello"]
    assert requests.post(client.base + "/v1/session/get", json={"user_id": "alice"}, timeout=10).status_code == 401
    stats = podman("exec", name, "session-admin", "stats").stdout  # the admin command, on the running database
    assert "sessions: 1 (1 active" in stats, stats


def test_every_process_runs_as_the_non_root_user_and_writes_only_its_volume_and_tmp(containers):
    assert podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip() == f"{UID}:{UID}"
    # a read-only root file system, as Kubernetes' readOnlyRootFilesystem: the volume and /tmp are all it has
    name, client = service(
        containers, containers.volume(), ("--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp")
    )
    client.ok("create", {"user_id": "erin"})
    processes = podman("top", name, "user", "args").stdout.strip().splitlines()[1:]
    assert any("gunicorn" in p for p in processes) and any("nx_server" in p for p in processes), processes
    assert all(p.split()[0] == "coze" for p in processes), processes
    assert podman("exec", name, "id", "-u").stdout.strip() == UID
    assert podman("exec", name, "touch", "/app/app/written", check=False).returncode != 0


def build_ca_bundle() -> Path:
    """The CA certificates scripts/container.sh lent the build, by the same rule."""
    for name in ("CA_BUNDLE", "PIP_CERT", "SSL_CERT_FILE"):
        if os.environ.get(name):
            return Path(os.environ[name])
    return Path("/etc/ssl/certs/ca-certificates.crt")


def certificates(pem: str) -> set[str]:
    return set(re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", pem, re.S))


def test_the_image_holds_the_runtime_only(containers):
    script = (
        "import importlib.metadata as m, json, os; "
        "print(json.dumps({'packages': sorted(d.metadata['Name'].lower() for d in m.distributions()), "
        "'app': sorted(set(os.listdir('/app')) - {'__pycache__'}), 'scripts': sorted(os.listdir('/app/scripts'))}))"
    )
    found = json.loads(podman("run", "--rm", "--entrypoint", "python3", IMAGE, "-c", script).stdout)
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    }
    installed = {p.replace("_", "-") for p in found["packages"]} - {"pip", "setuptools"}
    assert installed == pinned  # nothing for tests, lint or tooling
    assert found["app"] == ["app", "gunicorn.conf.py", "requirements.txt", "scripts"]  # no .git, .venv, var, tests
    assert "bench.py" not in found["scripts"] and "embedded.py" in found["scripts"]


def test_the_builds_ca_certificates_are_not_in_the_image(containers):
    bundle = build_ca_bundle()
    if not bundle.is_file():
        pytest.skip(f"no CA bundle at {bundle}: the build had none to lend")
    # what public CA lists hold (Debian's on this host, and the image's own copies of Debian's and
    # pip's) is no secret of the build; what is left is this host's own, say a proxy's CA
    public = podman("run", "--rm", "--entrypoint", "sh", IMAGE, "-c", f"cat {PUBLIC_BUNDLES}").stdout
    public += "".join(p.read_text() for p in Path("/usr/share/ca-certificates").rglob("*.crt"))
    extra = certificates(bundle.read_text()) - certificates(public)
    # a line of each certificate's signature: its own, and in any file that holds the certificate
    markers = [pem.splitlines()[-3] for pem in extra]
    args = [a for m in markers for a in ("-e", m)]
    excluded = [f"--exclude-dir={d}" for d in ("proc", "sys", "dev", "run")]
    grep = podman(
        "run", "--rm", "--user", "0", "--entrypoint", "grep", IMAGE, "-rlF", *args, *excluded, "/", check=False
    )
    print(f"{len(extra)} certificates of {bundle} are this host's own; files of the image holding one: {grep.stdout!r}")
    assert not extra or grep.returncode == 1, grep.stdout + grep.stderr
    assert podman("run", "--rm", "--entrypoint", "ls", IMAGE, "/run/secrets", check=False).stdout.strip() == ""


def test_a_podman_stop_is_graceful_and_keeps_every_acknowledged_write(containers):
    volume = containers.volume()
    name, client = service(containers, volume)
    sid = client.ok("create", {"user_id": "bob", "options": {"max_history": 1000}})["session_id"]
    acknowledged: list[str] = []
    stop = threading.Event()

    def write(writer: int) -> None:
        for i in range(1000):
            if stop.is_set():
                return
            content = f"w{writer}-{i}"
            body = {"user_id": "bob", "session_id": sid, "request_id": content, "content": content, "role": "user"}
            try:
                status, answer, _ = client.call("append_messages", body)
            except (requests.RequestException, ValueError):
                return  # the server went away mid-call: not acknowledged
            if status != 200 or answer["error_code"]:
                return
            acknowledged.append(content)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    time.sleep(1.5)  # appends in flight when the stop comes
    started = time.monotonic()
    podman("stop", "-t", "30", name)
    took = time.monotonic() - started
    stop.set()
    for t in writers:
        t.join()
    print(f"podman stop took {took:.1f} s; {len(acknowledged)} appends acknowledged")
    assert len(acknowledged) >= 20
    assert podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
    assert took < 10, "gunicorn and the embedded database should stop well inside podman's 10 s"
    logs = containers.logs(name)
    assert "Handling signal: term" in logs and "embedded database stopped" in logs, logs[-3000:]
    data = containers.volume_path(volume)
    assert (data / "sessions.db").exists()
    assert not (data / "nx.pid").exists()  # nx-27017 removes it only when it exits on its SIGTERM handler

    podman("start", name)
    containers.wait_healthy(name)
    contents = [m["content"] for m in history(client, "bob", sid)]
    assert set(acknowledged) <= set(contents)
    assert len(contents) == len(set(contents))  # each retried request_id applied once

    podman("stop", "-t", "30", name)  # an upgrade: a new container on the same volume
    podman("rm", name)
    _, again = service(containers, volume)
    assert [m["content"] for m in history(again, "bob", sid)] == contents


def test_a_killed_container_starts_again_on_its_volume(containers):
    volume = containers.volume()
    name, client = service(containers, volume)
    sid = client.ok("create", {"user_id": "carol"})["session_id"]
    client.ok("append_messages", {"user_id": "carol", "session_id": sid, "role": "user", "content": "kept"})
    podman("kill", "-s", "KILL", name)
    podman("wait", name, check=False)
    pid_file = containers.volume_path(volume) / "nx.pid"
    assert pid_file.exists()  # left behind by the kill
    pid_file.write_text("1")  # what pids repeating across starts make likely: a live process, not the database
    podman("start", name)
    containers.wait_healthy(name)
    assert [m["content"] for m in history(client, "carol", sid)] == ["kept"]


def test_mongodb_uri_switches_it_to_an_external_server_shared_by_two_replicas(containers):
    # the external server: nx-27017 from the same image in its own container; the replicas join its
    # network namespace (podman's --network container:), so the ports are published on it
    db_port, first_port, second_port = free_port(), free_port(), free_port()
    db = containers.run(
        *published(db_port, 27017),
        *published(first_port, 8080),
        *published(second_port, 8081),
        "--entrypoint",
        "python3",
        command=("-m", "scripts.nx_server", "--db", f"{VAR}/external.db", "--host", "0.0.0.0", "-p", "27017")
        + ("--log-file", f"{VAR}/external.log", "--pid-file", f"{VAR}/external.pid"),
    )
    external = {"APP_ENV": "production", "SERVICE_TOKEN": TOKEN, "MONGODB_URI": "mongodb://127.0.0.1:27017"}
    first = containers.run("--network", f"container:{db}", env=external)
    second = containers.run("--network", f"container:{db}", env={**external, "PORT": "8081"})
    for name in (first, second):
        containers.wait_healthy(name)
    one, two = ToolClient(f"http://127.0.0.1:{first_port}"), ToolClient(f"http://127.0.0.1:{second_port}")
    sid = one.ok("create", {"user_id": "dave", "context": json.dumps({"via": "first"})})["session_id"]
    two.ok("append_messages", {"user_id": "dave", "session_id": sid, "role": "user", "content": "via second"})
    assert [m["content"] for m in history(one, "dave", sid)] == ["via second"]
    with MongoClient("127.0.0.1", db_port, serverSelectionTimeoutMS=5000) as client:
        assert client.coze_sessions.sessions.find_one({"_id": f"{sid}@dave"}) is not None
    for name in (first, second):
        assert "embedded database" not in containers.logs(name)
        assert "nx_server" not in podman("top", name, "args").stdout


def test_production_mode_refuses_to_start_without_service_token(containers):
    env = {"APP_ENV": "production", "MONGODB_URI": "mongodb://127.0.0.1:27017"}
    name = containers.run(env=env)
    with contextlib.suppress(subprocess.TimeoutExpired):
        podman("wait", name, check=False, timeout=60)
    state = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name).stdout.split()
    assert state[0] == "exited" and state[1] != "0", state
    assert "APP_ENV=production needs SERVICE_TOKEN" in containers.logs(name)
