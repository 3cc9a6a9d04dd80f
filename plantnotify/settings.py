"""The one Settings class, read from the environment (contract §7).

Every variable of the contract is here, with its default. ``ENVIRONMENT`` is ``development``
by default; anywhere else the development secret is refused at start-up with a message that
says what to set.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from plantnotify.contracts.claims import (
    DEFAULT_MQTT_AUDIENCE,
    MIN_HS256_SECRET_BYTES,
    MqttSigner,
)

DEV_JWT_SECRET = "dev-only-insecure-secret-change-me-0123456789"  # noqa: S105 (refused outside dev)


class ConfigError(ValueError):
    """A configuration problem; the message says what to set."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

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
    startup_timeout_seconds: float = Field(
        30.0, ge=0, description="How long a service waits for its dependencies at start-up."
    )

    # --- storage and queue ------------------------------------------------------------------
    database_url: str = Field(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/plantnotify",
        description="PostgreSQL URL; the database is created and migrated if missing.",
    )
    rabbitmq_url: str = Field("amqp://guest:guest@127.0.0.1:5672/%2F", description="RabbitMQ URL.")

    # --- tokens -----------------------------------------------------------------------------
    jwt_secret: str = Field(
        DEV_JWT_SECRET,
        description="HS256 secret (>= 32 bytes) for access tokens and MQTT tokens.",
    )
    access_token_ttl_seconds: int = Field(3600, description="Lifetime of API access tokens.")
    auth_jwt_algorithm: str = Field("HS256", description="Algorithm of accepted access tokens.")
    auth_jwt_public_key_file: Path | None = Field(
        None, description="PEM public key for an external identity provider's RS256/ES256 tokens."
    )
    auth_jwt_issuer: str | None = Field(None, description="Required `iss` of access tokens.")
    auth_jwt_audience: str | None = Field(None, description="Required `aud` of access tokens.")
    auth_user_id_claim: str = Field("sub", description="Claim holding the user id, e.g. `userId`.")

    mqtt_jwt_algorithm: str = Field("HS256", description="MQTT token algorithm (plugin pins it).")
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
    mqtt_expiry_check_seconds: int = Field(2, ge=1, description="How often expired are kicked.")
    mqtt_leeway_seconds: int = Field(5, ge=0, le=60, description="Clock leeway for exp/nbf/iat.")
    mqtt_data_dir: Path = Field(Path(".run/mosquitto"), description="Broker persistence dir.")
    mqtt_plugin_path: Path | None = Field(None, description="Built plugin .so (auto-found).")
    event_expiry_seconds: int = Field(
        7 * 86400, description="MQTT 5 message expiry of retained events."
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

    # --- bridge / FCM -----------------------------------------------------------------------
    fcm_credentials_file: Path | None = Field(
        None, description="Service-account JSON; unset: the local FCM emulator."
    )
    fcm_endpoint: str | None = Field(
        None, description="Base URL replacing https://fcm.googleapis.com (emulator, tests)."
    )
    fcm_emulator_port: int = Field(8200, description="Port of the local FCM emulator.")
    fallback_grace_seconds: float = Field(
        10.0, ge=0, description="Wait for a receipt before pushing to a live user."
    )
    metrics_port_worker: int = Field(9101, description="Prometheus port of the worker.")
    metrics_port_bridge: int = Field(9102, description="Prometheus port of the bridge.")

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.environment == "production":
            if self.jwt_secret == DEV_JWT_SECRET:
                raise ConfigError(
                    "JWT_SECRET is the development default; set JWT_SECRET to a random value "
                    "of at least 32 bytes (e.g. `openssl rand -hex 32`) or ENVIRONMENT=development"
                )
            if "*" in self.cors_origin_list:
                raise ConfigError("CORS_ORIGINS must list origins explicitly, not '*'")
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
    def mqtt_public_ws_url(self) -> str:
        if self.mqtt_ws_url:
            return self.mqtt_ws_url
        return f"ws://{self.mqtt_public_host or self.mqtt_host}:{self.mqtt_ws_port}/mqtt"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (tests, the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
