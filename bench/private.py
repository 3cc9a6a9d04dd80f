"""A PostgreSQL cluster and a RabbitMQ node of the bench's own, on free ports.

The soak scenario restarts PostgreSQL and RabbitMQ while the stack runs; the machine's own
instances are shared with other test suites, so the bench starts private ones (their data in
its scratch directory) and restarts only those. Each is stopped by the bench at the end.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.supervisor import remove_at_exit
from plantnotify.net import free_port, port_open

ROOT = Path(__file__).resolve().parents[1]


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        raise RuntimeError(f"{name} not found (install the PostgreSQL server package)")
    return found


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


class PrivatePostgres:
    def __init__(self) -> None:
        # Its own directory under the temp dir: the bench's scratch directory is private to
        # the user running it, and the server runs as the postgres user when that is root.
        self.root = Path(tempfile.mkdtemp(prefix="plantnotify-bench-pg-"))
        remove_at_exit(self.root)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/plantnotify_soak"

    def _chown(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def start(self) -> PrivatePostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self._chown()
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                _as_postgres(
                    [_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
                ),
                check=True,
                capture_output=True,
            )
        self._ctl("start")
        return self

    def _ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    *extra,
                    action,
                ]
            ),
            check=True,
            capture_output=True,
        )

    def restart(self) -> None:
        self._ctl("restart", "-m", "fast")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._ctl("stop", "-m", "fast")
        shutil.rmtree(self.root, ignore_errors=True)

    def pids(self) -> list[int]:
        """The postmaster and its children (backends, WAL writer, ...)."""
        try:
            main = int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        children = subprocess.run(
            ["pgrep", "-P", str(main)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [main, *map(int, children)]


class PrivateRabbit:
    """A RabbitMQ node of its own (own node name, ports, data, logs; the Erlang cookie of the
    user running the bench)."""

    def __init__(self, name: str) -> None:
        # Its own directory under the temp dir, owned by the rabbitmq user when run as root
        # (the server drops to that user).
        self.root = Path(tempfile.mkdtemp(prefix="plantnotify-bench-rabbitmq-"))
        remove_at_exit(self.root)
        self.root.chmod(0o755)
        self.node = f"{name}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.root / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.root / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.root / "enabled_plugins"),
            RABBITMQ_PID_FILE=str(self.root / "rabbit.pid"),
            RABBITMQ_CONFIG_FILE=str(self.root / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.root / "advanced.config"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(self.root / "feature_flags"),
            ERL_CRASH_DUMP=str(self.root / "erl_crash.dump"),
        )
        return env

    def start(self, timeout: float = 120.0) -> PrivateRabbit:
        for sub in ("mnesia", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "enabled_plugins").write_text("[].\n")
        # The deployment's own settings (ops/rabbitmq), so a soak measures what production runs.
        conf = (ROOT / "ops" / "rabbitmq" / "20-plantnotify.conf").read_text()
        (self.root / "rabbitmq.conf").write_text("loopback_users.guest = true\n" + conf)
        (self.root / "advanced.config").write_text("[].\n")
        if os.geteuid() == 0:
            for path in [self.root, *self.root.rglob("*")]:
                shutil.chown(path, "rabbitmq", "rabbitmq")
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            ["rabbitmq-server"],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while not port_open(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.root / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"private RabbitMQ did not start:\n{tail}")
            time.sleep(0.3)
        return self

    def stop(self, timeout: float = 60.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"],
            env=self._env(),
            capture_output=True,
            check=False,
            timeout=timeout,
        )
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pids(self) -> list[int]:
        try:
            return [int((self.root / "rabbit.pid").read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []
