"""A lean asyncio MQTT client for the bench's device agents (MQTT/TCP or MQTT over WebSocket).

One ``asyncio.Protocol`` per connection, driven by one event loop (uvloop when installed): it
connects, subscribes, acknowledges QoS-1 deliveries and hands each PUBLISH to a callback with
the moment its bytes arrived. See ``mqttwire`` for why the bench does not use paho here.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import TypeVar

from bench import mqttwire as w

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
T = TypeVar("T")
OnPublish = Callable[[str, bytes, int], None]  # topic, payload, arrival (monotonic ns)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop (installed with uvicorn[standard]) when present: cheaper per packet."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LeanClient(asyncio.Protocol):
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        host: str,
        port: int,
        websocket: bool = False,
        protocol: int = 5,
        on_publish: OnPublish | None = None,
    ) -> None:
        self.loop = loop
        self.host = host
        self.port = port
        self.websocket = websocket
        self.protocol = protocol
        self.on_publish = on_publish
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()  # socket (and WS) ready
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.pong: asyncio.Future[bool] | None = None
        self._reader = w.PacketReader()
        self._ws = w.WsReader() if websocket else None
        self._handshake = bytearray() if websocket else None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.websocket:
            request, _ = w.ws_handshake(self.host, self.port)
            self.transport.write(request)  # type: ignore[union-attr]
        else:
            self.opened.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        if self._handshake is not None:
            self._handshake += data
            end = self._handshake.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._handshake[:end]).split(b"\r\n", 1)[0]
            rest = bytes(self._handshake[end + 4 :])
            self._handshake = None
            if b" 101" not in status:
                self._fail(w.ProtocolError(f"WebSocket upgrade refused: {status!r}"))
                return
            self.opened.set_result(None)
            data = rest
            if not data:
                return
        if self._ws is not None:
            for opcode, payload in self._ws.feed(data):
                if opcode in (0x0, 0x2):
                    self._mqtt(payload, now)
                elif opcode == 0x9:  # ping -> pong
                    self._write_raw(w.ws_frame(payload, w.WS_PONG))
                elif opcode == 0x8:
                    self._fail(ConnectionError("WebSocket closed by the server"))
        else:
            self._mqtt(data, now)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    # --- MQTT ---------------------------------------------------------------------------------

    def _mqtt(self, data: bytes, now: int) -> None:
        for ptype, flags, body in self._reader.feed(data):
            if ptype == w.PUBLISH:
                topic, packet_id, payload = w.parse_publish(flags, body, self.protocol)
                if packet_id:
                    self.send(w.puback_packet(packet_id))
                if self.on_publish is not None:
                    self.on_publish(topic, payload, now)
            elif ptype == w.CONNACK and not self.connack.done():
                self.connack.set_result(w.connack_code(body))
            elif ptype == w.SUBACK and not self.suback.done():
                self.suback.set_result(body)
            elif ptype == w.PINGRESP_TYPE and self.pong is not None and not self.pong.done():
                self.pong.set_result(True)

    def _fail(self, exc: BaseException) -> None:
        for fut in (self.opened, self.connack, self.suback):
            if not fut.done():
                fut.set_exception(exc)
        if self.pong is not None and not self.pong.done():
            self.pong.set_result(False)

    def _write_raw(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, packet: bytes) -> None:
        self._write_raw(w.ws_frame(packet) if self.websocket else packet)

    async def start(
        self,
        client_id: str,
        username: str | None,
        password: str | None,
        *,
        subscribe: list[str] | None = None,
        keepalive: int = 900,
        source_ip: str | None = None,
        auth_method: str | None = None,
        clean: bool = True,
        session_expiry: int = 0,
    ) -> None:
        """Connect (and subscribe, QoS 1); raises on refusal.

        ``source_ip`` (any 127.x.y.z) gives the connection its own ephemeral-port space: one
        source address has ~28,000 ports, half of them preferred by connect(), and ports of
        closed connections stay in TIME_WAIT for a minute, so tens of thousands of connections
        from 127.0.0.1 alone make every connect() search for a port.
        """
        if source_ip is None:
            await self.loop.create_connection(lambda: self, self.host, self.port)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                # Choose the port at connect() (per 4-tuple), not at bind() (per address).
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((source_ip, 0))
                sock.setblocking(False)
                await self.loop.sock_connect(sock, (self.host, self.port))
            except BaseException:
                sock.close()
                raise
            await self.loop.create_connection(lambda: self, sock=sock)
        await self.opened
        if auth_method is not None and password is not None:
            # MQTT 5 enhanced authentication: the token as authentication data, not a password.
            auth: tuple[str, str] | None = (auth_method, password)
            password = None
        else:
            auth = None
        packet = w.connect_packet(
            client_id,
            username,
            password,
            keepalive,
            self.protocol,
            auth=auth,
            clean=clean,
            session_expiry=session_expiry,
        )
        self.send(packet)
        code = await self._answer(self.connack, client_id, "CONNACK")
        if code != w.CONNACK_ACCEPTED:
            raise ConnectionRefusedError(
                f"CONNACK refused {client_id}: {w.CONNACK_REASONS.get(code, hex(code))}"
            )
        if subscribe:
            self.send(w.subscribe_packet(1, subscribe, 1, self.protocol))
            body = await self._answer(self.suback, client_id, "SUBACK")
            codes = w.suback_codes(body, self.protocol)
            if any(c >= 0x80 for c in codes):
                raise PermissionError(f"SUBSCRIBE {subscribe} refused for {client_id}: {codes!r}")

    async def _answer(self, future: asyncio.Future[T], client_id: str, packet: str) -> T:
        """The broker's answer; a connection closed first says whose and before what."""
        try:
            return await future
        except ConnectionError as exc:
            raise ConnectionError(
                f"{client_id}: {self.host}:{self.port} closed the connection before {packet} "
                f"({exc})"
            ) from exc

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send(w.DISCONNECT)
            self.transport.close()
