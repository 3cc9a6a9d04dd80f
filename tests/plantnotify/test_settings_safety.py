"""Unsafe configuration is refused outside development, with a message that names the variable
and says what to set, and never echoes a value (which may be a secret)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from plantnotify.settings import (
    DEV_JWT_SECRET,
    PRODUCTION_NEEDS,
    ConfigError,
    Settings,
    load_settings,
    refuse_unsafe_production,
)

SECRET = "prod-secret-" + "a1" * 20
PRODUCTION_READY = {
    "environment": "production",
    "jwt_secret": SECRET,
    "rabbitmq_url": "amqp://plantnotify:rabbit-pass-123@rabbitmq:5672/%2F",
    "n8n_webhook_url": "https://n8n.example/webhook/plant",
    "fcm_credentials_file": "/run/secrets/plantnotify/fcm.json",
    "mqtt_jwt_algorithm": "ES256",
    "mqtt_jwt_private_key_file": "/run/secrets/mqtt_jwt_private_key",
    "mqtt_jwt_public_key_file": "/run/secrets/mqtt_jwt_public_key",
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def production(**changes: object) -> Settings:
    return load_settings(**{**PRODUCTION_READY, **changes})


def test_a_complete_production_configuration_is_accepted_by_every_part() -> None:
    settings = production()
    for part in [*PRODUCTION_NEEDS, "migrate", "all"]:
        refuse_unsafe_production(settings, part)


@pytest.mark.parametrize("part", ["api", "all"])
def test_development_secret_refused_in_production(part: str) -> None:
    with pytest.raises(ConfigError, match="JWT_SECRET is the development default") as info:
        refuse_unsafe_production(production(jwt_secret=DEV_JWT_SECRET), part)
    assert DEV_JWT_SECRET not in str(info.value)
    assert "openssl rand -hex 32" in str(info.value)


@pytest.mark.parametrize(
    "part", ["api", "worker", "bridge", "broker", "broker-metrics", "auth-callout", "all"]
)
def test_hs256_mqtt_tokens_refused_in_production(part: str) -> None:
    """Finding 8: with HS256 the internet-facing broker would hold the secret that signs MQTT
    tokens and access tokens alike."""
    with pytest.raises(ConfigError, match="MQTT_JWT_ALGORITHM is HS256") as info:
        refuse_unsafe_production(production(mqtt_jwt_algorithm="HS256"), part)
    message = str(info.value)
    for what in ("MQTT_JWT_PRIVATE_KEY_FILE", "MQTT_JWT_PUBLIC_KEY_FILE", "plantnotify keygen"):
        assert what in message
    assert "ENVIRONMENT=development" in message


@pytest.mark.parametrize(
    ("part", "missing"),
    [
        ("api", "mqtt_jwt_private_key_file"),
        ("worker", "mqtt_jwt_private_key_file"),
        ("bridge", "mqtt_jwt_private_key_file"),
        ("broker", "mqtt_jwt_public_key_file"),
        ("auth-callout", "mqtt_jwt_public_key_file"),
    ],
)
def test_each_part_needs_its_half_of_the_key_pair(part: str, missing: str) -> None:
    with pytest.raises(ConfigError, match=missing.upper()):
        refuse_unsafe_production(production(**{missing: None}), part)


def test_broker_runs_with_the_public_key_alone() -> None:
    """The broker is given neither JWT_SECRET nor the private key in production."""
    settings = production(jwt_secret=DEV_JWT_SECRET, mqtt_jwt_private_key_file=None)
    refuse_unsafe_production(settings, "broker")
    assert not settings.can_mint_mqtt_tokens
    nats = production(broker_engine="nats", jwt_secret=DEV_JWT_SECRET)
    with pytest.raises(ConfigError, match="JWT_SECRET"):  # the NATS engine's keys come from it
        refuse_unsafe_production(nats, "broker")


def test_wildcard_cors_refused_in_production() -> None:
    with pytest.raises(ConfigError, match="CORS_ORIGINS must list origins explicitly"):
        production(cors_origins="https://app.example,*")


@pytest.mark.parametrize(
    ("part", "change", "variable"),
    [
        ("worker", {"n8n_webhook_url": None}, "N8N_WEBHOOK_URL"),
        ("bridge", {"fcm_credentials_file": None}, "FCM_CREDENTIALS_FILE"),
        ("api", {"rabbitmq_url": "amqp://guest:guest@rabbitmq:5672/%2F"}, "RABBITMQ_URL"),
        ("worker", {"rabbitmq_url": "amqp://rabbitmq:5672/%2F"}, "RABBITMQ_URL"),
        ("all", {"n8n_webhook_url": None}, "N8N_WEBHOOK_URL"),
    ],
)
def test_part_refuses_what_it_would_run_unsafely_with(
    part: str, change: dict[str, object], variable: str
) -> None:
    settings = production(**change)
    with pytest.raises(ConfigError, match=variable) as info:
        refuse_unsafe_production(settings, part)
    assert "ENVIRONMENT=development" in str(info.value), "the message says the way out"


@pytest.mark.parametrize(
    ("part", "change"),
    [
        ("api", {"n8n_webhook_url": None, "fcm_credentials_file": None}),
        ("bridge", {"n8n_webhook_url": None}),
        # The broker is given no RabbitMQ, N8N or FCM settings at all (least privilege).
        ("broker", {"n8n_webhook_url": None, "fcm_credentials_file": None, "rabbitmq_url": ""}),
    ],
)
def test_part_is_not_refused_for_what_it_does_not_use(part: str, change: dict[str, object]) -> None:
    refuse_unsafe_production(production(**change), part)


def test_development_keeps_its_conveniences() -> None:
    settings = load_settings(environment="development")
    assert settings.jwt_secret == DEV_JWT_SECRET
    for part in [*PRODUCTION_NEEDS, "all"]:
        refuse_unsafe_production(settings, part)


@pytest.mark.parametrize("environment", ["development", "production"])
@pytest.mark.parametrize("origin", ["app.example", "https://app.example/", "https://a.example/x"])
def test_cors_entries_must_be_origins(environment: str, origin: str) -> None:
    with pytest.raises(ConfigError, match="is not an origin"):
        load_settings(**{**PRODUCTION_READY, "environment": environment, "cors_origins": origin})


def test_cors_origins_accepted() -> None:
    settings = load_settings(
        cors_origins="https://app.example, http://localhost:5173,http://[::1]:8080"
    )
    assert settings.cors_origin_list == [
        "https://app.example",
        "http://localhost:5173",
        "http://[::1]:8080",
    ]


@pytest.mark.parametrize("variable", ["auth_jwt_algorithm", "mqtt_jwt_algorithm"])
@pytest.mark.parametrize("algorithm", ["none", "HS512", "hs256"])
def test_unknown_token_algorithms_refused_everywhere(variable: str, algorithm: str) -> None:
    with pytest.raises(ConfigError, match=variable.upper()):
        load_settings(**{variable: algorithm})


def test_errors_name_the_variable_and_never_echo_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "short-secret-xyzzy"
    monkeypatch.setenv("JWT_SECRET", short)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "JWT_SECRET must be at least 32 bytes" in str(info.value)
    assert short not in str(info.value)

    monkeypatch.setenv("JWT_SECRET", SECRET)
    monkeypatch.setenv("MAX_UPLOAD_MB", "lots-" + SECRET)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("MAX_UPLOAD_MB: ")
    assert SECRET not in str(info.value)


def test_empty_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """docker-compose's `${VAR:-}` gives an empty string: that is the default, not ''."""
    for name in ("N8N_WEBHOOK_URL", "FCM_ENDPOINT", "FALLBACK_GRACE_SECONDS", "LOG_LEVEL"):
        monkeypatch.setenv(name, "")
    settings = load_settings()
    assert settings.n8n_webhook_url is None
    assert settings.fcm_endpoint is None
    assert (
        settings.fallback_grace_seconds == Settings.model_fields["fallback_grace_seconds"].default
    )
    assert settings.log_level == "INFO"


def test_repr_hides_secrets_and_urls_with_passwords() -> None:
    settings = production(database_url="postgresql+psycopg2://pn:db-pass-987@postgres/pn")
    text = repr(settings) + str(settings)
    for secret in (SECRET, "db-pass-987", "rabbit-pass-123"):
        assert secret not in text


def test_cli_refuses_with_one_clear_line_and_exit_status_2() -> None:
    env = {k: v for k, v in os.environ.items() if k.lower() not in Settings.model_fields}
    env.update(ENVIRONMENT="production", JWT_SECRET=DEV_JWT_SECRET)
    result = subprocess.run(
        [sys.executable, "-m", "plantnotify.cli", "api"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "plantnotify api: configuration refused: JWT_SECRET" in result.stderr
    assert DEV_JWT_SECRET not in result.stderr
