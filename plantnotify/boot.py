"""One way to start a service, shared by ``plantnotify api``, ``worker`` and ``bridge``.

    settings -> logging -> wait for dependencies -> migrate -> run -> clean shutdown

- **Settings** come from the environment (plus the command's flags); a refused configuration
  is one log line naming the variable, exit 2.
- **Logging** is set up once, with the service's name on every line; **tracing** exports spans
  over OTLP/HTTP only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (``plantnotify.tracing``).
- **SIGTERM/SIGINT** set ``Boot.stop`` (the handler only flags it; a handler that logs can
  re-enter a half-written log line). A stop requested while still starting exits 0.
- **Dependencies** are polled every 0.5 s until each answers, all within one deadline of
  ``STARTUP_TIMEOUT_SECONDS``; the log says what is awaited and why it is not ready yet, and
  on time-out what to check (exit 1).
- **Migrations**: every service creates its database when missing and brings the schema to
  the newest migration (``plantnotify.db.session.migrate``: idempotent, and serialised by an
  advisory lock, so services starting together are safe). Compose's one-shot ``migrate``
  service still runs first; then this is a no-op.
- **Run**: the service's own ``main(boot)`` starts it, waits for ``boot.stop`` and stops it.

Exit codes, the same for every service:

====  =====================================================================================
0     stopped cleanly (SIGTERM/SIGINT), also when the stop came while starting
1     a dependency did not come up in time (PostgreSQL, RabbitMQ, the MQTT broker), or the
      service failed while running
2     the configuration is refused (a setting, a port that cannot be bound)
====  =====================================================================================
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url

from plantnotify.logs import get_logger, setup_logging
from plantnotify.settings import ConfigError, Settings, load_settings, normalize_database_url
from plantnotify.tracing import setup_tracing, shutdown_tracing

EXIT_OK = 0
EXIT_UNAVAILABLE = 1
EXIT_CONFIG = 2
POLL_SECONDS = 0.5

log = get_logger("plantnotify.boot")


class BootFailure(Exception):
    """Starting or running the service failed; the message is logged, the process exits with
    ``exit_code``."""

    def __init__(self, message: str, exit_code: int = EXIT_UNAVAILABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Dependency:
    """Something a service waits for: ``check`` answers None when ready, else why not (now)."""

    name: str
    check: Callable[[Settings], str | None]
    hint: str = ""


def _one_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0]}" if lines else type(inner).__name__


def _postgresql_ready(settings: Settings) -> str | None:
    """PostgreSQL answers (the database is created here when it does not exist yet)."""
    from plantnotify.db.session import ensure_database

    try:
        ensure_database(settings.database_url)
        return None
    except Exception as exc:  # connection refused, DNS, authentication... all mean "not yet"
        return _one_line(exc)


def _rabbitmq_ready(settings: Settings) -> str | None:
    import pika
    import pika.exceptions as pe

    params = pika.URLParameters(settings.rabbitmq_url)
    params.connection_attempts = 1
    params.socket_timeout = 2
    try:
        pika.BlockingConnection(params).close()
        return None
    except (pe.AMQPError, OSError) as exc:
        return f"{type(exc).__name__} {str(exc).strip()}".strip()


POSTGRESQL = Dependency(
    "PostgreSQL",
    _postgresql_ready,
    "start it (make services) or fix DATABASE_URL",
)
RABBITMQ = Dependency(
    "RabbitMQ",
    _rabbitmq_ready,
    "start it (make services) or fix RABBITMQ_URL",
)


@dataclass
class Boot:
    """What a service's ``main`` gets: its settings, the stop flag and the start-up deadline."""

    service: str
    settings: Settings
    deadline: float
    stop: threading.Event = field(default_factory=threading.Event)
    signals: list[str] = field(default_factory=list)

    def remaining(self) -> float:
        """Seconds left of the start-up deadline (at least 1, for a last try)."""
        return max(1.0, self.deadline - time.monotonic())

    def wait_for_stop(self, alive: Callable[[], bool] | None = None) -> None:
        """Block until SIGTERM/SIGINT; ``alive`` returning False is a failure (exit 1)."""
        while not self.stop.wait(1.0):
            if alive is not None and not alive():
                raise BootFailure(f"the {self.service} stopped unexpectedly")
        log.info(
            "received %s; shutting down", self.signals[0] if self.signals else "a stop request"
        )


def safe_url(url: str) -> str:
    return make_url(normalize_database_url(url)).render_as_string(hide_password=True)


def _wait(boot: Boot, dependency: Dependency) -> bool:
    """Poll until ready (True), the deadline (BootFailure) or a stop request (False)."""
    reason = dependency.check(boot.settings)
    if reason is None:
        return True
    log.info("waiting for %s: %s", dependency.name, reason)
    while not boot.stop.wait(POLL_SECONDS):
        reason = dependency.check(boot.settings)
        if reason is None:
            log.info("%s is up", dependency.name)
            return True
        if time.monotonic() > boot.deadline:
            hint = f"; {dependency.hint}" if dependency.hint else ""
            raise BootFailure(
                f"{dependency.name} did not come up within "
                f"{boot.settings.startup_timeout_seconds:g}s: {reason}{hint}"
            )
    return False


def _migrate(settings: Settings) -> None:
    from plantnotify.db.session import migrate

    migrate(settings.database_url)
    log.info("database schema is current", extra={"database": safe_url(settings.database_url)})


def run_service(
    service: str,
    main: Callable[[Boot], int | None],
    *,
    overrides: Mapping[str, Any] | None = None,
    dependencies: Sequence[Dependency] = (POSTGRESQL,),
    startup_timeout: float | None = None,
) -> int:
    """Start ``service`` the common way and return its exit code (see the module's table).

    ``main(boot)`` starts the service, waits (``boot.wait_for_stop()``) and stops it; it may
    raise ``BootFailure`` (logged, its exit code) or ``ConfigError`` (exit 2).
    """
    try:
        settings = load_settings(**dict(overrides or {}))
        if startup_timeout is not None:
            settings = settings.model_copy(update={"startup_timeout_seconds": startup_timeout})
    except (ConfigError, ValueError) as exc:
        setup_logging(None, service=service)
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    setup_logging(settings, service=service)
    if setup_tracing(service, settings.otel_exporter_otlp_endpoint):
        where = urlsplit(settings.otel_exporter_otlp_endpoint or "").netloc.rsplit("@", 1)[-1]
        log.info("exporting spans over OTLP/HTTP to %s", where)
    boot = Boot(service, settings, time.monotonic() + settings.startup_timeout_seconds)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        boot.signals.append(signal.Signals(signum).name)
        boot.stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for dependency in dependencies:
            if not _wait(boot, dependency):
                return EXIT_OK  # stopped while starting
        if POSTGRESQL in dependencies:
            _migrate(settings)
        if boot.stop.is_set():
            return EXIT_OK
        code = main(boot)
        return EXIT_OK if code is None else code
    except BootFailure as exc:
        log.error("%s", exc)
        return exc.exit_code
    except ConfigError as exc:
        log.error("configuration error: %s", exc)
        return EXIT_CONFIG
    finally:
        shutdown_tracing()  # the spans of the last moments are flushed, not lost
        for sig, handler in previous.items():
            signal.signal(sig, handler)
