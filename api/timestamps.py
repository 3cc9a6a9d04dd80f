"""ISO 8601 query parameters (``since``, ``before``)."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_timestamp(raw: str) -> datetime:
    """An ISO 8601 time; naive times are UTC. Raises ``ValueError`` with a reason.

    An unencoded ``+`` in a query string arrives as a space (``...T10:00:00 02:00``); that one
    client mistake is repaired, since nothing else could have been meant.
    """
    text = raw.strip()
    if not text:
        raise ValueError("empty time")
    if len(text) > 40:
        raise ValueError("time too long")
    if " " in text and "T" in text:
        head, _, tail = text.rpartition(" ")
        text = f"{head}+{tail}"
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value
