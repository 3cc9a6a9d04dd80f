"""``create_app(settings)``: the FastAPI application of contract §3.

Routes live under ``/api/v1`` (one router per resource in ``api/routes``); ``/healthz``,
``/readyz`` and ``/metrics`` are at the root (and under ``/api/v1`` too); the web app is at
``/``. Settings reach routes through ``app.state.ctx`` (``api.deps``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.orm import Session, sessionmaker

from api import accounts, ratelimit
from api.body_limit import BodyLimitMiddleware
from api.errors import install_error_handlers
from api.input_guard import InputGuardMiddleware
from api.metrics import ApiMetrics
from api.middleware import REQUEST_ID_HEADER, RequestContextMiddleware
from api.openapi import MethodGuardMiddleware, install_openapi
from api.requeue import REQUEUE_INTERVAL_SECONDS, requeue_unqueued
from api.revocation_feed import RevocationFeed
from api.routes import api_router, health
from api.routes.analyses import NEXT_BEFORE_HEADER
from api.routes.notifications import HAS_MORE_HEADER, NEXT_SINCE_HEADER
from api.security_headers import DOCS_PATH, SecurityHeadersMiddleware
from api.session_cap import SessionCap
from api.state import AppState
from api.tokens import AccessTokens
from api.web import mount_web
from plantnotify.amqp.errors import QueueUnavailable
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.contracts.urls import API_PREFIX
from plantnotify.db.session import make_engine, session_factory
from plantnotify.logs import get_logger
from plantnotify.settings import Settings, load_settings
from plantnotify.timeline import purge_older_than

RETENTION_INTERVAL_SECONDS = 3600.0
log = get_logger("plantnotify.api")
PUBLISHER_HEARTBEAT_SECONDS = 5.0  # well inside the 15 s AMQP heartbeat


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    tokens = AccessTokens(settings)  # refuses a broken identity-provider configuration
    settings.mqtt_signer  # noqa: B018 (same for the MQTT signing key, before serving)
    engine = make_engine(settings.database_url)
    state = AppState(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        publisher=JobPublisher(settings.rabbitmq_url, app_id="plantnotify-api"),
        tokens=tokens,
        metrics=ApiMetrics(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(_publisher_keepalive(state.publisher)),
            asyncio.create_task(_requeue_loop(state)),
            asyncio.create_task(_retention_loop(state)),
            asyncio.create_task(_housekeeping_loop(state)),
        ]
        # Both engines: the plugin (Mosquitto) or the auth callouts (NATS) take the lines.
        feed: RevocationFeed | None = RevocationFeed(
            settings, state.sessions, state.revocation_wakeup
        ).start()
        # Both engines: the plugin (Mosquitto) or the auth callouts (NATS) send the notices.
        cap: SessionCap | None = SessionCap(settings, state.sessions).start()
        try:
            yield
        finally:
            if cap is not None:
                await run_in_threadpool(cap.stop)
            if feed is not None:
                await run_in_threadpool(feed.stop)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await run_in_threadpool(state.publisher.close)
            engine.dispose()

    app = FastAPI(
        title="plantnotify API",
        version="1",
        summary="Plant analyses with realtime (MQTT) and push (FCM) notifications.",
        lifespan=lifespan,
        openapi_url=f"{API_PREFIX}/openapi.json",
        # Swagger UI loads its assets from a CDN: a development aid, off in production.
        docs_url=None if settings.environment == "production" else DOCS_PATH,
        redoc_url=None,
    )
    app.state.ctx = state
    install_error_handlers(app)
    install_openapi(app)
    origins = settings.cors_origin_list
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials=False,  # bearer tokens, no cookies
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[
                REQUEST_ID_HEADER,
                NEXT_BEFORE_HEADER,
                NEXT_SINCE_HEADER,
                HAS_MORE_HEADER,
                "Location",
                "Retry-After",
            ],
            max_age=600,
        )
    app.add_middleware(BodyLimitMiddleware, exempt={f"{API_PREFIX}/plantanalyses/async"})
    app.add_middleware(MethodGuardMiddleware, fastapi_app=app)
    app.add_middleware(InputGuardMiddleware)
    app.add_middleware(SecurityHeadersMiddleware, settings=settings)
    app.add_middleware(RequestContextMiddleware, metrics=state.metrics)
    app.include_router(api_router, prefix=API_PREFIX)
    app.include_router(health.router)
    app.include_router(health.router, prefix=API_PREFIX)
    mount_web(app, settings.web_dist_dir)
    return app


async def _requeue_loop(state: AppState) -> None:
    """Publish jobs of uploads whose API process died before RabbitMQ confirmed them."""
    while True:
        await asyncio.sleep(REQUEUE_INTERVAL_SECONDS)
        try:
            count = await run_in_threadpool(requeue_unqueued, state.sessions, state.publisher)
        except QueueUnavailable as exc:
            log.info("requeue sweep postponed: %s", exc)
            continue
        except Exception:  # the sweep must outlive a database hiccup; the next run retries
            log.exception("requeue sweep failed")
            continue
        if count:
            state.metrics.requeued.inc(count)


async def _retention_loop(state: AppState) -> None:
    """Drop delivery-timeline records older than TRACE_RETENTION_DAYS (every API replica may;
    the delete is idempotent)."""
    days = state.settings.trace_retention_days
    while True:
        try:
            await run_in_threadpool(_purge_timeline, state.sessions, days)
        except Exception:  # a database hiccup: the next run retries
            log.exception("timeline retention sweep failed")
        await asyncio.sleep(RETENTION_INTERVAL_SECONDS)


def _purge_timeline(sessions: sessionmaker[Session], days: int) -> None:
    with sessions() as session, session.begin():
        purged = purge_older_than(session, days)
    if purged:
        log.info("dropped %d delivery-timeline records older than %d days", purged, days)


HOUSEKEEPING_INTERVAL_SECONDS = 300.0


def _housekeeping(state: AppState) -> None:
    with state.sessions() as db:
        accounts.purge_expired(db)
        ratelimit.purge(db)
        db.commit()


async def _housekeeping_loop(state: AppState) -> None:
    """Forget ended login sessions, expired revocations and rate-limit windows."""
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL_SECONDS)
        try:
            await run_in_threadpool(_housekeeping, state)
        except Exception:  # a database hiccup: the next run retries
            log.exception("housekeeping failed")


async def _publisher_keepalive(publisher: JobPublisher) -> None:
    """Connect early (best effort) and keep the idle connection's heartbeats flowing."""
    try:
        await run_in_threadpool(publisher.connect)
    except QueueUnavailable as exc:
        log.warning("RabbitMQ not reachable yet (uploads answer 503 until it is): %s", exc)
    while True:
        await asyncio.sleep(PUBLISHER_HEARTBEAT_SECONDS)
        await run_in_threadpool(publisher.heartbeat)
