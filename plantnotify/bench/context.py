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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from plantnotify.bench.agent import Agent
from plantnotify.contracts.claims import DEFAULT_MQTT_AUDIENCE


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
    _database_url: str | None = None
    _rabbitmq_url: str | None = None

    @property
    def log_dir(self) -> Path:
        return self.out_dir / "logs"

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` when the current scenario ends (stop its brokers, agents, services)."""
        self._cleanups.append(fn)

    def agent(self, module: str, name: str, env: dict[str, str] | None = None) -> Agent:
        agent = Agent(f"plantnotify.bench.agents.{module}", name, self.log_dir, env=env)
        self.on_close(agent.close)
        return agent

    def scratch(self, name: str) -> Path:
        path = self.work_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- throwaway PostgreSQL database and RabbitMQ vhost ------------------------------------

    def database_url(self) -> str:
        if self._database_url is None:
            from plantnotify.db.session import drop_database, migrate

            url = f"postgresql+psycopg2://postgres@127.0.0.1:5432/plantnotify_bench_{self.run_id}"
            migrate(url)
            self._database_url = url
            self._finals.append(lambda: drop_database(url))
        return self._database_url

    def rabbitmq_url(self) -> str:
        if self._rabbitmq_url is None:
            vhost = f"plantnotify_bench_{self.run_id}"
            subprocess.run(
                ["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True
            )
            subprocess.run(
                ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                check=True,
                capture_output=True,
            )

            def delete_vhost() -> None:
                subprocess.run(
                    ["rabbitmqctl", "-q", "delete_vhost", vhost], check=False, capture_output=True
                )

            self._finals.append(delete_vhost)
            self._rabbitmq_url = f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
        return self._rabbitmq_url

    def end_scenario(self) -> None:
        _run_all(self._cleanups)

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
