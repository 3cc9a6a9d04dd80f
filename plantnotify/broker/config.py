"""Renders the broker configuration from ``Settings`` (mosquitto/mosquitto.conf.template).

The template is the one source of truth for Mosquitto's settings; this module only fills in
ports, paths and the plugin options. Secrets never appear in the configuration text: the HS256
secret goes to a 0600 file in the data directory that the plugin reads.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from plantnotify.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "mosquitto" / "mosquitto.conf.template"
PLUGIN_BUILD_PATH = ROOT / "mosquitto" / "plugin" / "plantnotify_auth.so"
CONFIG_NAME = "mosquitto.conf"
SECRET_NAME = "jwt_secret"  # noqa: S105 (a file name, not a secret)
RUNTIME_NAME = "broker.json"

DEFAULT_AUTOSAVE_INTERVAL = 60
DEFAULT_MAX_PACKET_SIZE = 65536


class BrokerConfigError(RuntimeError):
    """The broker cannot be configured; the message says what to do."""


def find_plugin(settings: Settings) -> Path:
    """The built plugin: ``MQTT_PLUGIN_PATH`` if set, else the repository's build output."""
    path = settings.mqtt_plugin_path or PLUGIN_BUILD_PATH
    if not path.is_file():
        hint = (
            "check MQTT_PLUGIN_PATH"
            if settings.mqtt_plugin_path
            else "build it with `make plugin` (or `make install` on a fresh machine)"
        )
        raise BrokerConfigError(f"Mosquitto plugin not found at {path}; {hint}")
    return path.resolve()


@dataclass(frozen=True)
class BrokerLayout:
    """What the broker is started with: ports and where its files live."""

    port: int
    ws_port: int
    data_dir: Path
    plugin_path: Path
    # plugin_opt_<name> values that override the ones derived from Settings; None drops one.
    plugin_options: dict[str, str | None] = field(default_factory=dict)
    autosave_interval: int = DEFAULT_AUTOSAVE_INTERVAL

    @property
    def config_path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def secret_path(self) -> Path:
        return self.data_dir / SECRET_NAME

    @property
    def runtime_path(self) -> Path:
        return self.data_dir / RUNTIME_NAME


def plugin_options(settings: Settings, layout: BrokerLayout) -> dict[str, str]:
    """The plugin's options derived from Settings (see the README's options table)."""
    opts: dict[str, str | None] = {"jwt_alg": settings.mqtt_jwt_algorithm}
    if settings.mqtt_jwt_algorithm == "HS256":
        opts["jwt_secret_file"] = str(layout.secret_path)
    else:
        if not settings.mqtt_jwt_public_key_file:
            raise BrokerConfigError(
                f"MQTT_JWT_ALGORITHM={settings.mqtt_jwt_algorithm} needs "
                "MQTT_JWT_PUBLIC_KEY_FILE (the PEM public key the plugin verifies with)"
            )
        opts["jwt_public_key_file"] = str(settings.mqtt_jwt_public_key_file.resolve())
    opts["audience"] = settings.mqtt_audience
    if settings.mqtt_issuer:
        opts["issuer"] = settings.mqtt_issuer
    opts["leeway"] = str(settings.mqtt_leeway_seconds)
    opts["max_connections_per_user"] = str(settings.mqtt_max_connections_per_user)
    opts["expiry_check_interval"] = str(settings.mqtt_expiry_check_seconds)
    if settings.mqtt_revocation_sync_seconds:
        opts["revocation_sync_timeout"] = str(settings.mqtt_revocation_sync_seconds)
    opts.update(layout.plugin_options)
    return {k: v for k, v in opts.items() if v is not None}


def _conf_value(value: str) -> str:
    if any(c in value for c in "\r\n\x00"):
        raise BrokerConfigError(f"configuration value {value!r} contains a line break")
    return value


def socket_domain_line(bind_host: str) -> str:
    """``socket_domain`` for the WebSocket listener: without it, Mosquitto 2.0.11's WebSocket
    listener (libwebsockets) listens on every interface whatever address it is given."""
    try:
        address = ipaddress.ip_address(bind_host.strip("[]"))
    except ValueError:
        return "# (a host name: the WebSocket listener binds what libwebsockets resolves)"
    return f"socket_domain {'ipv4' if address.version == 4 else 'ipv6'}"


def render_config(settings: Settings, layout: BrokerLayout) -> str:
    options = plugin_options(settings, layout)
    block = "\n".join(f"plugin_opt_{k} {_conf_value(v)}" for k, v in options.items())
    template = Template(TEMPLATE_PATH.read_text())
    return template.substitute(
        run_user=_conf_value(getpass.getuser()),
        max_packet_size=DEFAULT_MAX_PACKET_SIZE,
        data_dir=_conf_value(str(layout.data_dir.resolve())),
        autosave_interval=layout.autosave_interval,
        bind_host=_conf_value(settings.mqtt_bind_host),
        port=layout.port,
        ws_port=layout.ws_port,
        ws_socket_domain=socket_domain_line(settings.mqtt_bind_host),
        plugin_path=_conf_value(str(layout.plugin_path)),
        plugin_options=block,
    )


def _write_private(path: Path, data: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(data)
    os.chmod(path, 0o600)


def write_config(settings: Settings, layout: BrokerLayout) -> Path:
    """Writes the secret (HS256) and the configuration into the data dir; returns the config."""
    layout.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if settings.mqtt_jwt_algorithm == "HS256":
        _write_private(layout.secret_path, settings.jwt_secret)
    _write_private(layout.config_path, render_config(settings, layout))
    return layout.config_path
