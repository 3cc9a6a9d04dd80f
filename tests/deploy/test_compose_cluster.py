"""The cluster profile of docker-compose.yml (``--profile cluster``), checked without a Docker
engine: 3 NATS nodes with an auth callout beside each, 2 api / 2 worker / 2 bridge replicas on
it, every one with a health check its dependents wait for, and only real commands and Settings
variables."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from plantnotify.cli import build_parser
from plantnotify.settings import load_settings
from tests.deploy.test_compose import RUNTIME_ENV, SECRET_VALUES, SETTINGS_ENV, run_compose

NODES = ("nats-1", "nats-2", "nats-3")
CALLOUTS = ("auth-callout-1", "auth-callout-2", "auth-callout-3")
REPLICAS = {"api": 2, "worker": 2, "bridge": 2}


@pytest.fixture(scope="module")
def cluster() -> dict[str, dict[str, Any]]:
    result = run_compose("--profile", "cluster", "config", env=SECRET_VALUES)
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    services: dict[str, dict[str, Any]] = yaml.safe_load(result.stdout)["services"]
    return {n: s for n, s in services.items() if "cluster" in s.get("profiles", [])}


def test_three_nodes_each_with_a_callout_and_the_replicas(
    cluster: dict[str, dict[str, Any]],
) -> None:
    for i, node in enumerate(NODES, start=1):
        cmd = cluster[node]["command"]
        assert cmd[:3] == ["plantnotify", "broker", "--engine"] and f"n{i}" in cmd
        assert cluster[node]["healthcheck"]["test"][-1].endswith(":8222/healthz")
        callout = cluster[f"auth-callout-{i}"]
        servers = callout["command"][callout["command"].index("--servers") + 1].split(",")
        assert servers[0] == f"nats://{node}:4222", "each callout talks to its own node first"
        assert len(servers) == 3, "and fails over to the others"
        assert callout["depends_on"][node]["condition"] == "service_healthy"
        assert callout["healthcheck"]["test"][-1].startswith("file://")
    for part, count in REPLICAS.items():
        replicas = [s for n, s in cluster.items() if n.startswith(f"{part}-cluster-")]
        assert len(replicas) == count, part
        for service in replicas:
            assert service["command"] == ["plantnotify", part]
            env = service["environment"]
            assert env["BROKER_ENGINE"] == "nats"
            assert env["MQTT_FAILOVER_HOSTS"], "services must fail over to the other nodes"
            assert "healthcheck" in service
            for dep, how in service["depends_on"].items():
                expected = (
                    "service_completed_successfully" if dep == "migrate" else "service_healthy"
                )
                assert how["condition"] == expected, (part, dep)


def test_commands_and_variables_are_real(cluster: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    for name, service in cluster.items():
        parser.parse_args(service["command"][1:])  # exits (fails the test) if not a real command
        extra = set(service.get("environment", {})) - SETTINGS_ENV - RUNTIME_ENV
        assert not extra, f"{name}: not Settings fields: {extra}"


def test_settings_accept_what_the_cluster_services_get(
    cluster: dict[str, dict[str, Any]],
) -> None:
    for name in ("api-cluster-1", "worker-cluster-1", "bridge-cluster-1", "nats-1", *CALLOUTS):
        env = {k: str(v) for k, v in cluster[name]["environment"].items() if v not in ("", None)}
        env["ENVIRONMENT"] = "development"
        settings = load_settings(**{k.lower(): v for k, v in env.items()})
        assert settings.broker_engine == "nats"
        assert settings.mqtt_protocol == 4
        assert len(settings.nats_url_list) == 3
