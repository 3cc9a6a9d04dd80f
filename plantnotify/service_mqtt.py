"""MQTT identity of our own services (worker, bridge, operators' tools).

Convention: a service connects with username ``svc-<name>`` (a valid user id, so the plugin's
``username == sub`` rule holds), a token with ``role: service``, and client id
``svc-<name>-<random>`` (the plugin requires every client id to be the user id or start with
``<userId>-``, services included). Tokens are minted per connection attempt and the client
reconnects with a fresh one before the current one expires.
"""

from __future__ import annotations

import time

from plantnotify.contracts.claims import mint_mqtt_token
from plantnotify.contracts.ids import new_client_id
from plantnotify.mqtt import ConnectOptions, Credentials
from plantnotify.settings import Settings

SERVICE_PREFIX = "svc-"


def service_user(name: str) -> str:
    return f"{SERVICE_PREFIX}{name}"


def service_connect_options(
    settings: Settings, name: str, *, ttl: int | None = None, **options: object
) -> ConnectOptions:
    """Connect options for service ``name`` (e.g. ``worker``) to our broker."""
    user = service_user(name)
    lifetime = ttl or settings.service_token_ttl_seconds

    def credentials() -> Credentials:
        now = int(time.time())
        token = mint_mqtt_token(settings.mqtt_signer, user, lifetime, service=True, now=now)
        return Credentials(user, token, expires_at=now + lifetime)

    options.setdefault("protocol", settings.mqtt_protocol)  # 3.1.1 on the NATS engine
    options.setdefault("failover", settings.mqtt_failover)  # the cluster's other nodes
    return ConnectOptions(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        client_id=new_client_id(user),
        credentials=credentials,
        refresh_margin=min(30.0, lifetime / 4),
        **options,  # type: ignore[arg-type]
    )
