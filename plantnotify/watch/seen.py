"""Which events this device already has, and since when to ask for missed ones.

QoS 1 may deliver twice, a persistent session redelivers what was in flight, and a resubscribe
replays retained events: the ``eventId`` tells them apart. Kept in a small JSON file per client
id (like an app's local storage), so a restarted device does not show old events again.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import OrderedDict
from datetime import datetime
from pathlib import Path

MAX_IDS = 5000


class SeenStore:
    def __init__(self, path: Path | None, max_ids: int = MAX_IDS) -> None:
        self.path = path
        self.max_ids = max_ids
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.cursor: datetime | None = None  # newest event time seen (server clock)
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            return  # unreadable state: start afresh rather than refuse to run
        for event_id in doc.get("seen", [])[-self.max_ids :]:
            if isinstance(event_id, str):
                self._ids[event_id] = None
        cursor = doc.get("cursor")
        if isinstance(cursor, str):
            try:
                self.cursor = datetime.fromisoformat(cursor)
            except ValueError:
                self.cursor = None

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str, at: datetime | None) -> bool:
        """Record an event; False when it was already there (a duplicate)."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        while len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)
        if at is not None and (self.cursor is None or at > self.cursor):
            self.cursor = at
        return True

    def save(self) -> None:
        if self.path is None:
            return
        doc = {
            "seen": list(self._ids),
            "cursor": self.cursor.isoformat() if self.cursor else None,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".seen-")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
