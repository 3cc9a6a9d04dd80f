"""The issue's targets, compared with what one run measured. Printed as met/missed, never asserted.

Each target reads metrics that the scenarios recorded; a target whose inputs were not measured
(scenario not selected, or failed) says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.results import Report, TargetResult
from bench.stats import ratio


@dataclass(frozen=True)
class _Check:
    id: str
    description: str
    target: str
    evaluate: Callable[[Report], tuple[float | None, str, bool | None]]


def _fmt(value: float | None, unit: str, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{unit}"


def _e2e_vs_baseline(transport: str) -> Callable[[Report], tuple[float | None, str, bool | None]]:
    def evaluate(report: Report) -> tuple[float | None, str, bool | None]:
        e2e = report.metric("e2e_latency", f"{transport}_p99_ms_at_500")
        base = report.metric("mosquitto_baseline", "p99_ms_at_500")
        r = ratio(e2e, base)
        text = f"{_fmt(r, 'x')} ({_fmt(e2e, ' ms')} vs {_fmt(base, ' ms')})"
        return r, text, None if r is None else r <= 5.0

    return evaluate


def _e2e_at_2000(transport: str) -> Callable[[Report], tuple[float | None, str, bool | None]]:
    def evaluate(report: Report) -> tuple[float | None, str, bool | None]:
        p99 = report.metric("e2e_latency", f"{transport}_p99_ms_at_2000")
        return p99, _fmt(p99, " ms"), None if p99 is None else p99 <= 10.0

    return evaluate


def _sustained(report: Report) -> tuple[float | None, str, bool | None]:
    rate = report.metric("e2e_latency", "sustained_events_per_s")
    broke = report.metric("e2e_latency", "broke_at_events_per_s")
    if rate is None and broke is not None:
        return 0.0, f"below {broke:,.0f} events/s (the first rate tried broke)", False
    return rate, _fmt(rate, " events/s", 0), None if rate is None else rate >= 2000


def _memory(report: Report) -> tuple[float | None, str, bool | None]:
    plugin = report.metric("connections", "plugin_bytes_per_conn")
    plain = report.metric("connections", "plain_bytes_per_conn")
    five = report.metric("connections", "plugin_5_per_user_bytes_per_conn")
    v5 = report.metric("connections", "plugin_v5_auth_bytes_per_conn")
    text = (
        f"{_fmt(plugin, ' B', 0)} with 1 device per user, {_fmt(five, ' B', 0)} with 5, "
        f"{_fmt(v5, ' B', 0)} with the token as MQTT 5 authentication data "
        f"(plain Mosquitto {_fmt(plain, ' B', 0)})"
    )
    return plugin, text, None if plugin is None else plugin <= 1200


def _memory_8k(report: Report) -> tuple[float | None, str, bool | None]:
    plugin = report.metric("connections", "plugin_8k_bytes_per_conn")
    plain = report.metric("connections", "plain_8k_bytes_per_conn")
    text = f"{_fmt(plugin, ' B', 0)} (plain Mosquitto {_fmt(plain, ' B', 0)})"
    return plugin, text, None if plugin is None else plugin <= 1200


def _p99_vs_plain(window: str) -> Callable[[Report], tuple[float | None, str, bool | None]]:
    def evaluate(report: Report) -> tuple[float | None, str, bool | None]:
        plugin = report.metric("mass_disconnect", f"plugin_p99_ms_{window}")
        plain = report.metric("mass_disconnect", f"plain_p99_ms_{window}")
        r = ratio(plugin, plain)
        text = f"{_fmt(r, 'x')} ({_fmt(plugin, ' ms')} vs {_fmt(plain, ' ms')})"
        return r, text, None if r is None else r <= 1.5

    return evaluate


def _connect_rate(report: Report) -> tuple[float | None, str, bool | None]:
    plugin = report.metric("connections", "plugin_connect_rate")
    pwfile = report.metric("connections", "password_file_connect_rate")
    r = ratio(plugin, pwfile)
    text = f"{_fmt(r, 'x')} ({_fmt(plugin, '/s', 0)} vs {_fmt(pwfile, '/s', 0)})"
    return r, text, None if r is None else r >= 1.0


def _decision(report: Report) -> tuple[float | None, str, bool | None]:
    p99 = report.metric("fallback", "decision_p99_ms")
    missing = report.metric("fallback", "decision_missing")
    if p99 is None and missing:
        return None, f"no decision for {missing} events within the wait", False
    return p99, _fmt(p99, " ms", 1), None if p99 is None else p99 <= 100


def _bridge_decision(report: Report) -> tuple[float | None, str, bool | None]:
    p99 = report.metric("fallback", "mixed_decision_p99_ms")
    missing = report.metric("fallback", "mixed_decision_missing")
    rate = report.metric("fallback", "online_rate_committed")
    intake = report.metric("fallback", "intake_events_per_s")
    if p99 is None and missing:
        return None, f"no decision for {missing} events within the wait", False
    text = (
        f"{_fmt(p99, ' ms', 1)} beside {_fmt(rate, ' online events/s', 0)} "
        f"(bridge took in {_fmt(intake, '/s', 0)})"
    )
    return p99, text, None if p99 is None else p99 <= 100


def _bridge_pushes(report: Report) -> tuple[float | None, str, bool | None]:
    bridge = report.metric("fallback", "pushes_per_s")
    direct = report.metric("fallback", "direct_pushes_per_s")
    r = ratio(bridge, direct)
    text = f"{_fmt(r, 'x')} ({_fmt(bridge, '/s', 0)} vs {_fmt(direct, '/s', 0)})"
    return r, text, None if r is None else r >= 1.0


def _amqtt(key: str, minimum: float) -> Callable[[Report], tuple[float | None, str, bool | None]]:
    def evaluate(report: Report) -> tuple[float | None, str, bool | None]:
        value = report.metric("amqtt", key)
        return value, _fmt(value, "x", 1), None if value is None else value >= minimum

    return evaluate


CHECKS: list[_Check] = [
    _Check(
        "e2e-vs-mosquitto-tcp",
        "commit → device p99 (MQTT/TCP) vs plain Mosquitto pub→sub p99, at 500 events/s",
        "≤ 5x",
        _e2e_vs_baseline("tcp"),
    ),
    _Check(
        "e2e-vs-mosquitto-ws",
        "commit → device p99 (WebSocket) vs plain Mosquitto pub→sub p99, at 500 events/s",
        "≤ 5x",
        _e2e_vs_baseline("ws"),
    ),
    _Check(
        "e2e-2000-tcp",
        "commit → device p99 (MQTT/TCP) at 2,000 events/s",
        "≤ 10 ms",
        _e2e_at_2000("tcp"),
    ),
    _Check(
        "e2e-2000-ws",
        "commit → device p99 (WebSocket) at 2,000 events/s",
        "≤ 10 ms",
        _e2e_at_2000("ws"),
    ),
    _Check(
        "sustained",
        "events/s sustained end to end (1 worker, 1 broker, p99 ≤ 50 ms, nothing lost)",
        "≥ 2,000/s",
        _sustained,
    ),
    _Check(
        "memory-per-connection",
        "broker memory per idle authenticated connection (plugin)",
        "≤ 1,200 B",
        _memory,
    ),
    _Check(
        "memory-per-connection-8k",
        "broker memory per idle authenticated connection (plugin) at 8,000 connections",
        "≤ 1,200 B",
        _memory_8k,
    ),
    _Check(
        "p99-quiet-vs-plain",
        "publish → subscribe p99, plugin vs plain Mosquitto with N idle connections (same run)",
        "≤ 1.5x",
        _p99_vs_plain("quiet"),
    ),
    _Check(
        "p99-mass-disconnect-vs-plain",
        "publish → subscribe p99 while N connections disconnect at once, plugin vs plain",
        "≤ 1.5x",
        _p99_vs_plain("drop"),
    ),
    _Check(
        "connect-rate",
        "connect+auth rate, plugin vs Mosquitto password file (same run)",
        "≥ 1.0x",
        _connect_rate,
    ),
    _Check(
        "push-decision", "offline push decision p99 after the commit, alone", "≤ 100 ms", _decision
    ),
    _Check(
        "push-decision-under-load",
        "offline push decision p99 after the commit, beside 2,000 online events/s",
        "≤ 100 ms",
        _bridge_decision,
    ),
    _Check(
        "bridge-pushes-vs-direct",
        "pushes/s through the bridge vs firebase-admin straight to the same emulator",
        "≥ 1.0x",
        _bridge_pushes,
    ),
    _Check("amqtt-connect", "connect rate vs amqtt", "≥ 10x", _amqtt("connect_rate_ratio", 10)),
    _Check(
        "amqtt-memory", "less memory per connection than amqtt", "≥ 40x", _amqtt("memory_ratio", 40)
    ),
    _Check(
        "amqtt-p99",
        "better p99 than amqtt at 500 events/s",
        "≥ 50x",
        _amqtt("p99_ratio_at_500", 50),
    ),
    _Check(
        "amqtt-p99-2000",
        "better p99 than amqtt at 2,000 events/s",
        "≥ 50x",
        _amqtt("p99_ratio_at_2000", 50),
    ),
]


def evaluate(report: Report, why: dict[str, str] | None = None) -> list[TargetResult]:
    """Every target with its measured value and met/missed; ``why`` explains misses."""
    out = []
    for check in CHECKS:
        _, text, met = check.evaluate(report)
        status = "not measured" if met is None else ("met" if met else "missed")
        out.append(
            TargetResult(
                id=check.id,
                description=check.description,
                measured=text,
                target=check.target,
                status=status,
                why=(why or {}).get(check.id, ""),
            )
        )
    return out
