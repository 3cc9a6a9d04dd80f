"""The N8N webhook (contract §5): one HTTP POST per attempt, retried with back-off.

Outcomes are data, not exceptions: :class:`N8nAnswer` (a JSON object came back) or
:class:`N8nFailure` with a readable message and whether another attempt may help. Messages
name what happened, never the URL (it may carry a secret path) and never a stack trace.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import random
import select
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
from opentelemetry.trace import SpanKind

from plantnotify.contracts.events import truncate, utcnow
from plantnotify.settings import Settings
from plantnotify.tracing import child_span
from worker import metrics

log = logging.getLogger("plantnotify.worker.n8n")

MAX_RESPONSE_BYTES = 1024 * 1024  # a result is a small JSON object; refuse anything huge
MAX_RETRY_AFTER_SECONDS = 300.0
STANDIN_WEBHOOK_PATH = "/webhook/plant-analysis"


def n8n_url(settings: Settings) -> str:
    """The real N8N webhook when ``N8N_WEBHOOK_URL`` is set, else the local stand-in."""
    if settings.n8n_webhook_url:
        return settings.n8n_webhook_url
    return f"http://127.0.0.1:{settings.standin_port}{STANDIN_WEBHOOK_PATH}"


class Cancelled(Exception):
    """The worker is shutting down; the job goes back to RabbitMQ un-acked."""


@dataclass(frozen=True, slots=True)
class N8nRequest:
    analysis_id: str
    user_id: str
    crop_type: str | None
    mime_type: str
    image: bytes
    image_url: str

    def body(self) -> dict[str, Any]:
        return {
            "analysisId": self.analysis_id,
            "userId": self.user_id,
            "cropType": self.crop_type,
            "mimeType": self.mime_type,
            "imageBase64": base64.b64encode(self.image).decode("ascii"),
            "imageUrl": self.image_url,
        }


@dataclass(frozen=True, slots=True)
class N8nAnswer:
    """A 2xx JSON object: the whole object, plus the fields the events carry."""

    result: dict[str, Any]
    crop_type: str | None
    primary_concern: str | None
    overall_health_score: int | None
    attempts: int = 1
    history: tuple[N8nAttempt, ...] = ()


@dataclass(frozen=True, slots=True)
class N8nFailure:
    message: str
    transient: bool
    kind: str  # for metrics: timeout, connection, http_5xx, http_4xx, not_json, not_object...
    retry_after: float | None = None
    attempts: int = 1
    history: tuple[N8nAttempt, ...] = ()


@dataclass(frozen=True, slots=True)
class N8nAttempt:
    """One webhook call, for the delivery timeline: when, how long, and what came of it."""

    at: datetime
    seconds: float
    outcome: str  # "answer", or the failure kind
    error: str | None = None

    def detail(self, attempt: int) -> dict[str, Any]:
        return {
            "attempt": attempt,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 3),
            "error": self.error,
        }


def interpret(result: dict[str, Any]) -> N8nAnswer:
    """Read the fields we know from a result object; anything odd is left out, not fatal."""
    crop = result.get("cropType")
    concern = result.get("primaryConcern")
    score = result.get("overallHealthScore")
    health: int | None = None
    if isinstance(score, int | float) and not isinstance(score, bool) and 0 <= score <= 100:
        health = round(score)
    elif score is not None:
        log.warning("N8N overallHealthScore ignored: not a number in 0..100")
    return N8nAnswer(
        result=result,
        crop_type=truncate(crop.strip(), 64) if isinstance(crop, str) and crop.strip() else None,
        primary_concern=truncate(concern.strip(), 200)
        if isinstance(concern, str) and concern.strip()
        else None,
        overall_health_score=health,
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _json_type(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"


class N8nClient:
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_attempts: int,
        backoff: float,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        # The usual webhook call goes over http.client on kept-alive connections: httpx cost
        # the worker more CPU per call than everything else a job does (measured with
        # bench/scripts/workercpu.py). httpx stays for a given transport (tests) and when the
        # environment routes the webhook through a proxy (httpx honours HTTP(S)_PROXY).
        self._direct = None if transport is not None else _Direct.of(url, timeout)
        self._http = httpx.Client(
            timeout=httpx.Timeout(timeout),
            transport=transport,
            headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self._http.close()

    def delay(self, attempt: int, failure: N8nFailure) -> float:
        """Exponential back-off with jitter; a server's Retry-After is a floor."""
        base = self.backoff * (2 ** (attempt - 1))
        delay: float = base * random.uniform(0.5, 1.5)
        if failure.retry_after is not None:
            delay = max(delay, failure.retry_after)
        return delay

    def analyse(self, request: N8nRequest, cancel: threading.Event) -> N8nAnswer | N8nFailure:
        """Call until an answer, a permanent failure, or the attempts are used up.

        Raises :class:`Cancelled` when ``cancel`` is set while waiting to retry.
        """
        body = request.body()
        attempt = 0
        history: list[N8nAttempt] = []
        while True:
            attempt += 1
            at, started = utcnow(), time.monotonic()
            with child_span("n8n", kind=SpanKind.CLIENT, attempt=attempt):
                outcome = self.attempt(body)
            failed = isinstance(outcome, N8nFailure)
            history.append(
                N8nAttempt(
                    at,
                    time.monotonic() - started,
                    outcome.kind if isinstance(outcome, N8nFailure) else "answer",
                    outcome.message if isinstance(outcome, N8nFailure) else None,
                )
            )
            if not failed:
                assert isinstance(outcome, N8nAnswer)
                return N8nAnswer(
                    outcome.result,
                    outcome.crop_type,
                    outcome.primary_concern,
                    outcome.overall_health_score,
                    attempts=attempt,
                    history=tuple(history),
                )
            assert isinstance(outcome, N8nFailure)
            metrics.N8N_FAILURES.labels(kind=outcome.kind).inc()
            if not outcome.transient or attempt >= self.max_attempts:
                suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
                return N8nFailure(
                    truncate(outcome.message + suffix, 300),
                    outcome.transient,
                    outcome.kind,
                    attempts=attempt,
                    history=tuple(history),
                )
            delay = self.delay(attempt, outcome)
            log.warning(
                "N8N attempt %d/%d failed: %s; retrying in %.2fs",
                attempt,
                self.max_attempts,
                outcome.message,
                delay,
            )
            if cancel.wait(delay):
                raise Cancelled("shutting down while waiting to retry N8N")

    def attempt(self, body: dict[str, Any]) -> N8nAnswer | N8nFailure:
        started = time.monotonic()
        try:
            if self._direct is not None:
                status, retry_after, content = self._direct.post(body)
            else:
                response = self._http.post(self.url, json=body)
                status, retry_after = response.status_code, response.headers.get("retry-after")
                content = response.content
        except (httpx.TimeoutException, TimeoutError):
            return N8nFailure(
                f"The analysis service did not answer within {self.timeout:g} s.",
                True,
                "timeout",
            )
        except (httpx.TransportError, OSError, http.client.HTTPException) as exc:
            return N8nFailure(
                f"Could not reach the analysis service ({type(exc).__name__}).",
                True,
                "connection",
            )
        finally:
            metrics.N8N_SECONDS.observe(time.monotonic() - started)
        if status >= 500 or status == 429:
            return N8nFailure(
                f"The analysis service is unavailable (HTTP {status}).",
                True,
                "http_5xx" if status >= 500 else "http_429",
                retry_after=_retry_after(retry_after),
            )
        if not 200 <= status < 300:
            return N8nFailure(
                f"The analysis service refused the image (HTTP {status}).", False, "http_4xx"
            )
        if len(content) > MAX_RESPONSE_BYTES:
            return N8nFailure("The analysis service answered with too much data.", False, "large")
        try:
            parsed = json.loads(content)
        except (ValueError, UnicodeDecodeError):
            return N8nFailure(
                "The analysis service answered with something that is not JSON.",
                False,
                "not_json",
            )
        if not isinstance(parsed, dict):
            return N8nFailure(
                f"The analysis service answered with a JSON {_json_type(parsed)}, not an object.",
                False,
                "not_object",
            )
        return interpret(parsed)


USER_AGENT = "plantnotify-worker"
IDLE_CONNECTIONS = 64  # kept-alive connections to the webhook at most (one per running call)


class _Direct:
    """POST to one URL over http.client, HTTP/1.1 keep-alive, one connection per call in
    flight. A connection is reused only after a complete response that did not ask to close,
    and only if the server has not closed it meanwhile (a readable idle socket: dropped, as
    httpcore does). Nothing is retried here: a failed call is the caller's to retry."""

    def __init__(
        self,
        https: bool,
        host: str,
        port: int | None,
        target: str,
        timeout: float,
        headers: dict[str, str],
    ) -> None:
        self._https = https
        self._host = host
        self._port = port
        self._target = target
        self._timeout = timeout
        self._headers = headers
        self._context = _tls_context() if https else None
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    @classmethod
    def of(cls, url: str, timeout: float) -> _Direct | None:
        """None when httpx must make the call (a scheme we don't do, or a proxy applies)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        host = parts.hostname
        if _proxied(parts.scheme, host):
            return None
        headers = {
            "Host": parts.netloc.rsplit("@", 1)[-1],
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            "Content-Type": "application/json",
        }
        if parts.username is not None:
            user_pass = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(user_pass.encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme == "https", host, parts.port, target, timeout, headers)

    def post(self, body: dict[str, Any]) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, body up to one byte past the limit)."""
        data = json.dumps(body, separators=(",", ":")).encode()
        conn = self._take()
        try:
            conn.request("POST", self._target, data, self._headers)
            response = conn.getresponse()
            content = response.read(MAX_RESPONSE_BYTES + 1)
            reusable = response.isclosed() and not response.will_close
        except BaseException:
            conn.close()
            raise
        if reusable:
            self._give(conn)
        else:
            conn.close()
        return response.status, response.getheader("retry-after"), content

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _take(self) -> http.client.HTTPConnection:
        while True:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                break
            sock = conn.sock
            if sock is not None and not select.select([sock], [], [], 0)[0]:
                return conn
            conn.close()  # the server closed it (or sent something unasked): not reusable
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=self._timeout, context=self._context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _give(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < IDLE_CONNECTIONS:
                self._idle.append(conn)
                return
        conn.close()


def _proxied(scheme: str, host: str) -> bool:
    proxies = urllib.request.getproxies()
    if scheme not in proxies and "all" not in proxies:
        return False
    return not urllib.request.proxy_bypass(host)


def _tls_context() -> ssl.SSLContext:
    """The CA bundle httpx would use (certifi), else the system's."""
    try:
        import certifi

        return ssl.create_default_context(cafile=certifi.where())
    except ImportError:
        return ssl.create_default_context()
