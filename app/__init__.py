"""coze-session-node: the session store Coze workflows use as their memory."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from app.settings import Settings


def create_app(settings: Settings | None = None, clock: Callable[[], int] | None = None) -> Flask:
    """The application factory; `settings` defaults to the environment's."""
    from app import admin, api, logs
    from app.core import Limits
    from app.metrics import Metrics
    from app.storage.database import Database, epoch_ms
    from app.waiting import LockWaiting

    settings = settings or Settings.from_env()
    logs.configure(settings)
    app = Flask(__name__)
    app.url_map.merge_slashes = False  # "//v1/session/get" is not a path of this service: 404, never a redirect
    app.config.update(
        PROVIDE_AUTOMATIC_OPTIONS=False,  # OPTIONS is no method of this service: 405 JSON, not an empty 200
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        BODY_READ_TIMEOUT=settings.body_read_timeout,
        TENANTS=settings.tenants,
        AUTH_HEADER=settings.auth_header,
        PUBLIC_BASE_URL=settings.public_base_url,
        TRUST_PROXY_HEADERS=settings.trust_proxy_headers,
        ERROR_LANG=settings.error_lang,
        SETTINGS=settings,
        OPTION_DEFAULTS={t.name: {"timeout": t.timeout, "max_history": t.max_history} for t in settings.tenants.all},
        OPTION_MAXIMA={t.name: {"timeout": t.max_timeout, "max_history": t.max_history} for t in settings.tenants.all},
        CONTEXT_SCHEMA=settings.context_schema,
    )
    if settings.tenants.open:
        app.logger.warning("SERVICE_TOKEN is not set: requests are not authenticated (development only)")
    if settings.env == "production" and not settings.metrics_token:
        app.logger.warning("METRICS_TOKEN is not set: GET /metrics is open to anyone who can reach the service")
    database = Database(settings, clock or epoch_ms)
    limits = {t.name: Limits(t.max_context_bytes, settings.context_schema) for t in settings.tenants.all}
    max_sessions = {t.name: t.max_sessions for t in settings.tenants.all}
    metrics = Metrics(settings)
    app.extensions["database"] = database
    app.extensions["metrics"] = metrics
    app.extensions["request_log"] = logs.RequestLog(settings)
    app.extensions["sessions"] = api.make_service(
        database, limits, max_sessions, LockWaiting(settings.lock_waiters), metrics.event
    )
    if settings.events_enabled:  # started by gunicorn in each worker after the fork (gunicorn.conf.py)
        from app.events.sweeper import Sweeper
        from app.events.targets import target_for
        from app.storage.outbox import Outbox

        def outbox() -> Outbox:
            found = database.store().outbox
            assert found is not None  # events_enabled: the store has the process's outbox
            return found

        app.extensions["events"] = Sweeper(
            outbox, target_for(settings), database.clock, metrics, poll_ms=settings.webhook_poll_ms
        )
    app.register_blueprint(api.bp)
    api.register_error_handlers(app)
    app.cli.add_command(admin.cli)
    return app
