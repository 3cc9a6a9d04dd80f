"""JobPublisher against real RabbitMQ: confirmed delivery, a dropped connection replaced once,
an unreachable broker reported fast."""

from __future__ import annotations

import subprocess
import time
from urllib.parse import unquote, urlsplit

import pytest

from plantnotify.amqp.errors import QueueUnavailable
from plantnotify.amqp.publisher import JobPublisher
from plantnotify.contracts.queues import ANALYSIS_QUEUE, AnalysisJob
from tests.support.net import free_port, wait_for
from tests.support.rabbit import declare, drain
from tests.support.tcpproxy import TcpProxy


@pytest.fixture(autouse=True)
def empty_queue(api_rabbitmq_url: str) -> None:
    declare(api_rabbitmq_url)
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)


def _jobs(url: str) -> list[AnalysisJob]:
    return [AnalysisJob.model_validate_json(body) for _, body in drain(url, ANALYSIS_QUEUE)]


def test_publish_survives_a_connection_the_broker_closed(api_rabbitmq_url: str) -> None:
    publisher = JobPublisher(api_rabbitmq_url, app_id="pytest-publisher")
    try:
        publisher.publish(AnalysisJob(analysis_id="a1", user_id="u1"))
        # The broker drops every connection of the vhost (like a RabbitMQ restart would).
        vhost = unquote(urlsplit(api_rabbitmq_url).path[1:])
        subprocess.run(
            ["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "pytest: simulated drop"],
            check=True,
            capture_output=True,
        )
        wait_for(
            lambda: (publisher.heartbeat(), not publisher.connected)[1],
            timeout=20,
            what="the drop to be seen",
        )
        publisher.publish(AnalysisJob(analysis_id="a2", user_id="u1", request_id="r2"))
        assert publisher.connected
        jobs = _jobs(api_rabbitmq_url)
        assert [j.analysis_id for j in jobs] == ["a1", "a2"]
        assert jobs[1].request_id == "r2"
    finally:
        publisher.close()


def test_connection_cut_while_idle_is_replaced_at_the_next_publish(api_rabbitmq_url: str) -> None:
    """The connection dies unnoticed (no heartbeat ran since); the publish retries once."""
    parts = urlsplit(api_rabbitmq_url)
    proxy = TcpProxy(parts.port or 5672)
    publisher = JobPublisher(api_rabbitmq_url.replace(f":{parts.port}/", f":{proxy.port}/"))
    try:
        publisher.publish(AnalysisJob(analysis_id="b1", user_id="u1"))
        proxy.cut()
        publisher.publish(AnalysisJob(analysis_id="b2", user_id="u1"))
        assert proxy.connections == 2
        assert [j.analysis_id for j in _jobs(api_rabbitmq_url)] == ["b1", "b2"]
    finally:
        publisher.close()
        proxy.close()


def test_cut_during_a_fresh_connection_is_not_retried_forever(api_rabbitmq_url: str) -> None:
    parts = urlsplit(api_rabbitmq_url)
    proxy = TcpProxy(parts.port or 5672)
    proxy.close()  # nothing listens any more: connecting fails, once, fast
    publisher = JobPublisher(api_rabbitmq_url.replace(f":{parts.port}/", f":{proxy.port}/"))
    with pytest.raises(QueueUnavailable):
        publisher.publish(AnalysisJob(analysis_id="b3", user_id="u1"))
    assert "b3" not in [j.analysis_id for j in _jobs(api_rabbitmq_url)]


def test_unreachable_rabbitmq_fails_fast(api_rabbitmq_url: str) -> None:
    publisher = JobPublisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    started = time.monotonic()
    with pytest.raises(QueueUnavailable, match="unreachable"):
        publisher.publish(AnalysisJob(analysis_id="c1", user_id="u1"))
    assert time.monotonic() - started < 5
    with pytest.raises(QueueUnavailable):
        publisher.connect()
    publisher.close()


def test_wrong_credentials_are_reported(api_rabbitmq_url: str) -> None:
    url = api_rabbitmq_url.replace("guest:guest", "guest:wrong")
    with pytest.raises(QueueUnavailable, match="unreachable"):
        JobPublisher(url).publish(AnalysisJob(analysis_id="d1", user_id="u1"))
