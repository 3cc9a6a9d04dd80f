"""Who is online now, as the plugin sees it: its whole sessions picture, asked for on request.

A service publishes a request id on ``$CONTROL/plantnotify/sessions``; the plugin answers that
client alone on ``plantnotify/broker/sessions`` with every online user, in parts
(:class:`~plantnotify.contracts.events.SessionsPicture`). A user in none of the parts is
offline. Used by the API's persistent-session cap and by ``plantnotify why --user``; the
bridge follows the same picture continuously (bridge/presence.py).
"""

from __future__ import annotations

import secrets
import time

from plantnotify.contracts import topics
from plantnotify.contracts.events import SessionsPicture
from plantnotify.mqtt import MqttClient, MqttError
from plantnotify.service_mqtt import service_connect_options
from plantnotify.settings import Settings


def online_client_ids(
    settings: Settings, service: str, user: str, *, timeout: float = 10.0
) -> set[str]:
    """The client ids of ``user`` connected now, asked for as service ``service``.

    Raises MqttError when the broker cannot be reached or no whole picture comes back within
    ``timeout`` seconds.
    """
    request_id = secrets.token_hex(8)
    subscriptions = [(topics.BROKER_SESSIONS_TOPIC, 1)]
    client = MqttClient(service_connect_options(settings, service, subscriptions=subscriptions))
    client.start()
    parts: dict[int, SessionsPicture] = {}
    deadline = time.monotonic() + timeout
    try:
        client.wait_connected(timeout)
        client.publish(topics.SESSIONS_REQUEST_TOPIC, request_id.encode(), qos=1)
        while (left := deadline - time.monotonic()) > 0:
            message = client.get_message(timeout=left)
            if message is None or message.topic != topics.BROKER_SESSIONS_TOPIC:
                continue
            part = SessionsPicture.model_validate_json(message.payload)
            if part.request_id != request_id:
                continue
            parts[part.part] = part
            if len(parts) == part.parts:
                return {
                    client_id
                    for p in parts.values()
                    for entry in p.sessions
                    if entry.user_id == user
                    for client_id in entry.client_ids
                }
        raise MqttError(f"no whole sessions picture within {timeout:g} s")
    finally:
        client.stop()
