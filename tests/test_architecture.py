"""The import rules of ARCHITECTURE.md hold (import-linter's contracts in pyproject.toml), and a
break of them is caught: a service importing another, production code importing devtools."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = shutil.which("lint-imports", path=str(ROOT / ".venv" / "bin")) or "lint-imports"
PACKAGES = ("plantnotify", "api", "worker", "bridge", "devtools", "bench", "tests")


def lint_imports(cwd: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LINT_IMPORTS, "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(pythonpath)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_repository_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "contract"),
    [
        ("bridge/fcm.py", "import worker.outbox\n", "Layers"),
        ("worker/n8n.py", "from devtools import n8n_standin\n", "never imports bench, devtools"),
        ("plantnotify/cli.py", "import api.main\n", "Layers"),
        ("bench/stack.py", "from tests.support import net\n", "Only tests import tests"),
    ],
)
def test_a_forbidden_import_is_reported(
    tmp_path: Path, module: str, source: str, contract: str
) -> None:
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    for name in ("worker/outbox.py", "devtools/n8n_standin.py", "api/main.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "tests" / "support").mkdir()
    (tmp_path / "tests" / "support" / "__init__.py").write_text("")
    (tmp_path / "tests" / "support" / "net.py").write_text("")
    (tmp_path / module).write_text(source)
    result = lint_imports(tmp_path, tmp_path)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
