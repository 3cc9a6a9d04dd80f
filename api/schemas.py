"""Request and response bodies: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from plantnotify.contracts.events import AnalysisStatus

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,63}$"
# Free text (passwords): anything but NUL, which nothing stores (see ApiModel).
TEXT_PATTERN = r"^[^\x00]*$"
PASSWORD_MIN = 8
PASSWORD_MAX = 256  # Argon2 hashes anything, but nobody needs a megabyte password
DEVICE_TOKEN_PATTERN = r"^[A-Za-z0-9_:.-]{1,4096}$"  # noqa: S105 (a pattern)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    @model_validator(mode="after")
    def _storable_text(self) -> Self:
        """No NUL or lone surrogate in any string: PostgreSQL cannot store them (they used to
        come back as a bare 500) and no real input has them."""
        for name, value in self.__dict__.items():
            if isinstance(value, str) and _UNSTORABLE.search(value):
                raise ValueError(f"{name}: contains a NUL or an unpaired surrogate character")
        return self


class ErrorResponse(ApiModel):
    detail: str = Field(description="What went wrong and what to do about it.")


class FieldError(ApiModel):
    field: str = Field(description="The field, dotted (`image`, `username`, `before`).")
    message: str
    type: str | None = Field(description="Machine-readable kind, e.g. `missing`.")


class ValidationErrorResponse(ApiModel):
    """What a 422 carries (``api/errors.py``)."""

    detail: str = Field(description="Every problem in one sentence.")
    errors: list[FieldError] = Field(
        default_factory=list,
        description="One entry per field (absent when the route itself refused the input).",
    )


# --- auth -------------------------------------------------------------------------------


class RegisterRequest(ApiModel):
    username: str = Field(
        pattern=USERNAME_PATTERN,
        description="3-64 characters: letters, digits, `_`, `.`, `-`; starts with a letter or "
        "digit. Case-insensitive (stored in lower case).",
        examples=["farmer.jo"],
    )
    password: str = Field(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=TEXT_PATTERN)


class RegisterResponse(ApiModel):
    user_id: str
    username: str


class LoginRequest(ApiModel):
    username: str = Field(min_length=1, max_length=64, pattern=TEXT_PATTERN)
    password: str = Field(min_length=1, max_length=PASSWORD_MAX, pattern=TEXT_PATTERN)


class LoginResponse(ApiModel):
    access_token: str
    refresh_token: str = Field(
        description="Spend it at `POST /auth/refresh` for new tokens before the access token "
        "expires; each refresh token works once (a reused one ends the login session)."
    )
    token_type: Literal["bearer"] = "bearer"  # noqa: S105
    expires_in: int = Field(description="Seconds until the access token expires.")
    refresh_expires_in: int = Field(
        description="Seconds the login session lasts without a refresh (each refresh renews it)."
    )
    user_id: str


REFRESH_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{16,256}$"  # noqa: S105 (a pattern)


class RefreshRequest(ApiModel):
    refresh_token: str = Field(pattern=REFRESH_TOKEN_PATTERN)


class LogoutRequest(ApiModel):
    refresh_token: str | None = Field(
        None,
        pattern=REFRESH_TOKEN_PATTERN,
        description="This device's refresh token; without it, the bearer token's session ends.",
    )


class PasswordChangeRequest(ApiModel):
    current_password: str = Field(min_length=1, max_length=PASSWORD_MAX, pattern=TEXT_PATTERN)
    new_password: str = Field(
        min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=TEXT_PATTERN
    )


# --- realtime ---------------------------------------------------------------------------


class MqttEndpoints(ApiModel):
    host: str
    port: int = Field(description="MQTT/TCP port.")
    ws_url: str = Field(description="MQTT-over-WebSocket URL for browsers.")
    protocol_version: int = Field(
        5,
        description="MQTT protocol level to connect with: 5 on Mosquitto, 4 (3.1.1) on the "
        "clustered engine (NATS refuses MQTT 5).",
    )


class RealtimeTopics(ApiModel):
    analyses: str = Field(description="Filter to subscribe to (QoS 1): `users/{id}/analyses/+`.")
    receipts: str = Field(description='Where to publish `{"eventId"}` receipts (QoS 1).')


class RealtimeTokenResponse(ApiModel):
    token: str = Field(description="MQTT password (a JWT); the MQTT username is `username`.")
    username: str = Field(description="MQTT username: the user id.")
    client_id_prefix: str = Field(
        description="MQTT client ids must start with this (or equal the user id)."
    )
    expires_in: int
    mqtt: MqttEndpoints
    topics: RealtimeTopics


# --- analyses ---------------------------------------------------------------------------


class UploadAccepted(ApiModel):
    analysis_id: str
    status: Literal[AnalysisStatus.PROCESSING] = AnalysisStatus.PROCESSING


class AnalysisOut(ApiModel):
    analysis_id: str
    status: AnalysisStatus
    crop_type: str | None
    primary_concern: str | None
    overall_health_score: int | None
    result: dict[str, Any] | None = Field(description="The analyzer's whole answer, once done.")
    error_message: str | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    image_url: str


# --- devices ----------------------------------------------------------------------------


class Platform(StrEnum):
    ANDROID = "android"
    IOS = "ios"
    WEB = "web"


class DeviceIn(ApiModel):
    token: str = Field(
        pattern=DEVICE_TOKEN_PATTERN,
        description="FCM registration token (letters, digits, `_ : . -`; at most 4096).",
    )
    platform: Platform


class DeviceOut(ApiModel):
    token: str
    platform: Platform


# --- health -----------------------------------------------------------------------------


class Liveness(ApiModel):
    status: Literal["ok"] = "ok"


class Readiness(ApiModel):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description="`ok`, or why the dependency is not reachable.")
