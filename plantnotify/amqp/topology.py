"""The queues and exchanges of the analysis pipeline, declared the same way by every side.

- ``ANALYSIS_QUEUE``: a quorum queue (replicated Raft log, fsync'd before the publisher confirm).
  ``x-delivery-limit``: a job that was handed out that many times without an ack (its worker
  crashed or rejected it) is dead-lettered instead of looping forever.
- ``DEAD_LETTER_EXCHANGE`` (fanout) -> ``DEAD_LETTER_QUEUE`` (quorum): poison messages and jobs
  past the delivery limit. ``x-dead-letter-strategy: at-least-once`` makes RabbitMQ move them
  with confirms internally (the default at-most-once strategy may lose them); it requires
  ``x-overflow: reject-publish``, which also means a full queue *nacks* new publishes rather
  than silently dropping the oldest job.

Declaring is idempotent; declaring with different arguments fails with PRECONDITION_FAILED, so
the arguments live only here.
"""

from __future__ import annotations

from typing import Any

from pika.adapters.blocking_connection import BlockingChannel

from plantnotify.contracts.queues import (
    ANALYSIS_QUEUE,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DELIVERY_LIMIT,
)

DEAD_LETTER_EXCHANGE_TYPE = "fanout"


def analysis_queue_arguments() -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": DELIVERY_LIMIT,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def dead_letter_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


def declare_topology(channel: BlockingChannel) -> None:
    """Declare the dead-letter exchange and queue, then the analysis queue (pika blocking)."""
    channel.exchange_declare(
        exchange=DEAD_LETTER_EXCHANGE, exchange_type=DEAD_LETTER_EXCHANGE_TYPE, durable=True
    )
    channel.queue_declare(
        queue=DEAD_LETTER_QUEUE, durable=True, arguments=dead_letter_queue_arguments()
    )
    channel.queue_bind(queue=DEAD_LETTER_QUEUE, exchange=DEAD_LETTER_EXCHANGE, routing_key="")
    channel.queue_declare(queue=ANALYSIS_QUEUE, durable=True, arguments=analysis_queue_arguments())
