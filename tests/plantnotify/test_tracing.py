"""plantnotify/tracing.py: W3C trace context parsing and continuation, without an exporter."""

from __future__ import annotations

import pytest

from plantnotify.contracts.events import AnalysisCompleted, parse_event
from plantnotify.tracing import TraceContext, parse_traceparent, resume, span, start_trace

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_a_valid_traceparent_is_continued() -> None:
    ctx = start_trace(VALID)
    assert ctx == TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True)
    assert ctx.traceparent == VALID
    assert start_trace(VALID.upper()).trace_id == ctx.trace_id


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # unknown version
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero span id
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",  # not hex
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\x00",
    ],
)
def test_a_malformed_traceparent_starts_a_new_trace(header: str) -> None:
    assert parse_traceparent(header) is None
    ctx = start_trace(header)
    assert len(ctx.trace_id) == 32 and int(ctx.trace_id, 16) != 0
    assert ctx.trace_id != "4bf92f3577b34da6a3ce929d0e0e4736"


def test_new_traces_are_distinct() -> None:
    assert len({start_trace().trace_id for _ in range(200)}) == 200


def test_resume_prefers_the_header_then_the_stored_id() -> None:
    assert resume(None) is None
    assert resume("not-hex") is None
    assert resume("0" * 32) is None
    stored = resume("4bf92f3577b34da6a3ce929d0e0e4736")
    assert stored is not None and stored.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert resume("ab" * 16, VALID) == parse_traceparent(VALID)


def test_spans_keep_the_trace_without_an_exporter() -> None:
    parent = start_trace(VALID)
    with span("step", parent, answer=42) as here:
        assert here is not None and here.trace_id == parent.trace_id
    with span("nothing to continue", None) as none:
        assert none is None


def test_events_carry_the_trace_id_only_when_known() -> None:
    base = {"analysis_id": "a1", "user_id": "u1", "image_url": "/x"}
    without = AnalysisCompleted(**base)
    assert "traceId" not in without.to_wire() and b"traceId" not in without.to_json_bytes()
    traced = AnalysisCompleted(**base, trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    assert traced.to_wire()["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    parsed = parse_event(traced.to_json_bytes())
    assert parsed.trace_id == traced.trace_id
