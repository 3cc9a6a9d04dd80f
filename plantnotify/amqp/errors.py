"""Errors of the RabbitMQ boundary. pika's exceptions never travel past ``plantnotify.amqp``."""

from __future__ import annotations


class AmqpError(Exception):
    """Base class of RabbitMQ problems; the message says what happened and what to do."""


class QueueUnavailable(AmqpError):
    """RabbitMQ could not take a message: unreachable, refused (nack) or unroutable.

    The message may or may not have reached the queue when the connection dropped while
    waiting for the confirm (``maybe_delivered``); consumers are idempotent, so the caller
    treats both as "not queued" and never assumes it was.
    """

    def __init__(self, message: str, *, maybe_delivered: bool = False) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered
