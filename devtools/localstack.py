"""``plantnotify up``: the whole local stack in the foreground; Ctrl-C stops all of it.

1. Makes sure PostgreSQL and RabbitMQ answer (``scripts/ensure-services.sh`` when they don't)
   and migrates the database (creating it if needed).
2. Chooses ports: each one from the environment, or its default, or -- when the default is
   taken by another program (a system Mosquitto on 1883, say) -- a free one, printed. A port set
   explicitly that is taken is an error with a clear message.
3. Starts every part as a child process in its own process group, its output prefixed with
   its name, waits for each to be ready (a progress line), then prints the URLs, a demo
   account, a ready-to-paste ``mosquitto_sub`` line and an upload command.
4. On Ctrl-C / SIGTERM (or when a part dies) it stops every process group it started: first
   the API, worker and bridge together, then what they use (broker, stand-ins), SIGKILLing
   whatever does not stop in time. Nothing is left behind.

Why not honcho or supervisord (checked against their code, honcho 2.0 and supervisor 4):
- **Ordered stop.** The worker, on SIGTERM, finishes its running analyses (which need the N8N
  stand-in) and publishes them (which needs the broker). honcho's ``Manager`` SIGTERMs every
  process at once and SIGKILLs them all after a fixed ``KILL_WAIT`` of 5 s; here each tier
  stops and is waited for before the next (``test_stop_is_tiered...`` fails when both parts
  share a tier, as under honcho).
- **Readiness.** The banner (demo account through the API, a ``mosquitto_sub`` line) is
  printed once every part answers its probe; neither tool has readiness probes (supervisord's
  ``startsecs`` is only "still running after N s").
- **One part dies, the stack stops**, with its name and exit code: honcho does that, but
  supervisord restarts it instead, needs its own config file and daemon, and writes each
  program's output to files rather than one prefixed stream in the terminal.
What is left here is those three things plus a prefixed console (~120 lines of ``Supervisor``
and ``Console``); everything else (ports, the demo account) a process manager would not do.

Adding a part is one entry in :func:`stack` (a :class:`Part`, ``tier=0`` if other parts use
it); a part whose subcommand is not registered in ``plantnotify.cli.COMMANDS`` is skipped with
a note.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from plantnotify.net import free_port, port_free
from plantnotify.settings import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password-change-me"  # noqa: S105 (local demo account, printed on screen)


# --- ports ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortSpec:
    env: str  # the variable (and Settings field, lower-cased)
    label: str


PORTS: tuple[PortSpec, ...] = (
    PortSpec("API_PORT", "API and web app"),
    PortSpec("MQTT_PORT", "MQTT/TCP"),
    PortSpec("MQTT_WS_PORT", "MQTT over WebSocket"),
    PortSpec("STANDIN_PORT", "N8N stand-in"),
    PortSpec("METRICS_PORT_WORKER", "worker metrics"),
    PortSpec("METRICS_PORT_BRIDGE", "bridge metrics"),
    PortSpec("FCM_EMULATOR_PORT", "FCM emulator"),
)


class StackError(RuntimeError):
    """The stack cannot start; the message says what to do."""


def choose_ports(
    settings: Settings, environ: dict[str, str] | os._Environ[str]
) -> tuple[dict[str, int], list[str]]:
    """Port per variable, and notes about replaced defaults. Raises StackError."""
    chosen: dict[str, int] = {}
    notes: list[str] = []
    for spec in PORTS:
        wanted = int(getattr(settings, spec.env.lower()))
        explicit = spec.env in environ
        if port_free(wanted) and wanted not in chosen.values():
            chosen[spec.env] = wanted
        elif explicit:
            raise StackError(
                f"{spec.env}={wanted} ({spec.label}) is already in use by another program; "
                f"stop that program, set {spec.env} to a free port, or unset it so that "
                "plantnotify picks one"
            )
        else:
            port = free_port()
            while port in chosen.values():
                port = free_port()
            chosen[spec.env] = port
            notes.append(f"{spec.env} {wanted} is taken by another program; using {port}")
    return chosen, notes


# --- readiness probes -------------------------------------------------------------------------


def tcp_ready(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def http_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 (our own URL)
                return bool(200 <= response.status < 300)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    return check


# --- the parts --------------------------------------------------------------------------------


@dataclass
class Part:
    """One process of the stack: ``plantnotify <command> [args]`` with a readiness probe."""

    name: str
    command: Sequence[str]
    ready: Callable[[], bool]
    # Parts of a higher tier stop first, together; tier 0 (what others use: the broker, the
    # N8N stand-in, the FCM emulator) stops last, so the worker can finish and publish.
    tier: int = 1
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None


@dataclass(frozen=True, slots=True)
class Stack:
    settings: Settings
    ports: dict[str, int]

    def url(self, env: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[env]}{path}"


def stack(ctx: Stack) -> list[Part]:
    """The parts in dependency order (started in this order). Add a line to add a part."""
    parts = [Part("broker", ["broker"], tcp_ready(ctx.ports["MQTT_PORT"]), tier=0)]
    if not ctx.settings.n8n_webhook_url:
        parts.append(
            Part(
                "n8n-standin",
                ["n8n-standin"],
                http_ready(ctx.url("STANDIN_PORT", "/healthz")),
                tier=0,
            )
        )
    if not ctx.settings.fcm_credentials_file:
        parts.append(
            Part(
                "fcm-emulator",
                ["fcm-emulator"],
                http_ready(ctx.url("FCM_EMULATOR_PORT", "/healthz")),
                tier=0,
            )
        )
    parts += [
        Part("api", ["api"], http_ready(ctx.url("API_PORT", "/healthz"))),
        Part("worker", ["worker"], tcp_ready(ctx.ports["METRICS_PORT_WORKER"])),
        # A stable name: the bridge's persistent MQTT session (receipts kept while it restarts).
        Part(
            "bridge",
            ["bridge"],
            tcp_ready(ctx.ports["METRICS_PORT_BRIDGE"]),
            env={"BRIDGE_INSTANCE": "local"},
        ),
    ]
    return parts


# --- running ----------------------------------------------------------------------------------


class Console:
    """Prefixed, line-buffered output shared by the log pumps and the progress line."""

    COLORS = ("36", "35", "33", "32", "34", "31", "96", "95")

    def __init__(self, stream: io.TextIOBase | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._lock = threading.Lock()
        self._status = ""
        self.width = 11

    def _paint(self, text: str, color: str) -> str:
        return f"\x1b[{color}m{text}\x1b[0m" if self.tty else text

    def line(self, text: str) -> None:
        with self._lock:
            if self._status and self.tty:
                self.stream.write("\r\x1b[K")
            self.stream.write(text + "\n")
            if self._status and self.tty:
                self.stream.write(self._status)
            self.stream.flush()

    def log(self, name: str, index: int, text: str) -> None:
        color = self.COLORS[index % len(self.COLORS)]
        self.line(f"{self._paint(name.rjust(self.width), color)} | {text}")

    def status(self, text: str) -> None:
        with self._lock:
            if self.tty:
                self.stream.write("\r\x1b[K" + text)
                self._status = text
            elif text != self._status:
                self.stream.write(text + "\n")
                self._status = text
            self.stream.flush()

    def clear_status(self) -> None:
        with self._lock:
            if self._status and self.tty:
                self.stream.write("\r\x1b[K")
            self._status = ""
            self.stream.flush()


class Supervisor:
    def __init__(self, parts: list[Part], env: dict[str, str], console: Console) -> None:
        self.parts = parts
        self.env = env
        self.console = console
        self.stopping = threading.Event()
        self.failed: Part | None = None
        self._pumps: list[threading.Thread] = []
        console.width = max([11, *(len(p.name) for p in parts)])

    def start(self, executable: Sequence[str]) -> None:
        for index, part in enumerate(self.parts):
            part.process = subprocess.Popen(
                [*executable, *part.command],
                env={**self.env, **part.env},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we stop the whole group
                cwd=ROOT,
            )
            pump = threading.Thread(target=self._pump, args=(part, index), daemon=True)
            pump.start()
            self._pumps.append(pump)

    def _pump(self, part: Part, index: int) -> None:
        assert part.process is not None and part.process.stdout is not None
        for raw in part.process.stdout:
            self.console.log(part.name, index, raw.decode(errors="replace").rstrip())

    def dead(self) -> Part | None:
        for part in self.parts:
            if part.process is not None and part.process.poll() is not None:
                return part
        return None

    def wait_ready(self, timeout: float) -> list[str]:
        """Names of parts not ready by ``timeout``; raises StackError if one exits."""
        pending = {p.name: p for p in self.parts}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline and not self.stopping.is_set():
            for name, part in list(pending.items()):
                if part.ready():
                    del pending[name]
            dead = self.dead()
            if dead is not None:
                raise StackError(f"{dead.name} exited with code {dead.process.returncode}")  # type: ignore[union-attr]
            ready = len(self.parts) - len(pending)
            marks = " ".join(f"{p.name}{'…' if p.name in pending else ' ✓'}" for p in self.parts)
            self.console.status(f"starting ({ready}/{len(self.parts)} ready): {marks}")
            if pending:
                self.stopping.wait(0.3)
        self.console.clear_status()
        return list(pending)

    def stop(self) -> None:
        """Stop tier by tier (highest first): SIGTERM each process group of the tier, wait for
        them together, SIGKILL what does not stop in time (and anything left in its group)."""
        self.stopping.set()
        for tier in sorted({p.tier for p in self.parts}, reverse=True):
            members = [p for p in reversed(self.parts) if p.tier == tier and p.process]
            for part in members:
                if part.process is not None and part.process.poll() is None:
                    _signal_group(part, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            for part in members:
                assert part.process is not None
                try:
                    part.process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.console.line(
                        f"{part.name} did not stop in {STOP_TIMEOUT:.0f}s; killing it"
                    )
                _signal_group(part, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    part.process.wait(5)
        for pump in self._pumps:
            pump.join(2)


def _signal_group(part: Part, sig: int) -> None:
    if part.process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(part.process.pid, sig)


# --- the demo account -------------------------------------------------------------------------


def _post_json(url: str, body: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(  # noqa: S310 (our own API)
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (urllib.error.URLError, OSError, ValueError):
        return 0, {}


def demo_account(api: str) -> tuple[str, str] | None:
    """Register (or log in) the demo user; (userId, accessToken) or None."""
    base = f"{api}/api/v1/auth"
    status, _ = _post_json(
        f"{base}/register", {"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
    )
    if status not in (201, 409):
        return None
    status, body = _post_json(
        f"{base}/login", {"username": DEMO_USERNAME, "password": DEMO_PASSWORD}
    )
    if status != 200:
        return None
    return str(body["userId"]), str(body["accessToken"])


def demo_device(api: str, user_id: str, access_token: str) -> str | None:
    """Register a pretend phone for the demo user, so an upload with no app open shows a push
    in the FCM emulator; its registration token, or None."""
    token = f"demo-phone-{user_id}"
    request = urllib.request.Request(  # noqa: S310 (our own API)
        f"{api}/api/v1/devices",
        data=json.dumps({"token": token, "platform": "android"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {access_token}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return token if 200 <= response.status < 300 else None
    except (urllib.error.URLError, OSError):
        return None


def demo_image(path: Path) -> Path:
    """A leaf with brown spots, for the printed upload command."""
    from PIL import Image, ImageDraw

    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        img = Image.new("RGB", (480, 360), (235, 235, 228))
        draw = ImageDraw.Draw(img)
        draw.ellipse((60, 40, 420, 320), fill=(52, 140, 48))
        for i in range(14):
            x, y = 100 + (i * 71) % 250, 70 + (i * 47) % 190
            draw.ellipse((x, y, x + 42, y + 36), fill=(112, 72, 34))
        img.save(path, "PNG")
    return path


def mosquitto_sub_line(settings: Settings, user_id: str, ttl: int) -> str:
    """A ready ``mosquitto_sub`` for ``user_id`` (user role), via the token CLI module."""
    from plantnotify.contracts.claims import mint_mqtt_token
    from plantnotify.tokencli import mosquitto_sub_command

    token = mint_mqtt_token(settings.mqtt_signer, user_id, ttl)
    return mosquitto_sub_command(settings, user_id, token, service=False)


def print_banner(console: Console, ctx: Stack, parts: list[Part], notes: list[str]) -> None:
    settings, ports = ctx.settings, ctx.ports
    api = ctx.url("API_PORT")
    lines = [
        "",
        "plantnotify is up. Ctrl-C stops everything.",
        "",
        f"  web app          {api}/",
        f"  API docs         {api}/docs",
        f"  MQTT/TCP         mqtt://127.0.0.1:{ports['MQTT_PORT']}",
        f"  MQTT/WebSocket   ws://127.0.0.1:{ports['MQTT_WS_PORT']}/mqtt",
        f"  worker metrics   {ctx.url('METRICS_PORT_WORKER', '/metrics')}",
        f"  bridge metrics   {ctx.url('METRICS_PORT_BRIDGE', '/metrics')}",
    ]
    names = {p.name for p in parts}
    if "n8n-standin" in names:
        lines.append(f"  N8N stand-in     {ctx.url('STANDIN_PORT', '/webhook/plant-analysis')}")
    else:
        lines.append(f"  N8N webhook      {settings.n8n_webhook_url}")
    if "fcm-emulator" in names:
        lines.append(f"  FCM emulator     {ctx.url('FCM_EMULATOR_PORT')}")
    lines += [f"  note: {n}" for n in notes]
    account = demo_account(api) if "api" in names else None
    if account is not None:
        user_id, access = account
        image = demo_image(ROOT / ".run" / "demo-leaf.png")
        lines += [
            "",
            f"Demo account: {DEMO_USERNAME} / {DEMO_PASSWORD} (user id {user_id})",
            "Watch that user's events (valid 12 h):",
            "  " + mosquitto_sub_line(settings, user_id, 12 * 3600),
            "Then upload a photo from another terminal:",
            f"  curl -s -H 'Authorization: Bearer {access}' -F image=@{image} "
            f"-F cropType=tomato {api}/api/v1/plantanalyses/async",
        ]
        if "fcm-emulator" in names and demo_device(api, user_id, access):
            lines.append(
                "With no app of that user open, the result also arrives as a push to its "
                f"registered demo phone: see {ctx.url('FCM_EMULATOR_PORT')}/"
            )
    else:
        lines += ["", "(could not create the demo account; register in the web app instead)"]
    for line in lines:
        console.line(line)


# --- the command ------------------------------------------------------------------------------


def _ensure_services(settings: Settings, console: Console) -> None:
    from sqlalchemy.engine import make_url

    targets = [
        (
            make_url(settings.database_url).host or "127.0.0.1",
            make_url(settings.database_url).port or 5432,
        ),
        (
            urlsplit(settings.rabbitmq_url).hostname or "127.0.0.1",
            urlsplit(settings.rabbitmq_url).port or 5672,
        ),
    ]
    missing = [t for t in targets if not tcp_ready(t[1], t[0])()]
    script = ROOT / "scripts" / "ensure-services.sh"
    if missing and script.exists() and all(h in ("127.0.0.1", "localhost") for h, _ in missing):
        console.line("starting PostgreSQL / RabbitMQ (scripts/ensure-services.sh)...")
        subprocess.run([str(script)], check=False)
    still = [f"{h}:{p}" for h, p in targets if not tcp_ready(p, h)()]
    if still:
        raise StackError(
            f"cannot reach {', '.join(still)}; start PostgreSQL and RabbitMQ "
            "(scripts/ensure-services.sh) or point DATABASE_URL / RABBITMQ_URL at them"
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ready-timeout", type=float, default=READY_TIMEOUT, help="seconds to wait for every part"
    )


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        settings = load_settings()
    except (ConfigError, ValueError) as exc:
        console.line(f"plantnotify up: configuration error: {exc}")
        return 2
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    try:
        _ensure_services(settings, console)
        ports, notes = choose_ports(settings, os.environ)
        from plantnotify.db.session import migrate

        migrate(settings.database_url)
        console.line("database migrated")
    except StackError as exc:
        console.line(f"plantnotify up: {exc}")
        return 1
    except Exception as exc:  # a migration error: show it plainly, no traceback
        console.line(f"plantnotify up: could not migrate the database: {exc}")
        return 1

    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "PYTHONUNBUFFERED": "1"}
    ctx = Stack(load_settings(**{k.lower(): v for k, v in ports.items()}), ports)

    from plantnotify.cli import COMMANDS

    parts = []
    for part in stack(ctx):
        if part.command[0] in COMMANDS:
            parts.append(part)
        else:
            notes.append(
                f"`plantnotify {part.command[0]}` is not available yet; {part.name} not started"
            )
    for note in notes:
        console.line(f"note: {note}")

    supervisor = Supervisor(parts, env, console)
    executable = [sys.executable, "-m", "plantnotify.cli"]
    code = 0
    try:
        supervisor.start(executable)

        def forward_stop() -> None:
            stopping.wait()
            supervisor.stopping.set()

        signal_watch = threading.Thread(target=forward_stop, daemon=True)
        signal_watch.start()
        not_ready = supervisor.wait_ready(args.ready_timeout)
        if stopping.is_set():
            return 0
        if not_ready:
            console.line(
                f"plantnotify up: not ready after {args.ready_timeout:.0f}s: "
                f"{', '.join(not_ready)} (see their log lines above)"
            )
            return 1
        print_banner(console, ctx, parts, notes)
        while not stopping.wait(0.5):
            dead = supervisor.dead()
            if dead is not None:
                assert dead.process is not None
                console.line(
                    f"plantnotify up: {dead.name} exited with code {dead.process.returncode}; "
                    "stopping the stack"
                )
                code = 1
                break
    except StackError as exc:
        console.line(f"plantnotify up: {exc}; stopping the stack")
        code = 1
    finally:
        console.clear_status()
        console.line("stopping...")
        supervisor.stop()
        console.line("stopped.")
    return code
