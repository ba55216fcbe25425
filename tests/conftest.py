"""Fixtures: a real MongoDB-compatible server over TCP, a fresh database per test, the app, a client.

With MONGODB_URI set the suite runs against that server (each test on its own database, dropped
afterwards); otherwise it starts a throw-away nx-27017 for the session.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from app import create_app
from app.settings import Settings
from app.storage.database import Database, epoch_ms
from scripts.embedded import free_port, start_embedded, stop_embedded
from tests.support import HISTORY_INLINE, TOKEN, Api, FakeClock, fresh_database
from tests.wire_faults import WireProxy


@pytest.fixture(scope="session")
def mongo_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    uri = os.environ.get("MONGODB_URI")
    if uri:
        yield uri
        return
    port = free_port()
    log_file = str(tmp_path_factory.mktemp("nx") / "nx.log")
    proc = start_embedded("memory", port, log_file)
    try:
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        stop_embedded(proc)


@pytest.fixture
def wire_proxy(mongo_uri: str) -> Iterator[WireProxy]:
    """A fault-injecting proxy in front of the test database (tests/wire_faults.py); its `.uri` to connect."""
    target = urlsplit(mongo_uri)
    with WireProxy((target.hostname, target.port or 27017)) as proxy:
        yield proxy


@pytest.fixture
def db_name(mongo_uri: str) -> Iterator[str]:
    with fresh_database(mongo_uri) as name:
        yield name


@pytest.fixture
def settings(mongo_uri: str, db_name: str) -> Settings:
    # A tiny inline history, so that the suite's histories of a few messages cross into archive chunks.
    return Settings(
        env="test", mongodb_uri=mongo_uri, mongodb_db=db_name, service_tokens=(TOKEN,), history_inline=HISTORY_INLINE
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def app(settings: Settings, clock: FakeClock):
    app = create_app(settings, clock)
    indexed(settings, settings)
    yield app
    app.extensions["database"].close()


@pytest.fixture
def make_app(settings: Settings, clock: FakeClock):
    """Build more apps (other settings, the real clock); each one's client is closed afterwards."""
    built = []

    def make(custom: Settings | None = None, custom_clock=clock):
        app = create_app(custom or settings, custom_clock)
        indexed(custom or settings, settings)
        built.append(app)
        return app

    yield make
    for app in built:
        app.extensions["database"].close()


@pytest.fixture
def api(app) -> Api:
    return Api(app.test_client())


@pytest.fixture
def collection(app):
    """The sessions collection itself, for checking what was (not) stored."""
    return app.extensions["database"].store().collections.read


def indexed(custom: Settings, base: Settings) -> None:
    """Build the indexes start-up builds, on the test server itself (an app may reach it through a proxy)."""
    database = Database(
        dataclasses.replace(base, mongodb_db=custom.mongodb_db, mongodb_collection=custom.mongodb_collection), epoch_ms
    )
    try:
        database.ensure_indexes()
    finally:
        database.close()
