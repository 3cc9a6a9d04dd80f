"""Shared by the deployment checks: the repository root and the docker-compose binary."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str, package: str) -> str:
    """Path of a system tool; installed (scripts/install-system.sh) when missing, never
    skipped: the deployment checks are part of `make test`."""
    if shutil.which(name) is None:
        subprocess.run([str(ROOT / "scripts" / "install-system.sh")], check=True)
    path = shutil.which(name)
    assert path, (
        f"{name} is not installed and scripts/install-system.sh could not install it; "
        f"install Debian's {package} package (apt-get install {package})"
    )
    return path


def docker_compose() -> list[str]:
    return [tool("docker-compose", "docker-compose")]
