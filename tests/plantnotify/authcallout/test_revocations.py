"""The auth callout's revocation table: the plugin's line format and rules (revocations.c)."""

from __future__ import annotations

from plantnotify.authcallout.revocations import Revocations

NOW = 1_800_000_000


def test_a_session_line_revokes_that_session_only_until_its_end() -> None:
    r = Revocations()
    out = r.apply(f"S u1 sess-1 {NOW + 60}\n".encode(), NOW)
    assert (out.applied, out.kick) == (1, ["u1"])
    assert r.is_revoked("u1", "sess-1", NOW - 5, NOW)
    assert not r.is_revoked("u1", "sess-2", NOW - 5, NOW)
    assert not r.is_revoked("u1", None, NOW - 5, NOW)
    assert not r.is_revoked("u2", "sess-1", NOW - 5, NOW)
    assert not r.is_revoked("u1", "sess-1", NOW - 5, NOW + 60)


def test_a_user_line_revokes_tokens_issued_before_not_before() -> None:
    r = Revocations()
    r.apply(f"U u1 {NOW} {NOW + 60}".encode(), NOW)
    assert r.is_revoked("u1", "any", NOW - 1, NOW)
    assert r.is_revoked("u1", None, None, NOW)  # no iat: refused
    assert not r.is_revoked("u1", None, NOW, NOW)  # issued at/after notBefore: a new login
    assert not r.is_revoked("u1", None, NOW - 1, NOW + 60)  # forgotten at until


def test_a_repeated_line_kicks_nobody_a_tightened_one_does() -> None:
    r = Revocations()
    r.apply(f"U u1 {NOW} {NOW + 60}\nS u1 s1 {NOW + 60}\n".encode(), NOW)
    again = r.apply(f"U u1 {NOW} {NOW + 60}\r\nS u1 s1 {NOW + 90}\n".encode(), NOW)
    assert again.applied == 2 and again.kick == []
    later = r.apply(f"U u1 {NOW + 10} {NOW + 30}\n".encode(), NOW)
    assert later.kick == ["u1"]
    assert r.is_revoked("u1", None, NOW + 5, NOW + 40)  # notBefore raised, until kept


def test_malformed_and_expired_lines_are_skipped_the_rest_applies() -> None:
    r = Revocations()
    bad = [
        "X u1 1 2",
        f"S u1 {NOW + 60}",
        f"S u/1 s {NOW + 60}",
        f"S u1 s!d {NOW + 60}",
        f"U u1 notatime {NOW + 60}",
        f"U u1 1 {NOW + 60} extra",
        f"U  u1 1 {NOW + 60}",
        f"U {'a' * 65} 1 {NOW + 60}",
        "U u1 1 1234567890123",
        "SYNC bad/id",
    ]
    out = r.apply(("\n".join([*bad, f"U u2 {NOW} {NOW + 60}", f"U u3 1 {NOW}"])).encode(), NOW)
    assert (out.malformed, out.applied, out.expired) == (len(bad), 1, 1)
    assert r.is_revoked("u2", None, NOW - 1, NOW)
    assert not r.is_revoked("u1", None, NOW - 1, NOW)
    assert r.apply(b"\xff\xfe", NOW).malformed == 1


def test_sync_lines_are_reported() -> None:
    out = Revocations().apply(b"SYNC abc123\nSYNC def-456\n", NOW)
    assert out.synced_boots == ["abc123", "def-456"]


def test_when_full_it_still_kicks_and_prunes_first() -> None:
    r = Revocations(max_entries=2)
    r.apply(f"U a 1 {NOW + 1}\nU b 1 {NOW + 100}\n".encode(), NOW)
    out = r.apply(f"U c 1 {NOW + 100}\n".encode(), NOW)
    assert (out.full, out.kick) == (1, ["c"]) and not r.is_revoked("c", None, 0, NOW)
    out = r.apply(f"U c 1 {NOW + 100}\n".encode(), NOW + 1)  # a expired: room again
    assert out.applied == 1 and r.is_revoked("c", None, 0, NOW + 1)
