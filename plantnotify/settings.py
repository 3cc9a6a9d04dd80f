"""The one Settings class, read from the environment (contract §7).

Every variable of the contract is here, with its default. ``ENVIRONMENT`` is ``development``
by default; anywhere else the development secret is refused at start-up with a message that
says what to set.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from plantnotify.contracts.claims import (
    DEFAULT_MQTT_AUDIENCE,
    MIN_HS256_SECRET_BYTES,
    SUPPORTED_ALGORITHMS,
    MqttSigner,
)

# The PostgreSQL driver the project installs (psycopg2-binary, pyproject.toml). SQLAlchemy 2.1 maps
# a URL that names no driver (`postgresql://`) to psycopg 3, which is not installed.
DATABASE_DRIVER = "psycopg2"

DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"  # noqa: S105 (refused outside dev)


class ConfigError(ValueError):
    """A configuration problem; the message says what to set."""


def normalize_database_url(url: str) -> str:
    """``postgresql://…`` and ``postgres://…`` (what libpq, psql and hosting providers write)
    name no driver: they get the installed one. A URL that names its driver is left alone."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("postgresql", "postgres"):
        return f"postgresql+{DATABASE_DRIVER}://{rest}"
    return url


class Settings(BaseSettings):
    # env_ignore_empty: `VAR=` (docker-compose's `${VAR:-}`) means "use the default", not "".
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    environment: Literal["development", "test", "production"] = Field(
        "development", description="`production` refuses development defaults."
    )
    log_level: str = Field("INFO", description="Python log level.")
    log_format: Literal["json", "text"] = Field("text", description="`json` for log shippers.")

    # --- HTTP API ---------------------------------------------------------------------------
    api_host: str = Field("127.0.0.1", description="Address the API binds to.")
    api_port: int = Field(8000, description="API port (`make up` picks a free one if unset).")
    public_base_url: str | None = Field(
        None, description="Base URL clients use for the API (image URLs); derived if unset."
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed by CORS (never `*` with credentials)."
    )
    max_upload_mb: int = Field(10, ge=1, le=100, description="Largest accepted image, in MiB.")
    web_dist_dir: Path | None = Field(
        None, description="Built web app served at `/` (default: `<repo>/web/dist`)."
    )
    rollout_check_seconds: float = Field(
        60.0,
        gt=0,
        description="How often clients re-read `/config` (realtime or polling; `plantnotify "
        "rollout`).",
    )
    poll_seconds: float = Field(
        15.0, gt=0, description="How often clients outside the realtime rollout poll."
    )
    rate_limits_enabled: bool = Field(
        True, description="Rate limits (429 with Retry-After); shared by replicas via PostgreSQL."
    )
    login_failures_per_account: int = Field(
        10, ge=1, description="Failed logins per username in 15 min before a growing lockout."
    )
    login_failures_per_ip: int = Field(
        100, ge=1, description="Failed logins per client address in 15 min before a lockout."
    )
    registrations_per_ip_per_hour: int = Field(
        20, ge=1, description="Accounts created per client address per hour."
    )
    uploads_per_user_per_minute: int = Field(
        30, ge=1, description="Uploads per user per minute (4x that per client address)."
    )
    realtime_tokens_per_user_per_minute: int = Field(
        30, ge=1, description="`POST /realtime/token` calls per user per minute."
    )
    max_devices_per_user: int = Field(
        20, ge=1, description="FCM tokens kept per user (the least recently registered go)."
    )
    startup_timeout_seconds: float = Field(
        30.0, ge=0, description="How long a service waits for its dependencies at start-up."
    )

    # --- storage and queue ------------------------------------------------------------------
    database_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/plantnotify",
        description="PostgreSQL URL (`postgresql://…` uses the installed psycopg2); the database "
        "is created and migrated if missing.",
        repr=False,
    )
    rabbitmq_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/%2F", description="RabbitMQ URL.", repr=False
    )

    # --- tokens -----------------------------------------------------------------------------
    jwt_secret: str = Field(
        DEV_JWT_SECRET,
        description="HS256 secret (>= 32 bytes) for API access tokens, and for MQTT tokens when "
        "MQTT_JWT_ALGORITHM=HS256 (development only).",
        repr=False,
    )
    access_token_ttl_seconds: int = Field(
        900, ge=30, description="Lifetime of API access tokens (renewed with the refresh token)."
    )
    refresh_token_ttl_seconds: int = Field(
        30 * 86400, ge=60, description="A login session ends after this long without a refresh."
    )
    refresh_reuse_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="A just-spent refresh token sent again this soon (a lost answer) is rotated "
        "again; later reuse revokes the login session.",
    )
    auth_jwt_algorithm: str = Field("HS256", description="Algorithm of accepted access tokens.")
    auth_jwt_public_key_file: Path | None = Field(
        None, description="PEM public key for an external identity provider's RS256/ES256 tokens."
    )
    auth_jwt_issuer: str | None = Field(None, description="Required `iss` of access tokens.")
    auth_jwt_audience: str | None = Field(None, description="Required `aud` of access tokens.")
    auth_user_id_claim: str = Field("sub", description="Claim holding the user id, e.g. `userId`.")
    auth_jwt_secret: str | None = Field(
        None, description="HS256 secret of an external identity provider's access tokens."
    )

    mqtt_jwt_algorithm: str = Field(
        "HS256",
        description="MQTT token algorithm (plugin pins it): ES256 or RS256 in production (the "
        "broker holds only the public key), HS256 with JWT_SECRET for development.",
    )
    mqtt_jwt_private_key_file: Path | None = Field(
        None, description="PEM private key to sign RS256/ES256 MQTT tokens."
    )
    mqtt_jwt_public_key_file: Path | None = Field(
        None, description="PEM public key the plugin verifies RS256/ES256 MQTT tokens with."
    )
    mqtt_audience: str = Field(DEFAULT_MQTT_AUDIENCE, description="`aud` of MQTT tokens.")
    mqtt_issuer: str | None = Field(None, description="`iss` of MQTT tokens (checked if set).")
    mqtt_token_ttl_seconds: int = Field(3600, description="Lifetime of realtime tokens.")
    service_token_ttl_seconds: int = Field(86400, description="Lifetime of service tokens.")

    # --- MQTT broker ------------------------------------------------------------------------
    mqtt_host: str = Field("127.0.0.1", description="Broker address the services connect to.")
    mqtt_bind_host: str = Field("127.0.0.1", description="Address our Mosquitto listens on.")
    mqtt_port: int = Field(1884, description="MQTT/TCP port of our Mosquitto.")
    mqtt_ws_port: int = Field(9001, description="MQTT-over-WebSocket port of our Mosquitto.")
    mqtt_public_host: str | None = Field(None, description="Broker host given to clients.")
    mqtt_ws_url: str | None = Field(None, description="WebSocket URL given to browsers.")
    mqtt_max_connections_per_user: int = Field(5, ge=1, description="Live connections per user.")
    mqtt_max_persistent_sessions_per_user: int = Field(
        40,
        ge=1,
        description="MQTT sessions kept offline per user (clients without a clean start); the "
        "API ends the oldest offline ones beyond this.",
    )
    mqtt_expiry_check_seconds: int = Field(2, ge=1, description="How often expired are kicked.")
    mqtt_leeway_seconds: int = Field(5, ge=0, le=60, description="Clock leeway for exp/nbf/iat.")
    mqtt_revocation_sync_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description="After a broker start, refuse user CONNECTs until the API re-sent the "
        "revocations, for at most this long (0: accept at once).",
    )
    mqtt_data_dir: Path = Field(Path(".run/mosquitto"), description="Broker persistence dir.")
    mqtt_plugin_path: Path | None = Field(None, description="Built plugin .so (auto-found).")
    event_expiry_seconds: int = Field(
        7 * 86400, description="MQTT 5 message expiry of retained events."
    )
    broker_engine: Literal["mosquitto", "nats"] = Field(
        "mosquitto",
        description="`mosquitto` (one node, the plugin) or `nats` (a cluster, MQTT 3.1.1).",
    )
    nats_urls: str = Field(
        "nats://127.0.0.1:4222",
        description="NATS client URLs of the nodes, comma-separated (auth callout, presence).",
    )
    nats_data_dir: Path = Field(Path(".run/nats"), description="Local NATS cluster's data dir.")
    mqtt_failover_hosts: str = Field(
        "",
        description="Other broker nodes (host:port, comma-separated) services try when "
        "MQTT_HOST:MQTT_PORT does not answer (the NATS cluster).",
    )

    # --- worker -----------------------------------------------------------------------------
    n8n_webhook_url: str | None = Field(
        None, description="N8N webhook; unset: the local stand-in analyzer."
    )
    n8n_timeout_seconds: float = Field(360.0, description="Time-out of one N8N call.")
    n8n_max_attempts: int = Field(4, ge=1, description="N8N attempts before `Failed`.")
    n8n_backoff_seconds: float = Field(2.0, ge=0, description="First retry delay (doubles).")
    worker_concurrency: int = Field(16, ge=1, description="Analyses run at once per worker.")
    standin_port: int = Field(8100, description="Port of the N8N stand-in.")
    standin_delay_seconds: float = Field(3.0, ge=0, description="Stand-in's simulated work.")
    standin_host: str = Field(
        "127.0.0.1", description="Address the N8N stand-in binds to (`0.0.0.0` in containers)."
    )
    worker_lease_seconds: float = Field(
        60.0, gt=0, description="Lease on an analysis being worked on; renewed every third."
    )
    worker_shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, wait this long for running analyses, then hand back."
    )
    worker_unknown_analysis_grace_seconds: float = Field(
        5.0, ge=0, description="Wait this long for a job's analysis row before dead-lettering."
    )
    outbox_sweep_seconds: float = Field(
        5.0, gt=0, description="Outbox publisher's periodic sweep (it is also woken at once)."
    )
    outbox_batch_size: int = Field(500, ge=1, description="Events published per outbox batch.")
    outbox_connections: int = Field(
        4,
        ge=1,
        le=8,
        description="MQTT connections each worker process publishes the outbox over (a "
        "partition always uses the same one, so per-analysis order holds).",
    )

    # --- bridge / FCM -----------------------------------------------------------------------
    fcm_credentials_file: Path | None = Field(
        None, description="Service-account JSON; unset: the local FCM emulator."
    )
    fcm_endpoint: str | None = Field(
        None, description="Base URL replacing https://fcm.googleapis.com (emulator, tests)."
    )
    fcm_emulator_port: int = Field(8200, description="Port of the local FCM emulator.")
    fcm_web_config: str | None = Field(
        None,
        description="Firebase web app config (JSON: apiKey, projectId, messagingSenderId, "
        "appId): the web app registers FCM web push tokens.",
    )
    fcm_web_vapid_key: str | None = Field(
        None, description="The Firebase project's web push (VAPID) public key."
    )
    fcm_emulator_host: str = Field(
        "127.0.0.1", description="Address the FCM emulator binds to (`0.0.0.0` in containers)."
    )
    fallback_grace_seconds: float = Field(
        10.0, ge=0, description="Wait for a receipt before pushing to a live user."
    )
    fcm_project_id: str = Field(
        "plantnotify-local", description="Firebase project used with the local FCM emulator."
    )
    fcm_http_timeout_seconds: float = Field(10.0, gt=0, description="Time-out of one FCM call.")
    fcm_max_attempts: int = Field(5, ge=1, description="FCM attempts on 429/5xx/network errors.")
    fcm_retry_base_seconds: float = Field(1.0, ge=0, description="First FCM retry delay (x2).")
    fcm_retry_max_seconds: float = Field(300.0, ge=0, description="Longest FCM retry delay.")
    fcm_config_retry_seconds: float = Field(
        30.0, ge=0, description="Retry delay after an FCM credentials/configuration error."
    )
    fcm_config_give_up_seconds: float = Field(
        1800.0, ge=0, description="A push blocked by a configuration error is dropped after this."
    )
    fcm_concurrency: int = Field(8, ge=1, description="FCM sends in flight per bridge.")
    fcm_sender_processes: int = Field(
        0,
        ge=0,
        le=16,
        description="Processes of their own that send a bridge's pushes, each with "
        "`FCM_CONCURRENCY` sends in flight (0: threads of the bridge process).",
    )
    fcm_ttl_seconds: int = Field(
        86400, ge=0, le=2_419_200, description="How long FCM keeps an undelivered push."
    )
    bridge_instance: str | None = Field(
        None, description="Stable name of this bridge (MQTT client id suffix); default host-pid."
    )
    bridge_share_group: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,40}$",
        description="Bridges with the same group split the users' events between them (an MQTT "
        "shared subscription; Mosquitto only); unset: each bridge takes in every event.",
    )
    bridge_session_expiry_seconds: int = Field(
        600, ge=0, description="Broker keeps the bridge's receipts this long across its restarts."
    )
    bridge_poll_seconds: float = Field(
        0.5, gt=0, description="Catch-up sweep of the events table for missed events."
    )
    bridge_lookback_seconds: float = Field(
        3600.0, gt=0, description="Events published longer ago than this are never pushed."
    )
    bridge_lease_seconds: float = Field(
        60.0, gt=0, description="How long one bridge owns the pushes it is sending."
    )
    metrics_port_worker: int = Field(9101, description="Prometheus port of the worker.")
    metrics_port_bridge: int = Field(9102, description="Prometheus port of the bridge.")
    metrics_port_broker: int = Field(
        9103, description="Prometheus port of `plantnotify broker` (CONNECT outcomes); 0: off."
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Address the worker's and bridge's metrics endpoints bind to."
    )

    # --- tracing: one trace per analysis (plantnotify/tracing.py) ---------------------------
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP collector base URL (spans to `{url}/v1/traces`); unset: no export.",
    )
    trace_retention_days: int = Field(
        7,
        ge=1,
        description="Days the delivery timeline's own records (N8N attempts, receipts) are kept.",
    )

    @field_validator("database_url")
    @classmethod
    def _database_driver(cls, value: str) -> str:
        return normalize_database_url(value)

    @field_validator("fcm_web_config")
    @classmethod
    def _firebase_web_config(cls, value: str | None) -> str | None:
        if not value:
            return None
        try:
            parsed = json.loads(value)
        except ValueError:
            raise ValueError("FCM_WEB_CONFIG must be the Firebase web app config as JSON") from None
        missing = {"apiKey", "projectId", "messagingSenderId", "appId"} - set(
            parsed if isinstance(parsed, dict) else {}
        )
        if missing:
            raise ValueError(f"FCM_WEB_CONFIG lacks {', '.join(sorted(missing))}")
        return value

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        # JWT_SECRET and the MQTT keys are checked per part (refuse_unsafe_production): the
        # broker is given no JWT_SECRET at all in production, only the MQTT public key.
        if self.environment == "production" and "*" in self.cors_origin_list:
            raise ConfigError("CORS_ORIGINS must list origins explicitly, not '*'")
        for name in ("auth_jwt_algorithm", "mqtt_jwt_algorithm"):
            if getattr(self, name) not in SUPPORTED_ALGORITHMS:
                raise ConfigError(
                    f"{name.upper()}={getattr(self, name)!r} is not supported; "
                    f"use one of {', '.join(SUPPORTED_ALGORITHMS)}"
                )
        for origin in self.cors_origin_list:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"CORS_ORIGINS entry {origin!r} is not an origin; write scheme://host[:port] "
                    "without a path, e.g. https://app.example"
                )
        if self.mqtt_jwt_algorithm == "HS256" and len(self.jwt_secret) < MIN_HS256_SECRET_BYTES:
            raise ConfigError(
                f"JWT_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes "
                "(e.g. `openssl rand -hex 32`)"
            )
        return self

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    @property
    def can_mint_mqtt_tokens(self) -> bool:
        """False where only the public key is given (the broker's container in production)."""
        return self.mqtt_jwt_algorithm == "HS256" or self.mqtt_jwt_private_key_file is not None

    @cached_property
    def mqtt_signer(self) -> MqttSigner:
        if self.mqtt_jwt_algorithm == "HS256":
            key: str | bytes = self.jwt_secret
        else:
            if not self.mqtt_jwt_private_key_file:
                raise ConfigError(
                    f"MQTT_JWT_ALGORITHM={self.mqtt_jwt_algorithm} needs MQTT_JWT_PRIVATE_KEY_FILE"
                )
            key = self.mqtt_jwt_private_key_file.read_bytes()
        return MqttSigner(
            key=key,
            algorithm=self.mqtt_jwt_algorithm,
            audience=self.mqtt_audience,
            issuer=self.mqtt_issuer,
        )

    @property
    def mqtt_failover(self) -> list[tuple[str, int]]:
        out = []
        for item in self.mqtt_failover_hosts.split(","):
            host, _, port = item.strip().rpartition(":")
            if host and port.isdigit():
                out.append((host, int(port)))
        return out

    @property
    def nats_url_list(self) -> list[str]:
        return [u.strip() for u in self.nats_urls.split(",") if u.strip()]

    @property
    def mqtt_protocol(self) -> Literal[4, 5]:
        """The MQTT protocol level services use: 5 on Mosquitto, 3.1.1 (4) on NATS."""
        return 4 if self.broker_engine == "nats" else 5

    @property
    def mqtt_public_ws_url(self) -> str:
        if self.mqtt_ws_url:
            return self.mqtt_ws_url
        return f"ws://{self.mqtt_public_host or self.mqtt_host}:{self.mqtt_ws_port}/mqtt"


# What each part needs configured in production, beyond what Settings checks for every part.
# A part is refused only for what it uses: the broker (the internet-facing container) is given
# no database or RabbitMQ credentials at all, so it must not be asked for them.
# "jwt_secret": signs access tokens (and the NATS engine's keys); "mqtt_private_key": mints MQTT
# tokens; "mqtt_public_key": verifies them (the broker, the NATS auth callout).
PRODUCTION_NEEDS: dict[str, tuple[str, ...]] = {
    "api": ("rabbitmq", "jwt_secret", "mqtt_private_key"),
    "worker": ("rabbitmq", "n8n", "mqtt_private_key"),
    "bridge": ("fcm", "mqtt_private_key"),
    "broker-metrics": ("mqtt_private_key",),
    "broker": ("mqtt_public_key",),
    "auth-callout": ("mqtt_public_key",),
}
# Parts that derive the NATS engine's keys from JWT_SECRET when BROKER_ENGINE=nats.
NATS_SECRET_PARTS = ("broker", "auth-callout", "bridge")


def refuse_unsafe_production(settings: Settings, part: str) -> None:
    """Refuse development conveniences that would be wrong, or open, for ``part`` in production.

    Called by the CLI before a part starts (``plantnotify api|worker|bridge|broker|auth-callout``);
    a no-op outside
    production. ``part="all"`` checks what the whole stack needs (``plantnotify config``).
    """
    if settings.environment != "production":
        return
    needs = (
        {n for ns in PRODUCTION_NEEDS.values() for n in ns}
        if part == "all"
        else set(PRODUCTION_NEEDS.get(part, ()))
    )
    if settings.broker_engine == "nats" and (part == "all" or part in NATS_SECRET_PARTS):
        needs.add("jwt_secret")
        if part == "broker":  # the NATS nodes verify no MQTT token; their callouts do
            needs.discard("mqtt_public_key")
    if "jwt_secret" in needs and settings.jwt_secret == DEV_JWT_SECRET:
        raise ConfigError(
            "JWT_SECRET is the development default; set JWT_SECRET to a random value "
            "of at least 32 bytes (e.g. `openssl rand -hex 32`) or ENVIRONMENT=development"
        )
    if "n8n" in needs and not settings.n8n_webhook_url:
        raise ConfigError(
            "N8N_WEBHOOK_URL is unset, so analyses would go to the development stand-in; "
            "set N8N_WEBHOOK_URL to your N8N workflow's webhook, or ENVIRONMENT=development"
        )
    if "fcm" in needs and not settings.fcm_credentials_file:
        raise ConfigError(
            "FCM_CREDENTIALS_FILE is unset, so pushes would go to the local FCM emulator; set it "
            "to the Firebase service-account JSON file, or ENVIRONMENT=development"
        )
    if "rabbitmq" in needs and _uses_guest_account(settings.rabbitmq_url):
        raise ConfigError(
            "RABBITMQ_URL uses RabbitMQ's default guest account; create a RabbitMQ user with its "
            "own password and put both in RABBITMQ_URL, or ENVIRONMENT=development"
        )
    _refuse_symmetric_mqtt_tokens(settings, needs)


def _refuse_symmetric_mqtt_tokens(settings: Settings, needs: set[str]) -> None:
    """Production MQTT tokens are asymmetric: the internet-facing broker verifies them with a
    public key and can mint nothing (issue 14, finding 8)."""
    keys = needs & {"mqtt_private_key", "mqtt_public_key"}
    if not keys:
        return
    how = (
        "set MQTT_JWT_ALGORITHM=ES256 with MQTT_JWT_PRIVATE_KEY_FILE for the api, worker and "
        "bridge and MQTT_JWT_PUBLIC_KEY_FILE for the broker (`plantnotify keygen DIR` writes "
        "a key pair), or ENVIRONMENT=development"
    )
    if settings.mqtt_jwt_algorithm == "HS256":
        raise ConfigError(
            "MQTT_JWT_ALGORITHM is HS256: MQTT tokens would be signed with JWT_SECRET, which the "
            f"internet-facing broker would then hold and which also signs access tokens; {how}"
        )
    if "mqtt_private_key" in keys and settings.mqtt_jwt_private_key_file is None:
        raise ConfigError(
            f"MQTT_JWT_PRIVATE_KEY_FILE is unset, so no MQTT token can be minted; {how}"
        )
    if "mqtt_public_key" in keys and settings.mqtt_jwt_public_key_file is None:
        raise ConfigError(
            f"MQTT_JWT_PUBLIC_KEY_FILE is unset, so no MQTT token can be verified; {how}"
        )


# scheme://host[:port]; the host may be a bracketed IPv6 address. No path, no trailing slash.
_ORIGIN = re.compile(r"https?://(\[[0-9A-Fa-f:.]+\]|[^/\s:\[\]]+)(:\d{1,5})?")


def _uses_guest_account(url: str) -> bool:
    parsed = urlsplit(url)
    return (parsed.username or "guest") == "guest" and (parsed.password or "guest") == "guest"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (tests, the CLI).

    Raises ConfigError with one line per problem, naming the variable and never echoing values:
    pydantic's own message would print (part of) the input, which may be a secret.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]).upper()
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)
