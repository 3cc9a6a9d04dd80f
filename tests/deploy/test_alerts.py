"""ops/prometheus: the alert rules pass their unit tests (promtool), every rule is tested both
firing and silent, and the scrape configuration agrees with the compose file and Settings."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from plantnotify.settings import Settings
from tests.deploy.support import ROOT, tool

PROMETHEUS = ROOT / "ops" / "prometheus"
# Scrape job -> (compose service, Settings field of its metrics port)
JOBS = {
    "api": ("api", "api_port"),
    "worker": ("worker", "metrics_port_worker"),
    "bridge": ("bridge", "metrics_port_bridge"),
    "mosquitto": ("broker-metrics", "metrics_port_broker"),
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool", "prometheus"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def load(name: str) -> Any:
    return yaml.safe_load((PROMETHEUS / name).read_text())


def test_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts_test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = {r["alert"] for g in load("alerts.yml")["groups"] for r in g["rules"] if "alert" in r}
    firing: set[str] = set()
    silent: set[str] = set()
    for case in load("alerts_test.yml")["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else silent).add(check["alertname"])
    assert alerts, "no alerts found"
    assert firing >= alerts, f"never shown firing: {sorted(alerts - firing)}"
    assert silent >= alerts, f"never shown silent: {sorted(alerts - silent)}"
    assert (firing | silent) <= alerts, f"tests for unknown alerts: {(firing | silent) - alerts}"
    for group in load("alerts.yml")["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("page", "warning"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_prometheus_configuration_is_valid(tmp_path: Path) -> None:
    # In the container the rules are mounted at /etc/prometheus/alerts.yml; check the same
    # files side by side here.
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/", ""))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    result = promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _targets(job: dict[str, Any]) -> set[tuple[str, int]]:
    out = set()
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, port = target.rsplit(":", 1)
            out.add((host, int(port)))
    for dns in job.get("dns_sd_configs", []):
        out |= {(name, int(dns["port"])) for name in dns["names"]}
    return out


def test_scrape_targets_are_the_compose_services_on_their_settings_ports() -> None:
    jobs = {job["job_name"]: job for job in load("prometheus.yml")["scrape_configs"]}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    for job, (service, port_field) in JOBS.items():
        assert _targets(jobs[job]) == {(service, defaults[port_field])}, job
        assert service in compose
        if job != "api":
            # metrics listen beyond the container's loopback only when told to
            assert compose[service]["environment"].get("METRICS_HOST") == "0.0.0.0", service
    assert _targets(jobs["rabbitmq"]) == {("rabbitmq", 15692)}
    plugins = (ROOT / "ops" / "rabbitmq" / "enabled_plugins").read_text()
    assert "rabbitmq_prometheus" in plugins
    # The worker and bridge may be scaled: every replica must be found, not one of them.
    for job in ("worker", "bridge"):
        assert jobs[job].get("dns_sd_configs"), f"{job}: use DNS discovery (scaling)"
    mounts = compose["prometheus"]["volumes"]
    assert any(m.startswith("./ops/prometheus/alerts.yml:") for m in mounts)
    assert any(m.startswith("./ops/prometheus/prometheus.yml:") for m in mounts)
