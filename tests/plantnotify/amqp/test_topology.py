"""The shared topology on real RabbitMQ: idempotent, rejected jobs and jobs past the delivery
limit really reach the dead-letter queue."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from plantnotify.amqp.topology import declare_topology
from plantnotify.contracts.queues import ANALYSIS_QUEUE, DEAD_LETTER_QUEUE, DELIVERY_LIMIT
from tests.support.net import wait_for
from tests.support.rabbit import drain


@pytest.fixture
def channel(api_rabbitmq_url: str) -> Iterator[BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(api_rabbitmq_url))
    ch = connection.channel()
    declare_topology(ch)
    declare_topology(ch)  # idempotent: same arguments, no PRECONDITION_FAILED
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    drain(api_rabbitmq_url, DEAD_LETTER_QUEUE)
    yield ch
    connection.close()


def _get(ch: BlockingChannel, queue: str) -> tuple[object, object, bytes]:
    return wait_for(
        lambda: (r := ch.basic_get(queue)) and r[0] is not None and r, what=f"a message on {queue}"
    )


def test_rejected_job_is_dead_lettered(channel: BlockingChannel) -> None:
    channel.confirm_delivery()
    channel.basic_publish("", ANALYSIS_QUEUE, b"poison", mandatory=True)
    method, _, _ = _get(channel, ANALYSIS_QUEUE)
    channel.basic_reject(method.delivery_tag, requeue=False)  # type: ignore[attr-defined]
    _, _, body = _get(channel, DEAD_LETTER_QUEUE)
    assert body == b"poison"


def test_job_past_the_delivery_limit_is_dead_lettered(channel: BlockingChannel) -> None:
    channel.confirm_delivery()
    channel.basic_publish("", ANALYSIS_QUEUE, b"crashes-its-worker", mandatory=True)
    for _ in range(DELIVERY_LIMIT + 1):
        method, _, _ = _get(channel, ANALYSIS_QUEUE)
        channel.basic_nack(method.delivery_tag, requeue=True)  # type: ignore[attr-defined]
    _, _, body = _get(channel, DEAD_LETTER_QUEUE)
    assert body == b"crashes-its-worker"
    assert channel.basic_get(ANALYSIS_QUEUE)[0] is None
