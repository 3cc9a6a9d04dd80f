"""The `plantnotify` command with a part that is not installed (the Docker images carry no
bench/): `--help` still lists every command, running that one says so in one line."""

from __future__ import annotations

import pytest

from plantnotify import cli


@pytest.fixture
def missing_part(monkeypatch: pytest.MonkeyPatch) -> str:
    commands = {**cli.COMMANDS, "absent": ("no_such_package_xyz.cli", "a part left out")}
    monkeypatch.setattr(cli, "COMMANDS", commands)
    return "absent"


def test_help_lists_a_part_that_is_not_installed(
    missing_part: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert missing_part in out and "migrate" in out and "token" in out


def test_running_a_part_that_is_not_installed_says_so(
    missing_part: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([missing_part]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"plantnotify {missing_part}: not part of this installation"
    )


def test_a_broken_import_inside_an_installed_part_still_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only a missing top-level package means "not installed"; anything else is a real error.
    commands = {**cli.COMMANDS, "broken": ("plantnotify.no_such_module_xyz", "broken")}
    monkeypatch.setattr(cli, "COMMANDS", commands)
    with pytest.raises(ModuleNotFoundError):
        cli.main(["broken"])
