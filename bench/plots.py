"""Matplotlib, headless (Agg), one look for every figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def figure(title: str, ncols: int = 1, width: float = 7.0, height: float = 4.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols if ncols > 1 else width, height))
    fig.suptitle(title, fontsize=11)
    return fig, axes


def save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
