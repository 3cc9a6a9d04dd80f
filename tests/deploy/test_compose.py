"""docker-compose.yml and docker/Dockerfile, checked without a Docker engine.

What can be checked here is checked against the code itself: the file passes
`docker-compose config`, the secrets have no default, every command is a real `plantnotify`
subcommand, every variable a service is given is a Settings field, and ports, health checks and
volumes agree with the Settings defaults.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from plantnotify.cli import build_parser
from plantnotify.settings import Settings, refuse_unsafe_production
from tests.deploy.support import ROOT, docker_compose

COMPOSE_FILE = ROOT / "docker-compose.yml"
REQUIRED_SECRETS = ("JWT_SECRET", "POSTGRES_PASSWORD", "RABBITMQ_PASSWORD")
SECRET_VALUES = {name: f"{name.lower()}-" + "0" * 40 for name in REQUIRED_SECRETS}
# Each long-running part of the system and the Settings field of the port its health check uses.
PARTS = {
    "api": "api_port",
    "worker": "metrics_port_worker",
    "bridge": "metrics_port_bridge",
    "mosquitto": "mqtt_port",
    "n8n-standin": "standin_port",
    "fcm-emulator": "fcm_emulator_port",
}
SUBCOMMANDS = {
    "api": "api",
    "worker": "worker",
    "bridge": "bridge",
    "mosquitto": "broker",
    "migrate": "migrate",
    "n8n-standin": "n8n-standin",
    "fcm-emulator": "fcm-emulator",
}
# Variables of the third-party images (documented in the README), not ours.
THIRD_PARTY_ENV = {
    "postgres": {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD"},
    "rabbitmq": {"RABBITMQ_DEFAULT_USER", "RABBITMQ_DEFAULT_PASS"},
    "prometheus": set(),
    "grafana": {"GF_USERS_ALLOW_SIGN_UP"},
}
# Variables our images set that are Python's or pip's, not the project's.
RUNTIME_ENV = {
    "PATH",
    "PYTHONUNBUFFERED",
    "PYTHONDONTWRITEBYTECODE",
    "PIP_DISABLE_PIP_VERSION_CHECK",
}
SETTINGS_ENV = {name.upper() for name in Settings.model_fields}


def run_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # A clean environment: the caller's own JWT_SECRET or ENVIRONMENT must not leak into the
    # interpolation being tested.
    base = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    return subprocess.run(
        [*docker_compose(), "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    """The file as docker-compose resolves it: anchors merged, variables interpolated."""
    result = run_compose("--profile", "dev", "--profile", "monitoring", "config", env=SECRET_VALUES)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    doc: dict[str, Any] = yaml.safe_load(result.stdout)
    return doc


CHECKED_PROFILES = {
    "dev",
    "monitoring",
}  # the cluster profile: tests/deploy/test_compose_cluster.py


@pytest.fixture(scope="module")
def services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # docker-compose 1.x lists every service in `config`, whatever --profile says.
    return {
        name: service
        for name, service in config["services"].items()
        if not service.get("profiles") or CHECKED_PROFILES & set(service["profiles"])
    }


def ours(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("plantnotify-")}


def test_every_part_is_in_the_file(services: dict[str, dict[str, Any]]) -> None:
    expected = {"postgres", "rabbitmq", "migrate", *PARTS}
    assert expected <= set(services), f"missing services: {expected - set(services)}"


@pytest.mark.parametrize("secret", REQUIRED_SECRETS)
def test_secrets_are_required_never_defaulted(secret: str) -> None:
    env = {k: v for k, v in SECRET_VALUES.items() if k != secret}
    result = run_compose("config", "--quiet", env=env)
    assert result.returncode != 0, f"docker-compose config accepted a missing {secret}"
    assert f"set {secret}" in result.stderr, result.stderr
    # Every use of the variable in the file is the required form, none has a default.
    text = COMPOSE_FILE.read_text()
    uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
    assert uses, f"{secret} is not used in docker-compose.yml"
    assert all(use.startswith(":?") for use in uses), f"{secret} defaulted somewhere: {uses}"


def test_development_stand_ins_only_in_the_dev_profile(services: dict[str, dict[str, Any]]) -> None:
    # (`docker-compose config --services` lists every profile's services, so check the keys.)
    for name in ("n8n-standin", "fcm-emulator"):
        assert services[name].get("profiles") == ["dev"], name
    for name in ("api", "worker", "bridge", "mosquitto", "migrate", "postgres", "rabbitmq"):
        assert not services[name].get("profiles"), f"{name} must start without a profile"


def test_commands_are_real_plantnotify_subcommands(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    for name, subcommand in SUBCOMMANDS.items():
        command = services[name]["command"]
        assert isinstance(command, list), f"{name}: use the exec form (a list), no shell"
        assert command[:2] == ["plantnotify", subcommand], f"{name}: {command}"
        try:
            args = parser.parse_args(command[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{shlex.join(command)}` is not a valid plantnotify command line")
        assert args.command == subcommand


def test_every_variable_is_a_settings_field(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        given = set(service.get("environment", {}))
        allowed = SETTINGS_ENV if name in ours(services) else THIRD_PARTY_ENV[name]
        assert given <= allowed, f"{name}: not a Settings field: {sorted(given - allowed)}"


def test_dockerfile_sets_only_settings_and_runtime_variables() -> None:
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    names = set()
    for block in re.findall(r"^ENV\s+((?:.*\\\n)*.*)$", dockerfile, re.MULTILINE):
        names |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", block))
    assert names, "no ENV lines found"
    assert names <= SETTINGS_ENV | RUNTIME_ENV, sorted(names - SETTINGS_ENV - RUNTIME_ENV)


def dockerignored(path: str) -> bool:
    """Whether .dockerignore excludes ``path`` itself (Docker's rules, for plain patterns)."""
    path = path.rstrip("/")
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = line.strip().rstrip("/")
        if not pattern or pattern.startswith("#"):
            continue
        if fnmatch.fnmatchcase(path, pattern) or (
            pattern.startswith("**/") and fnmatch.fnmatchcase(path.split("/")[-1], pattern[3:])
        ):
            return True
    return False


def _clean_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SETTINGS_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("environment", ["production", "development"])
def test_settings_accept_what_compose_gives_each_part(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    """Every part starts with the file's values, given what production requires on top."""
    operator = {
        "ENVIRONMENT": environment,
        "N8N_WEBHOOK_URL": "https://n8n.example/webhook/plant",
        "FCM_CREDENTIALS_FILE": "/run/secrets/plantnotify/fcm.json",
    }
    for name, service in ours(services).items():
        _clean_settings_env(monkeypatch)
        for key, value in {**service["environment"], **operator}.items():
            if key in service["environment"]:
                monkeypatch.setenv(key, str(value))
        settings = Settings()
        refuse_unsafe_production(settings, service["command"][1])
        assert settings.environment == environment
        if name != "mosquitto":
            assert settings.log_format == "json"
            assert settings.database_url.endswith("@postgres:5432/plantnotify")
            assert settings.mqtt_host == "mosquitto"


def test_production_defaults_refused_by_the_parts_that_need_them(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the file's defaults alone (no N8N, no FCM), production refuses worker and bridge."""
    from plantnotify.settings import ConfigError

    for name, missing in (("worker", "N8N_WEBHOOK_URL"), ("bridge", "FCM_CREDENTIALS_FILE")):
        _clean_settings_env(monkeypatch)
        for key, value in services[name]["environment"].items():
            monkeypatch.setenv(key, str(value))
        with pytest.raises(ConfigError, match=missing):
            refuse_unsafe_production(Settings(), name)


def _port_of(test: list[str]) -> int:
    target = test[-1]
    port = urlsplit(target).port
    assert port, f"health check target without a port: {target}"
    return port


def test_health_checks_agree_with_settings(services: dict[str, dict[str, Any]]) -> None:
    defaults = {n: f.default for n, f in Settings.model_fields.items()}
    for name, field in PARTS.items():
        check = services[name].get("healthcheck")
        assert check, f"{name} has no health check"
        test = check["test"]
        assert test[0] == "CMD" and test[1:4] == ["python", "-m", "plantnotify.healthcheck"], test
        assert _port_of(test) == defaults[field], f"{name}: health check port vs {field.upper()}"
    assert services["api"]["healthcheck"]["test"][-1].endswith("/readyz")
    assert services["mosquitto"]["healthcheck"]["test"][-1].startswith("mqtt://")


def test_published_ports_agree_with_settings(services: dict[str, dict[str, Any]]) -> None:
    defaults = {n: f.default for n, f in Settings.model_fields.items()}

    def targets(name: str) -> set[int]:
        return {int(p["target"]) for p in services[name].get("ports", [])}

    assert targets("api") == {defaults["api_port"]}
    assert targets("mosquitto") == {defaults["mqtt_port"], defaults["mqtt_ws_port"]}
    assert targets("fcm-emulator") == {defaults["fcm_emulator_port"]}  # dev profile only
    # PostgreSQL, RabbitMQ and the metrics endpoints stay on the compose network.
    for name in ("postgres", "rabbitmq", "worker", "bridge", "migrate"):
        assert not targets(name), f"{name} should not publish ports"


def test_every_long_running_service_is_healthy_before_its_dependents(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        if service.get("restart") == "no":
            continue
        assert "healthcheck" in service, f"{name} has no health check"
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            if dependency == "migrate":
                assert how["condition"] == "service_completed_successfully", name
            else:
                assert how["condition"] == "service_healthy", f"{name} -> {dependency}"
                assert "healthcheck" in services[dependency], dependency
    for name in ("api", "worker", "bridge"):
        assert services[name]["depends_on"]["migrate"], f"{name} must wait for the migration"
    assert services["migrate"]["restart"] == "no"


def test_data_lives_in_named_volumes(
    config: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    def mounts(name: str) -> dict[str, str]:
        out = {}
        for volume in services[name].get("volumes", []):
            source, target = (
                (volume.split(":")[:2])
                if isinstance(volume, str)
                else (
                    volume["source"],
                    volume["target"],
                )
            )
            out[target] = source
        return out

    assert mounts("postgres")["/var/lib/postgresql/data"] in config["volumes"]
    assert mounts("rabbitmq")["/var/lib/rabbitmq"] in config["volumes"]
    data_dir = services["mosquitto"]["environment"]["MQTT_DATA_DIR"]
    assert mounts("mosquitto")[data_dir] in config["volumes"]
    assert services["rabbitmq"].get("hostname"), "RabbitMQ's data is per node name: pin it"


def test_shutdown_grace_covers_the_worker(services: dict[str, dict[str, Any]]) -> None:
    grace = Settings.model_fields.get("worker_shutdown_grace_seconds")
    stop = services["worker"].get("stop_grace_period", "10s")
    match = re.fullmatch(r"(\d+)s", str(stop))
    assert match, f"stop_grace_period in seconds, got {stop!r}"
    needed = float(grace.default) if grace is not None else 10.0
    assert int(match.group(1)) > needed, "Docker would SIGKILL the worker during its grace"
    for name, service in ours(services).items():
        assert service.get("init") is True, f"{name}: run under an init (signals, zombies)"


def test_dockerfiles_and_their_inputs_exist(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = Path(build["context"]) / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
        text = dockerfile.read_text()
        assert re.search(rf"^FROM \S+ AS {build['target']}$", text, re.M), build["target"]
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert dockerignored("web/node_modules") and dockerignored(".venv")  # the matcher works
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    # Both runtime images run as the unprivileged user.
    for stage in ("app", "broker"):
        body = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "\nUSER plantnotify\n" in body, f"{stage} image must not run as root"
