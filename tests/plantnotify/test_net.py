"""``free_port``: a port that outgoing connections cannot take before the server binds it."""

from __future__ import annotations

import socket

from plantnotify.net import _ephemeral_range, free_port, port_free


def test_free_ports_lie_outside_the_ephemeral_range_and_are_never_given_twice() -> None:
    low, high = _ephemeral_range()
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= p <= high for p in ports)
    assert all(port_free(p) for p in ports[:20])


def test_a_listening_port_is_not_free() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", free_port()))
        holder.listen()
        assert not port_free(holder.getsockname()[1])
