"""The README's configuration table is generated from Settings and cannot drift from it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from plantnotify.cli import main
from plantnotify.configdoc import (
    MASK,
    TABLE_END,
    TABLE_START,
    extract_table,
    markdown_table,
    mask_url,
    replace_table,
)
from plantnotify.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_readme_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text()
    assert extract_table(readme) == markdown_table(), (
        "README.md's configuration table differs from Settings; regenerate it with "
        "`.venv/bin/plantnotify config --update-readme README.md`"
    )


def test_every_setting_is_documented() -> None:
    table = markdown_table()
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs a description (it is the README text)"
        assert f"| `{name.upper()}` |" in table


def test_table_shows_no_secret_default() -> None:
    from plantnotify.settings import DEV_JWT_SECRET

    assert DEV_JWT_SECRET not in markdown_table()


def test_replace_table_rewrites_only_between_the_markers() -> None:
    doc = f"intro\n{TABLE_START}\nold table\n{TABLE_END}\noutro\n"
    new = replace_table(doc, "| new |\n")
    assert new == f"intro\n{TABLE_START}\n| new |\n{TABLE_END}\noutro\n"
    assert extract_table(new) == "| new |\n"
    with pytest.raises(ValueError, match="markers"):
        replace_table("no markers here", "| x |\n")


def test_mask_url() -> None:
    assert mask_url("amqp://pn:s3cret@rabbitmq:5672/%2F") == f"amqp://pn:{MASK}@rabbitmq:5672/%2F"
    assert mask_url("postgresql+psycopg2://postgres@127.0.0.1:5432/x") == (
        "postgresql+psycopg2://postgres@127.0.0.1:5432/x"
    )
    assert mask_url("plain text") == "plain text"


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """`plantnotify config ARGS` in-process, with exactly the given environment variables."""

    def run(*args: str, **env: str) -> Result:
        for name in Settings.model_fields:
            monkeypatch.delenv(name.upper(), raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(["config", *args])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def test_config_command_prints_effective_values_with_secrets_masked(
    cli: Callable[..., Result],
) -> None:
    secret = "jwt-" + "9f" * 20
    result = cli(
        JWT_SECRET=secret,
        DATABASE_URL="postgresql+psycopg2://pn:db-pass-55@postgres:5432/pn",
        RABBITMQ_URL="amqp://pn:mq-pass-66@rabbitmq:5672/%2F",
        MAX_UPLOAD_MB="12",
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert set(lines) == {name.upper() for name in Settings.model_fields}
    assert lines["MAX_UPLOAD_MB"] == "12"
    assert lines["JWT_SECRET"] == MASK
    assert lines["DATABASE_URL"] == f"postgresql+psycopg2://pn:{MASK}@postgres:5432/pn"
    for leaked in (secret, "db-pass-55", "mq-pass-66"):
        assert leaked not in result.stdout + result.stderr


def test_config_command_refuses_an_unsafe_production_configuration(
    cli: Callable[..., Result],
) -> None:
    result = cli(ENVIRONMENT="production", JWT_SECRET="jwt-" + "9f" * 20)
    assert result.returncode == 2
    assert "configuration refused" in result.stderr
    assert "N8N_WEBHOOK_URL" in result.stderr


def test_update_readme(tmp_path: Path, cli: Callable[..., Result]) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{TABLE_START}\nstale\n{TABLE_END}\n")
    assert cli("--update-readme", str(readme)).returncode == 0
    assert extract_table(readme.read_text()) == markdown_table()
