"""Hypothesis against the live broker: usernames, client ids, tokens and filters.

The oracle is the Python side of the contract (plantnotify/contracts/ids.py): the plugin must
accept exactly the identities it accepts, never grant a filter outside ``users/{sub}/``, and
never crash. Examples are bounded so the suite stays fast.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantnotify.contracts.ids import USER_ID_PATTERN, is_valid_client_id, is_valid_user_id
from tests.mosquitto.tokens import claims, hs256
from tests.support.broker import BrokerHandle
from tests.support.mqtt import raw_connect, subscribe_packet

HOSTILE = "aZ09_-/+#$ .:é\x00\x01\n*>"
valid_ids = st.from_regex(USER_ID_PATTERN, fullmatch=True)
hostile_ids = st.text(alphabet=HOSTILE, min_size=0, max_size=70)
user_ids = st.one_of(valid_ids, hostile_ids)


@st.composite
def identities(draw: st.DrawFn) -> tuple[str, str]:
    user = draw(user_ids)
    shape = draw(st.sampled_from(["same", "suffix", "other"]))
    if shape == "same":
        return user, user
    if shape == "suffix":
        return user, f"{user}-{draw(st.text(alphabet=HOSTILE, min_size=0, max_size=70))}"
    return user, draw(user_ids)


@st.composite
def filters(draw: st.DrawFn, user: str) -> str:
    levels = st.text(alphabet="ab+#$/ \x00", min_size=0, max_size=6)
    tail = "/".join(draw(st.lists(st.one_of(levels, st.just("+"), st.just("#")), max_size=4)))
    prefix = draw(
        st.sampled_from(
            [
                f"users/{user}/",
                f"users/{user}",
                "users/",
                "$share/g/users/" + user + "/",
                "",
                "#",
                "+/",
                "$SYS/",
                "plantnotify/",
            ]
        )
    )
    return prefix + tail


def _valid_filter(f: str) -> bool:
    if not f or "\x00" in f or len(f.encode()) > 65535:
        return False
    levels = f.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


def _inside(user: str, f: str) -> bool:
    root = f"users/{user}/"
    return f.startswith(root) and len(f) > len(root)


SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(identity=identities(), version=st.sampled_from([4, 5]))
def test_exactly_the_contracts_identities_are_accepted(
    broker: BrokerHandle, identity: tuple[str, str], version: int
) -> None:
    user, client_id = identity
    # A correctly signed token whose sub is the username: only the identity rules decide.
    token = hs256({"alg": "HS256", "typ": "JWT"}, claims(sub=user), broker.settings.jwt_secret)
    code, raw = raw_connect(broker.port, client_id.encode(), user.encode(), token, version=version)
    raw.close()
    expected = is_valid_user_id(user) and is_valid_client_id(user, client_id)
    assert (code == 0) == expected, (user, client_id, code)


@SETTINGS
@given(data=st.data(), user=valid_ids, version=st.sampled_from([4, 5]))
def test_no_filter_outside_the_users_root_is_ever_granted(
    broker: BrokerHandle, data: st.DataObject, user: str, version: int
) -> None:
    topic_filter = data.draw(filters(user))
    code, raw = raw_connect(broker.port, user, user, broker.token(user), version=version)
    try:
        assert code == 0
        raw.send(subscribe_packet(1, [topic_filter.encode()], version=version))
        try:
            granted = raw.suback(version)[0] < 0x80
        except (ConnectionError, AssertionError):
            granted = False  # Mosquitto dropped a malformed filter with the connection
    finally:
        raw.close()
    if granted:
        assert _inside(user, topic_filter), topic_filter
    elif _inside(user, topic_filter) and _valid_filter(topic_filter):
        raise AssertionError(f"own filter refused: {topic_filter!r}")


@SETTINGS
@given(password=st.one_of(st.binary(max_size=600), st.text(max_size=600)))
def test_random_passwords_never_connect(broker: BrokerHandle, password: bytes | str) -> None:
    raw_pw = password.encode() if isinstance(password, str) else password
    code, raw = raw_connect(broker.port, "42", "42", raw_pw)
    raw.close()
    assert code != 0


def test_broker_is_alive_after_fuzzing(broker: BrokerHandle) -> None:
    assert broker.running()
    code, raw = raw_connect(broker.port, "42", "42", broker.token("42"))
    raw.close()
    assert code == 0
