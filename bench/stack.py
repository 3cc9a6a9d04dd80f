"""Our own parts, started for the bench from the same code that runs them in production.

Broker variants all come from our Mosquitto template (``plantnotify.broker.config``), so they
differ only in authentication:
- ``plugin``: exactly what ``plantnotify broker`` runs (JWT plugin, per-user ACL, sessions);
- ``password_file``: the same file with the plugin lines replaced by Mosquitto's own
  ``password_file`` (PBKDF2-SHA512, as ``mosquitto_passwd`` writes);
- ``plain``: the same file with the plugin lines removed and anonymous access allowed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.agent import Agent
from bench.context import BenchContext
from bench.running import RunningBroker, from_popen, wait_started
from plantnotify.broker.config import BrokerLayout, find_plugin, write_config
from plantnotify.broker.process import BrokerProcess
from plantnotify.contracts.claims import MqttSigner, mint_mqtt_token
from plantnotify.contracts.topics import analyses_filter
from plantnotify.net import free_port, port_open
from plantnotify.settings import Settings, load_settings
from worker.stages import VARIABLE as STAGES_VARIABLE


def bench_settings(ctx: BenchContext, **overrides: Any) -> Settings:
    """Settings for our services in this run: the run's secret, database, vhost, ports."""
    values: dict[str, Any] = {
        "environment": "test",
        "jwt_secret": ctx.secret,
        "mqtt_audience": ctx.audience,
        "log_level": "WARNING",
        # The bench offers thousands of uploads and registrations from one address on purpose.
        "rate_limits_enabled": False,
    }
    values.update(overrides)
    return load_settings(**values)


def start_mosquitto_variant(
    ctx: BenchContext,
    kind: str,
    name: str,
    *,
    password_file: Path | None = None,
    plugin_options: dict[str, str | None] | None = None,
    **settings_overrides: Any,
) -> RunningBroker:
    data_dir = ctx.scratch(name)
    port, ws_port = free_port(), free_port()
    settings = bench_settings(
        ctx,
        mqtt_host="127.0.0.1",
        mqtt_port=port,
        mqtt_ws_port=ws_port,
        mqtt_data_dir=data_dir,
        **settings_overrides,
    )
    layout = BrokerLayout(
        port=port,
        ws_port=ws_port,
        data_dir=data_dir,
        plugin_path=find_plugin(settings),
        plugin_options=dict(plugin_options or {}),
    )
    log_path = data_dir / "mosquitto.log"
    if kind == "plugin":
        process = BrokerProcess(settings, layout, log_path=log_path)
        process.start()
        assert process.pid is not None

        def stop() -> None:
            process.stop()

        broker = RunningBroker(
            name, kind, port, ws_port, process.pid, log_path, stop, process.running
        )
    else:
        text = write_config(settings, layout).read_text()
        lines = [ln for ln in text.splitlines() if not ln.startswith(("plugin ", "plugin_opt_"))]
        if kind == "plain":
            lines = [
                "allow_anonymous true" if ln.startswith("allow_anonymous") else ln for ln in lines
            ]
        elif kind == "password_file":
            if password_file is None:
                raise ValueError("the password_file variant needs a password file")
            lines.append(f"password_file {password_file}")
        else:
            raise ValueError(f"unknown broker kind {kind!r}")
        conf = data_dir / f"{kind}.conf"
        conf.write_text("\n".join(lines) + "\n")
        log = log_path.open("wb")
        proc = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        broker = from_popen(name, kind, port, ws_port, proc, log_path, log)
        wait_started(broker, [port, ws_port])
    ctx.on_close(broker.stop)
    return broker


@dataclass
class Service:
    """One of our services (``plantnotify worker`` ...) as a child process, stopped by pid."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> Service:
        """Return once ``ready_port`` accepts; fail with the end of the log otherwise."""
        if self.ready_port is None:
            return self
        deadline = time.monotonic() + timeout
        while not port_open(self.ready_port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{self.name} did not become ready; its log ends with:\n{tail}")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that gives a child process exactly these settings."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            env[name.upper()] = str(value)
    env.update(extra)
    return env


def start_service(
    ctx: BenchContext,
    name: str,
    command: list[str],
    settings: Settings,
    *,
    ready_port: int | None = None,
    wait: bool = True,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> Service:
    """Start ``plantnotify <command>`` with ``settings``; ready when ``ready_port`` accepts
    (waited for here unless ``wait`` is false: then call :meth:`Service.wait_ready`)."""
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    log_path = ctx.log_dir / f"{name}.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "plantnotify.cli", *command],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=service_env(settings, **(env or {})),
    )
    service = Service(name, proc, log_path, ready_port)
    ctx.on_close(service.stop)
    ctx.on_close(log.close)
    return service.wait_ready(timeout) if wait else service


@dataclass
class Stack:
    """Our broker and one worker on a throwaway database and vhost, shared by the scenarios
    that need the real pipeline (started by the first of them, stopped at the end of the run).
    ``settings`` also reserves the ports of the services a scenario adds (API, bridge, FCM
    emulator)."""

    broker: RunningBroker
    settings: Settings
    worker: Service


def our_stack(ctx: BenchContext) -> Stack:
    def start() -> Stack:
        database_url = ctx.database_url()
        rabbitmq_url = ctx.rabbitmq_url()
        broker = start_mosquitto_variant(ctx, "plugin", "stack-broker")
        api_port = free_port()
        settings = bench_settings(
            ctx,
            database_url=database_url,
            rabbitmq_url=rabbitmq_url,
            mqtt_host="127.0.0.1",
            mqtt_port=broker.port,
            mqtt_ws_port=broker.ws_port,
            metrics_port_worker=free_port(),
            metrics_port_bridge=free_port(),
            fcm_emulator_port=free_port(),
            standin_port=free_port(),
            api_port=api_port,
            public_base_url=f"http://127.0.0.1:{api_port}",
        )
        worker = start_service(
            ctx,
            "worker",
            ["worker"],
            settings,
            ready_port=settings.metrics_port_worker,
            wait=False,
            # Per-event stage times for the realpath scenario (about a microsecond a stage).
            env={STAGES_VARIABLE: str(ctx.log_dir / "worker-stages.txt")},
        )
        return Stack(broker, settings, worker)

    return ctx.shared("stack", start)


def device_agent(
    ctx: BenchContext,
    name: str,
    port: int,
    user_ids: list[str],
    *,
    transport: str = "tcp",
    match: str | None = None,
    token_seconds: int = 3600,
) -> Agent:
    """One subscriber agent with a device per user (``{user}-{name}``), each with its own JWT
    and subscribed to its user's analyses; ``match``: count only payloads containing it."""
    signer = MqttSigner(key=ctx.secret, audience=ctx.audience)
    agent = ctx.agent("subscriber", name)
    agent.call(
        "connect",
        timeout=90,
        port=port,
        transport="websockets" if transport == "ws" else "tcp",
        protocol=5,
        match=match,
        clients=[
            {
                "client_id": f"{u}-{name}",
                "username": u,
                "password": mint_mqtt_token(signer, u, token_seconds),
                "filter": analyses_filter(u),
            }
            for u in user_ids
        ],
    )
    return agent
