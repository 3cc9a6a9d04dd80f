"""The exceptions this package raises; nothing from paho leaks past it."""

from __future__ import annotations


class MqttError(Exception):
    """Base class of every MQTT failure."""


class MqttNotConnected(MqttError):
    """There is no live connection right now (the reconnect loop is working on it)."""


class MqttConnectError(MqttError):
    """The broker refused the connection (CONNACK with a failure reason)."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"broker refused the connection: {reason} (code {code})")
        self.reason = reason
        self.code = code


class MqttPublishError(MqttError):
    """A QoS>0 publish was refused (failure PUBACK) or lost with the connection."""


class MqttSubscribeError(MqttError):
    """The broker refused one or more subscriptions (failure SUBACK)."""

    def __init__(self, refused: list[tuple[str, str]]) -> None:
        detail = ", ".join(f"{flt!r}: {reason}" for flt, reason in refused)
        super().__init__(f"subscription refused: {detail}")
        self.refused = refused


class MqttTimeout(MqttError):
    """An acknowledgement did not arrive in time."""
