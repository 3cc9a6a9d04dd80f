"""A small MQTT client for the services and the reference device client.

paho-mqtt does the protocol; this package owns the shape around it: paho callbacks only hand
results over, messages become :class:`Message` at the boundary, failures are a small exception
hierarchy, and reconnecting is an explicit loop (with fresh credentials on every attempt).
"""

from plantnotify.mqtt.client import MqttClient
from plantnotify.mqtt.errors import (
    MqttConnectError,
    MqttError,
    MqttNotConnected,
    MqttPublishError,
    MqttSubscribeError,
    MqttTimeout,
)
from plantnotify.mqtt.types import ConnectionState, ConnectOptions, Credentials, Message

__all__ = [
    "ConnectOptions",
    "ConnectionState",
    "Credentials",
    "Message",
    "MqttClient",
    "MqttConnectError",
    "MqttError",
    "MqttNotConnected",
    "MqttPublishError",
    "MqttSubscribeError",
    "MqttTimeout",
]
