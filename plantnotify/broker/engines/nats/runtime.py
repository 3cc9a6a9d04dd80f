"""``<NATS_DATA_DIR>/cluster.json``: the ports of a running local cluster, for other commands
(``plantnotify token --mosquitto-sub``) when ``plantnotify broker --engine nats`` chose them."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

RUNTIME_NAME = "cluster.json"


def write_cluster_runtime(data_dir: Path, info: dict[str, Any]) -> None:
    (data_dir / RUNTIME_NAME).write_text(json.dumps({"pid": os.getpid(), **info}))


def remove_cluster_runtime(data_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (data_dir / RUNTIME_NAME).unlink()


def read_cluster_runtime(data_dir: Path) -> dict[str, Any] | None:
    """The running cluster's ports (``mqttPorts``, ``wsPorts``, ``natsUrls``), else None."""
    try:
        info = json.loads((data_dir / RUNTIME_NAME).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info if isinstance(info, dict) else None
