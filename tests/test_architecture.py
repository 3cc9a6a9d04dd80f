"""The import rules of ARCHITECTURE.md hold (import-linter's contracts in pyproject.toml), and a
break of them is caught: a service importing another, production code importing devtools."""

from __future__ import annotations

import ast
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


# --- one place for each service's database access ------------------------------------------

SERVICES = ("api", "worker", "bridge")
# Query builders: a module that imports one writes its own query.
QUERY_BUILDERS = {
    "select", "insert", "update", "delete", "text", "func", "case", "and_", "or_", "not_",
    "tuple_", "literal", "literal_column", "bindparam", "cast", "column", "table", "exists",
    "union", "union_all",
}  # fmt: skip
# Ways to run a statement, or to load or store a mapped object, on a session or connection.
RUNS_STATEMENTS = {"execute", "executemany", "scalars", "scalar", "add_all", "merge"}
# Raw SQL outside store.py, only where a PostgreSQL feature needs its own connection:
# the worker's presence lock is held for the life of the process on a dedicated connection.
OUTSIDE_STORE = {"worker/presence.py": {"execute"}}


def database_access(source: str) -> set[str]:
    """What in ``source`` builds or runs a query, or loads or adds a mapped object."""
    tree = ast.parse(source)
    models = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "plantnotify.db.models"
        for alias in node.names
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            module = node.module or ""
            for alias in node.names:
                if module.startswith(("sqlalchemy.dialects", "sqlalchemy.sql")) or (
                    module == "sqlalchemy" and alias.name in QUERY_BUILDERS
                ):
                    found.add(f"imports {module}.{alias.name}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Call):
                first = first.func
            if method in RUNS_STATEMENTS:
                found.add(method)
            elif method in {"add", "get"} and isinstance(first, ast.Name) and first.id in models:
                found.add(f"{method}({first.id})")
    return found


def test_each_service_reaches_the_database_only_through_its_store() -> None:
    """ARCHITECTURE.md: every query of a service is a named function in its ``store.py``."""
    offenders = {}
    for service in SERVICES:
        for path in sorted((ROOT / service).rglob("*.py")):
            if path.name == "store.py":
                continue
            name = path.relative_to(ROOT).as_posix()
            found = database_access(path.read_text()) - OUTSIDE_STORE.get(name, set())
            if found:
                offenders[name] = sorted(found)
    assert not offenders, offenders


@pytest.mark.parametrize(
    "source",
    [
        "from sqlalchemy import select\n",
        "from sqlalchemy.dialects.postgresql import insert\n",
        "def f(db):\n    db.execute(q)\n",
        "def f(db):\n    return db.scalars(q)\n",
        "from plantnotify.db.models import User\ndef f(db):\n    db.add(User(id='u'))\n",
        "from plantnotify.db.models import User\ndef f(db):\n    return db.get(User, 'u')\n",
    ],
)
def test_a_query_outside_a_store_is_found(source: str) -> None:
    assert database_access(source)


def test_what_is_not_a_query_is_not_flagged() -> None:
    source = (
        "from sqlalchemy.orm import Session\nfrom sqlalchemy.exc import IntegrityError\n"
        "from plantnotify.db.models import User\n"
        "def f(seen: set[str], headers: dict[str, str], user: User) -> None:\n"
        "    seen.add('x')\n    headers.get('a')\n    store.add_user(db, 'u')\n"
    )
    assert database_access(source) == set()
