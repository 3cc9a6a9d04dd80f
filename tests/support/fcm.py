"""The local FCM emulator as a fixture: a real HTTP server on a free port, per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.fcm_emulator import FcmEmulator


@pytest.fixture(scope="session")
def fcm_emulator() -> Iterator[FcmEmulator]:
    """Tests use their own registration tokens, so one emulator serves the whole session."""
    emu = FcmEmulator("127.0.0.1", 0).start()
    yield emu
    emu.stop()
