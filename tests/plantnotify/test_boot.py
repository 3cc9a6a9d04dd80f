"""The one start-up routine of api, worker and bridge: the same exit codes, the same bounded
wait, a stop while starting is a clean exit, and the database is created and migrated."""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, inspect
from sqlalchemy.engine import make_url

from plantnotify.boot import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    POSTGRESQL,
    Boot,
    BootFailure,
    Dependency,
    run_service,
)
from plantnotify.db.session import drop_database
from plantnotify.settings import ConfigError, Settings


@pytest.fixture(autouse=True)
def quick_start(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ENVIRONMENT", "test")
    monkeypatch.setenv("STARTUP_TIMEOUT_SECONDS", "1")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level  # run_service sets up the service's logging


def never(reason: str) -> Dependency:
    return Dependency("Thing", lambda _s: reason, "start the thing")


def test_a_clean_run_exits_0_and_gives_main_the_settings() -> None:
    seen: list[Boot] = []
    assert run_service("svc", seen.append, dependencies=()) == EXIT_OK
    (boot,) = seen
    assert boot.service == "svc" and boot.settings.startup_timeout_seconds == 1


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (BootFailure("broker unreachable"), EXIT_UNAVAILABLE),
        (BootFailure("port taken", EXIT_CONFIG), EXIT_CONFIG),
        (ConfigError("FCM_CREDENTIALS_FILE is unreadable"), EXIT_CONFIG),
    ],
)
def test_failures_of_main_map_to_the_common_exit_codes(raised: Exception, code: int) -> None:
    def main(boot: Boot) -> None:
        raise raised

    assert run_service("svc", main, dependencies=()) == code


def test_a_refused_setting_exits_2_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JWT_SECRET", "short")
    started: list[Boot] = []
    assert run_service("svc", started.append, dependencies=()) == EXIT_CONFIG
    assert started == []
    err = capsys.readouterr().err
    assert "configuration error" in err and "JWT_SECRET" in err


def test_a_dependency_that_never_answers_exits_1_after_the_deadline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started: list[Boot] = []
    code = run_service("svc", started.append, dependencies=(never("connection refused"),))
    assert code == EXIT_UNAVAILABLE and started == []
    err = capsys.readouterr().err
    assert "waiting for Thing: connection refused" in err
    assert "Thing did not come up within 1s: connection refused; start the thing" in err


def test_sigterm_while_waiting_is_a_clean_exit_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)

    def not_yet(_settings: Settings) -> str:
        os.kill(os.getpid(), signal.SIGTERM)
        return "not yet"

    started: list[Boot] = []
    dependency = Dependency("Thing", not_yet)
    assert run_service("svc", started.append, dependencies=(dependency,)) == EXIT_OK
    assert started == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_main_waits_for_sigterm_and_a_dead_service_is_a_failure() -> None:
    def main(boot: Boot) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        boot.wait_for_stop(alive=lambda: True)
        assert boot.signals == ["SIGTERM"]

    assert run_service("svc", main, dependencies=()) == EXIT_OK

    def dies(boot: Boot) -> None:
        boot.wait_for_stop(alive=lambda: False)

    assert run_service("svc", dies, dependencies=()) == EXIT_UNAVAILABLE


def test_postgresql_dependency_creates_and_migrates_a_new_database(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = (
        make_url(database_url)
        .set(database=f"plantnotify_boot_{uuid.uuid4().hex[:8]}")
        .render_as_string(hide_password=False)
    )
    monkeypatch.setenv("DATABASE_URL", fresh)
    monkeypatch.setenv("STARTUP_TIMEOUT_SECONDS", "20")
    tables: list[str] = []

    def main(boot: Boot) -> None:
        engine = create_engine(boot.settings.database_url)
        try:
            tables.extend(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    try:
        assert run_service("svc", main, dependencies=(POSTGRESQL,)) == EXIT_OK
        assert {"alembic_version", "analyses", "events"} <= set(tables)
    finally:
        drop_database(fresh)
