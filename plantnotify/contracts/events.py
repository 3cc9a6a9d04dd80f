"""Event payloads (contract §4): MQTT payload, ``GET /notifications`` items and FCM ``data``.

Events become these types at every boundary; raw dicts do not travel through the code.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

MAX_EVENT_BYTES = 1024  # contract: a payload stays under 1 KiB
MAX_RECEIPT_BYTES = 256


class EventType(StrEnum):
    COMPLETED = "AnalysisCompleted"
    FAILED = "AnalysisFailed"
    PROGRESS = "AnalysisProgress"


class AnalysisStatus(StrEnum):
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    FAILED = "Failed"


# Only terminal events may cause a push; progress never does (contract §4).
PUSHABLE_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED})


def new_event_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


def deep_link(analysis_id: str) -> str:
    return f"app://analysis/{analysis_id}"


class _Wire(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown fields are kept out."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True).encode()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class _EventBase(_Wire):
    event_id: str = Field(default_factory=new_event_id, min_length=1, max_length=64)
    analysis_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=64)
    # The analysis' trace (W3C trace id); added to the contract additively, so optional and
    # left out of the payload when unknown (analyses from before tracing).
    trace_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")

    def _exclude(self) -> set[str] | None:
        return {"trace_id"} if self.trace_id is None else None

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude=self._exclude()).encode()

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude=self._exclude())


class AnalysisCompleted(_EventBase):
    event: Literal[EventType.COMPLETED] = EventType.COMPLETED
    status: Literal[AnalysisStatus.COMPLETED] = AnalysisStatus.COMPLETED
    completed_at: datetime = Field(default_factory=utcnow)
    crop_type: str | None = Field(default=None, max_length=64)
    primary_concern: str | None = Field(default=None, max_length=200)
    overall_health_score: int | None = Field(default=None, ge=0, le=100)
    image_url: str = Field(max_length=256)
    deep_link: str = ""

    def model_post_init(self, __context: Any) -> None:
        if not self.deep_link:
            object.__setattr__(self, "deep_link", deep_link(self.analysis_id))


class AnalysisFailed(_EventBase):
    event: Literal[EventType.FAILED] = EventType.FAILED
    status: Literal[AnalysisStatus.FAILED] = AnalysisStatus.FAILED
    failed_at: datetime = Field(default_factory=utcnow)
    error_message: str = Field(max_length=300)


class AnalysisProgress(_EventBase):
    event: Literal[EventType.PROGRESS] = EventType.PROGRESS
    status: Literal[AnalysisStatus.PROCESSING] = AnalysisStatus.PROCESSING
    progress: int = Field(ge=0, le=100)
    stage: str = Field(max_length=64)


Event = Annotated[
    AnalysisCompleted | AnalysisFailed | AnalysisProgress, Field(discriminator="event")
]
_EVENT_ADAPTER: TypeAdapter[AnalysisCompleted | AnalysisFailed | AnalysisProgress] = TypeAdapter(
    Event
)


class InvalidPayload(ValueError):
    """A payload that is not one of ours; carries a short reason for logs."""


def parse_event(
    raw: bytes | str | dict[str, Any],
) -> AnalysisCompleted | AnalysisFailed | AnalysisProgress:
    try:
        if isinstance(raw, dict):
            return _EVENT_ADAPTER.validate_python(raw)
        if len(raw) > MAX_EVENT_BYTES * 4:
            raise InvalidPayload("event payload too large")
        return _EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        raise InvalidPayload(f"not an event: {exc.errors()[0]['msg']}") from None


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Transport(StrEnum):
    """How a device got an event: MQTT over TCP, MQTT over WebSocket, or an FCM push."""

    TCP = "tcp"
    WS = "ws"
    PUSH = "push"


class Receipt(_Wire):
    """``users/{userId}/receipts`` payload: "this device has the event".

    Only ``eventId`` is required. A device may add when it received the event (``receivedAt``,
    its clock, milliseconds since the epoch), how (``transport``) and who it is (``clientId``,
    its MQTT client id): the delivery timeline and the completion → device latency use them.
    """

    event_id: str = Field(min_length=1, max_length=64)
    received_at: int | None = Field(default=None, ge=0, le=2**53)
    transport: Transport | None = None
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,130}$")

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()


def parse_receipt(raw: bytes) -> Receipt:
    if len(raw) > MAX_RECEIPT_BYTES:
        raise InvalidPayload("receipt too large")
    try:
        return Receipt.model_validate_json(raw)
    except ValidationError as exc:
        raise InvalidPayload(f"not a receipt: {exc.errors()[0]['msg']}") from None


class SessionSnapshot(_Wire):
    """Published (not retained) on ``plantnotify/sessions/{userId}`` by the broker plugin when
    the user's live connections change.

    ``connections`` is the number of live MQTT connections of the user on the broker boot
    ``boot_id``; a snapshot whose boot id is not the current one is stale (broker restarted).
    When the last connection goes, the offline snapshot (``connections`` 0) is published. The
    whole picture (who is online now) is a :class:`SessionsPicture`, sent on request.
    """

    user_id: str
    boot_id: str
    connections: int = Field(ge=0)
    client_ids: list[str] = Field(default_factory=list)
    seq: int = 0
    at: int = 0  # unix seconds


class PersistentSessionOpened(_Wire):
    """Published by the broker plugin on ``plantnotify/broker/persistent-sessions`` for every
    accepted user CONNECT that does not start clean: ``client_id`` of ``user_id`` now has a
    session that outlives the connection (``at``: unix milliseconds, the broker's clock)."""

    user_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    client_id: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,130}$")
    at: int = Field(ge=0)


class SessionChanges(_Wire):
    """Published (not retained) on ``plantnotify/broker/session-changes`` by the plugin: the
    snapshots of one TICK (also published one by one on ``plantnotify/sessions/{userId}``),
    oldest first, so a follower gets a burst of changes as a few messages."""

    boot_id: str
    sessions: list[SessionSnapshot] = Field(default_factory=list)


class SessionEntry(_Wire):
    """One online user in a :class:`SessionsPicture`."""

    user_id: str
    connections: int = Field(ge=0)
    client_ids: list[str] = Field(default_factory=list)


class SessionsPicture(_Wire):
    """One part of the whole picture, sent by the plugin to the service that asked for it on
    ``$CONTROL/plantnotify/sessions`` (payload: its ``request_id``), on
    ``plantnotify/broker/sessions``, to that client only.

    Every online user of boot ``boot_id`` is in exactly one of the ``parts`` parts (numbered
    from 1; at most 32, so they never overflow a client's queue); users in none are offline.
    The picture is as of ``seq`` in the sequence of :class:`SessionSnapshot`: a snapshot with a
    higher ``seq`` is newer than the picture, one with a lower or equal ``seq`` is not.
    """

    boot_id: str
    request_id: str
    seq: int = Field(ge=0)
    at: int = 0  # unix seconds
    part: int = Field(ge=1)
    parts: int = Field(ge=1)
    sessions: list[SessionEntry] = Field(default_factory=list)


class ConnectCounts(_Wire):
    """CONNECT outcomes counted by the plugin since the broker started (see BrokerStats)."""

    accepted: int = Field(0, ge=0)
    expired: int = Field(0, ge=0)  # a token past its exp: an app that did not refresh in time
    invalid_token: int = Field(0, ge=0)  # signature, audience, algorithm, malformed ...
    identity: int = Field(0, ge=0)  # username or client id not the token's user, id taken
    limit: int = Field(0, ge=0)  # MQTT_MAX_CONNECTIONS_PER_USER reached
    error: int = Field(0, ge=0)  # the broker's own failure


class BrokerStats(_Wire):
    """Retained on ``plantnotify/broker/stats`` by the plugin, every few seconds when it changed.

    Counters restart from zero with each ``boot_id``; ``live`` is the number of live
    authenticated connections (users and services).
    """

    boot_id: str
    at: int  # unix seconds
    live: int = Field(ge=0)
    connects: ConnectCounts


class BrokerBoot(_Wire):
    """Retained on ``plantnotify/broker/boot`` by the plugin when the broker starts."""

    boot_id: str
    started_at: int  # unix seconds
