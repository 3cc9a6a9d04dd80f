"""What ``plantnotify watch`` prints: lines for people, or one JSON object per line."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, Protocol, TextIO

from plantnotify.contracts.events import (
    AnalysisCompleted,
    AnalysisFailed,
    AnalysisProgress,
)

AnyEvent = AnalysisCompleted | AnalysisFailed | AnalysisProgress
# What analysers answer when they could not tell the crop.
NO_CROP = frozenset({"", "unknown", "other", "none", "n/a", "unidentified"})


class Output(Protocol):
    def event(self, event: AnyEvent, source: str) -> None: ...

    def status(self, state: str, **fields: Any) -> None: ...


def _now() -> datetime:
    return datetime.now(UTC)


class JsonLines:
    """``{"type": "event", "source": ..., "receivedAt": ..., "event": {...}}`` per line."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def _write(self, doc: dict[str, Any]) -> None:
        self.stream.write(json.dumps(doc, separators=(",", ":")) + "\n")
        self.stream.flush()

    def event(self, event: AnyEvent, source: str) -> None:
        self._write(
            {
                "type": "event",
                "source": source,
                "receivedAt": _now().isoformat(),
                "event": event.to_wire(),
            }
        )

    def status(self, state: str, **fields: Any) -> None:
        self._write({"type": "status", "state": state, "at": _now().isoformat(), **fields})


class HumanLines:
    """``12:03:10  ready   Tomato · health 72/100 · Early blight   app://analysis/…``"""

    SOURCE_NOTE = {"live": "", "retained": " (stored)", "recovered": " (missed, recovered)"}

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def _write(self, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S")
        self.stream.write(f"{stamp}  {text}\n")
        self.stream.flush()

    def event(self, event: AnyEvent, source: str) -> None:
        note = self.SOURCE_NOTE.get(source, f" ({source})")
        if isinstance(event, AnalysisCompleted):
            crop = (event.crop_type or "").strip()
            parts = [crop.capitalize() if crop.lower() not in NO_CROP else "Plant"]
            if event.overall_health_score is not None:
                parts.append(f"health {event.overall_health_score}/100")
            if event.primary_concern:
                parts.append(event.primary_concern)
            self._write(f"ready     {' · '.join(parts)}  {event.deep_link}{note}")
        elif isinstance(event, AnalysisFailed):
            self._write(f"failed    analysis {event.analysis_id}: {event.error_message}{note}")
        else:
            self._write(
                f"progress  analysis {event.analysis_id}: {event.progress}% {event.stage}{note}"
            )

    def status(self, state: str, **fields: Any) -> None:
        detail = ", ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        self._write(f"[{state}]" + (f" {detail}" if detail else ""))
