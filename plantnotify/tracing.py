"""One trace per analysis, end to end (W3C Trace Context, OpenTelemetry API).

An analysis gets its trace id at upload (or keeps the one of an incoming ``traceparent``). The
id travels in the RabbitMQ job's headers, the analysis row, every event (``traceId``), the
bridge's decisions and the receipts' bookkeeping, and it is a field of every log line written
for that analysis.

Spans go through OpenTelemetry's API. Only when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set does
``setup_tracing`` install the SDK with an OTLP/HTTP exporter (Jaeger, Tempo, any collector);
otherwise no span is made at all (``span`` just hands the parent on, ~1 µs instead of ~35 µs
through the API's no-op tracer) and the trace id is still ours, carried as the parent.
"""

from __future__ import annotations

import atexit
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

TRACEPARENT_HEADER = "traceparent"
TRACE_ID_HEADER = "X-Trace-Id"  # on the upload's answer: the id support asks for
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")

_tracer = trace.get_tracer("plantnotify")
_provider: Any = None  # the SDK's TracerProvider once setup_tracing exported; None: no-op


@dataclass(frozen=True, slots=True)
class TraceContext:
    """Where in a trace we are: the trace id and the current span id (hex, lower case)."""

    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def otel_context(self) -> Any:
        """This position as an OpenTelemetry parent context (a remote span)."""
        span_context = SpanContext(
            trace_id=int(self.trace_id, 16),
            span_id=int(self.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if self.sampled else TraceFlags.DEFAULT),
        )
        return trace.set_span_in_context(NonRecordingSpan(span_context))


def _random_hex(nbytes: int) -> str:
    while True:
        value = secrets.token_hex(nbytes)
        if value.strip("0"):  # all zeros is the invalid id of W3C Trace Context
            return value


def parse_traceparent(header: str | None) -> TraceContext | None:
    """A W3C ``traceparent`` header (version 00), or None when absent or malformed."""
    if not header:
        return None
    match = _TRACEPARENT.match(header.strip().lower())
    if not match:
        return None
    trace_id, span_id, flags = match.groups()
    if not trace_id.strip("0") or not span_id.strip("0"):
        return None
    return TraceContext(trace_id, span_id, sampled=bool(int(flags, 16) & 1))


def start_trace(traceparent: str | None = None) -> TraceContext:
    """Continue the caller's trace when it sent a valid ``traceparent``, else begin one."""
    return parse_traceparent(traceparent) or TraceContext(_random_hex(16), _random_hex(8))


def resume(trace_id: str | None, traceparent: str | None = None) -> TraceContext | None:
    """The context of stored work: its ``traceparent`` if valid, else its bare trace id."""
    parsed = parse_traceparent(traceparent)
    if parsed is not None:
        return parsed
    if trace_id and TRACE_ID.match(trace_id) and trace_id.strip("0"):
        return TraceContext(trace_id, _random_hex(8))
    return None


@contextmanager
def span(
    name: str,
    parent: TraceContext | None,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    **attributes: str | int | float | bool | None,
) -> Iterator[TraceContext | None]:
    """A span under ``parent``; yields the new position (the parent's when nothing records).

    With no ``parent`` there is no trace to continue: nothing is started and None is yielded.
    """
    if parent is None or _provider is None:
        yield parent  # nothing records: our own trace id simply continues
        return
    attrs = {f"plantnotify.{k}": v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(
        name, context=parent.otel_context(), kind=kind, attributes=attrs
    ) as current:
        ctx = current.get_span_context()
        if ctx.is_valid and f"{ctx.trace_id:032x}" == parent.trace_id:
            yield TraceContext(parent.trace_id, f"{ctx.span_id:016x}", parent.sampled)
        else:
            yield parent


@contextmanager
def child_span(
    name: str, *, kind: SpanKind = SpanKind.INTERNAL, **attributes: str | int | float | bool | None
) -> Iterator[None]:
    """A span under whatever span is current in this thread (nothing when none records)."""
    if _provider is None:
        yield
        return
    attrs = {f"plantnotify.{k}": v for k, v in attributes.items() if v is not None}
    with _tracer.start_as_current_span(name, kind=kind, attributes=attrs):
        yield


def setup_tracing(service: str, endpoint: str | None) -> bool:
    """Export spans over OTLP/HTTP to ``endpoint`` when it is set; True if exporting.

    ``endpoint`` is the collector's base URL (``OTEL_EXPORTER_OTLP_ENDPOINT``); spans are
    POSTed to ``{endpoint}/v1/traces``. Called once per process by the service's boot.
    """
    global _provider
    if not endpoint or _provider is not None:
        return _provider is not None
    # Imported here: without an endpoint the SDK and exporter are never loaded.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"plantnotify-{service}"}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces", timeout=5)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    trace.set_tracer_provider(provider)  # the module's proxy tracer now records
    _provider = provider
    atexit.register(shutdown_tracing)
    return True


def shutdown_tracing() -> None:
    """Flush the spans not yet exported (on a clean shutdown)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None
