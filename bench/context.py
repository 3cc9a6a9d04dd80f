"""What a scenario gets: run options, scratch space, agents and services it may start.

Everything started through the context is stopped by the context (by pid), also when a
scenario fails half-way, so one failed scenario never leaves load behind for the next.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

from bench.agent import Agent
from plantnotify.contracts.claims import DEFAULT_MQTT_AUDIENCE

T = TypeVar("T")


@dataclass
class BenchContext:
    quick: bool
    out_dir: Path
    work_dir: Path
    step: Callable[[str], None] = lambda description: None
    run_id: str = field(default_factory=lambda: secrets.token_hex(4))
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    audience: str = DEFAULT_MQTT_AUDIENCE
    _cleanups: list[Callable[[], None]] = field(default_factory=list)  # end of the scenario
    _finals: list[Callable[[], None]] = field(default_factory=list)  # end of the run
    _source_ips: int = 0
    _run_scope: bool = False
    _shared: dict[str, Any] = field(default_factory=dict)
    _holders: list[Agent] = field(default_factory=list)
    _database: Future[str] | None = None
    _vhost: Future[str] | None = None

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the current scenario ends (stop its brokers, agents, services), or
        at the end of the run for what :meth:`shared` starts."""
        (self._finals if self._run_scope else self._cleanups).append(fn)

    def shared(self, key: str, start: Callable[[], T]) -> T:
        """Something several scenarios use (our broker, the worker): started by the first
        that asks, kept until the end of the run. Starting them costs seconds each."""
        if key not in self._shared:
            self._run_scope = True
            try:
                self._shared[key] = start()
            finally:
                self._run_scope = False
        return cast(T, self._shared[key])

    def agent(self, module: str, name: str, env: dict[str, str] | None = None) -> Agent:
        agent = Agent(f"bench.agents.{module}", name, self.log_dir, env=env)
        self.on_close(agent.close)
        return agent

    def holders(self, n: int) -> list[Agent]:
        """``n`` connection agents, kept for the whole scenario: starting one costs seconds."""
        while len(self._holders) < n:
            agent = self.agent("holder", f"holder{len(self._holders)}")
            self._holders.append(agent)
        return self._holders[:n]

    def source_ip(self) -> str:
        """A loopback address no client of this run has used yet (see LeanClient.start)."""
        n = self._source_ips
        self._source_ips += 1
        return f"127.1.{n // 250}.{n % 250 + 1}"

    def scratch(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- throwaway PostgreSQL database and RabbitMQ vhost ------------------------------------

    def prepare_services(self) -> None:
        """Create the database and vhost in the background (each takes seconds)."""
        pool = ThreadPoolExecutor(2, thread_name_prefix="bench-services")
        if self._database is None:
            self._database = pool.submit(self._make_database)
        if self._vhost is None:
            self._vhost = pool.submit(self._make_vhost)
        pool.shutdown(wait=False)

    def database_url(self) -> str:
        self.prepare_services()
        assert self._database is not None
        return self._database.result()

    def rabbitmq_url(self) -> str:
        self.prepare_services()
        assert self._vhost is not None
        return self._vhost.result()

    def _make_database(self) -> str:
        from plantnotify.db.session import drop_database, migrate

        url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/plantnotify_bench_{self.run_id}"
        self._finals.append(lambda: drop_database(url))
        migrate(url)
        return url

    def _make_vhost(self) -> str:
        vhost = f"plantnotify_bench_{self.run_id}"

        def delete_vhost() -> None:
            subprocess.run(
                ["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True
            )

        self._finals.append(delete_vhost)
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        return f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"

    def end_scenario(self) -> None:
        _run_all(self._cleanups)
        self._holders.clear()

    def close(self) -> None:
        _run_all(self._cleanups)
        _run_all(self._finals)

    def remove_scratch(self) -> None:
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _run_all(fns: list[Callable[[], None]]) -> None:
    while fns:
        fn = fns.pop()
        with contextlib.suppress(Exception):
            fn()
