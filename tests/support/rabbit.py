"""RabbitMQ helpers for tests: a private vhost, reading what landed in a queue."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pika


@contextmanager
def private_vhost(name: str) -> Iterator[str]:
    """A fresh vhost (deleted afterwards) and its URL, for tests that inspect queues."""
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    try:
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(name, safe='')}"
    finally:
        subprocess.run(
            ["rabbitmqctl", "-q", "delete_vhost", name], check=False, capture_output=True
        )


def declare(url: str) -> None:
    """Declare the project's queues (as the API and worker do) on the vhost of ``url``."""
    from plantnotify.amqp.topology import declare_topology

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        declare_topology(connection.channel())
    finally:
        connection.close()


def drain(url: str, queue: str) -> list[tuple[pika.BasicProperties, bytes]]:
    """Take (and ack) every message now in ``queue``."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        out = []
        while True:
            method, properties, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                return out
            channel.basic_ack(method.delivery_tag)
            out.append((properties, body))
    finally:
        connection.close()


def publish_is_accepted(url: str, queue: str, body: bytes = b"probe") -> bool:
    """Publish one message with confirms: True if RabbitMQ took it, False if it nacked."""
    import pika.exceptions

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        try:
            channel.basic_publish("", queue, body, mandatory=True)
        except pika.exceptions.NackError:
            return False
        return True
    finally:
        connection.close()
