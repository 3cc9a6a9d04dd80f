"""A fake N8N webhook: a real HTTP server on a free port that misbehaves on request.

For the worker tests and ``bench.scripts.outbox`` (the fixture is ``tests.support.fake_n8n``).

Modes (per analysis id, as a script consumed one per call, then ``default``):
    ok          200 + a result object (``result``)
    slow:S      like ok, after S seconds
    500 / 503 / 429 / 400   that status with a JSON error body
    not_json    200 + an HTML page
    array       200 + a JSON array
    hang        no answer until the server stops (the worker's time-out fires)
    reset       the TCP connection is reset without an answer

Every call is recorded (analysis id, mode, time); ``answered_at`` keeps when a 200 was sent.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_RESULT: dict[str, Any] = {
    "cropType": "tomato",
    "primaryConcern": "Early blight (Alternaria solani)",
    "overallHealthScore": 72,
    "recommendations": ["Remove affected leaves", "Avoid overhead watering"],
}


@dataclass(frozen=True)
class Call:
    analysis_id: str
    mode: str
    at: float
    body: dict[str, Any]


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # "reset" and killed workers make the handler's final flush fail; that's the point


class FakeN8n:
    def __init__(self) -> None:
        self.default = "ok"
        self.result: dict[str, Any] = dict(DEFAULT_RESULT)
        self.calls: list[Call] = []
        self.answered_at: dict[str, float] = {}
        self._scripts: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._call_seen = threading.Condition(self._lock)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length))
                except ValueError:
                    body = {}
                fake._handle(self, body if isinstance(body, dict) else {})

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook/plant-analysis"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- test API -------------------------------------------------------------------------

    def start(self) -> FakeN8n:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()

    def plan(self, analysis_id: str, *modes: str) -> None:
        """The next calls for this analysis answer with ``modes``, in order."""
        with self._lock:
            self._scripts[analysis_id].extend(modes)

    def calls_for(self, analysis_id: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.analysis_id == analysis_id]

    def wait_call(self, analysis_id: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                calls = [c for c in self.calls if c.analysis_id == analysis_id]
                if len(calls) >= count:
                    return calls
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"N8N got {len(calls)} call(s) for {analysis_id}, expected {count}"
                    )
                self._call_seen.wait(left)

    # --- server side ----------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        analysis_id = str(body.get("analysisId", ""))
        with self._lock:
            script = self._scripts.get(analysis_id)
            mode = script.popleft() if script else self.default
            self.calls.append(Call(analysis_id, mode, time.monotonic(), body))
            self._call_seen.notify_all()
        if mode.startswith("slow:"):
            if self._release.wait(float(mode.split(":", 1)[1])):
                return
            mode = "ok"
        if mode == "ok":
            with self._lock:
                self.answered_at[analysis_id] = time.time()
            self._send(handler, 200, json.dumps(self.result).encode())
        elif mode.isdigit():
            self._send(handler, int(mode), json.dumps({"error": f"fake {mode}"}).encode())
        elif mode == "not_json":
            self._send(handler, 200, b"<html><body>Workflow error</body></html>", "text/html")
        elif mode == "array":
            self._send(handler, 200, b'[{"cropType": "tomato"}]')
        elif mode == "hang":
            self._release.wait(60)
        elif mode == "reset":
            sock = handler.connection
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            handler.close_connection = True
        else:
            raise ValueError(f"unknown fake N8N mode {mode!r}")

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        data: bytes,
        content_type: str = "application/json",
    ) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the worker gave up (time-out) or was killed
