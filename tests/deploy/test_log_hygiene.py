"""Log hygiene over a full flow (tests/deploy/conftest.py: upload -> worker -> MQTT event ->
bridge push, every part a real process with JSON logs at DEBUG): every line of every part is
searched for secrets and personal data, and one request id is followed from the API through
the worker to the bridge.

Never in a log: the JWT secret, access and MQTT tokens, the password, the username, the FCM
device token, the database and RabbitMQ passwords, the image. User ids may appear: they are how
operators follow one user's trouble.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.deploy.conftest import StackRun


def _json_lines(name: str, text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        try:
            docs.append(json.loads(line))
        except ValueError:
            pytest.fail(f"{name}: a log line that is not JSON: {line[:300]}")
    return docs


def test_no_secret_or_personal_data_in_any_log(stack_run: StackRun) -> None:
    for name, part in stack_run.parts.items():
        text = part.log()
        assert text, f"{name} logged nothing"
        for what, value in stack_run.secrets.items():
            assert value not in text, f"{what} found in the {name} log"


def test_every_line_of_our_parts_is_one_json_object(stack_run: StackRun) -> None:
    for name, part in stack_run.parts.items():
        if name == "broker":
            continue  # it also relays Mosquitto's own text output (checked for secrets above)
        for doc in _json_lines(name, part.log()):
            assert doc["level"] and doc["logger"] and doc["service"] == name, doc


def test_one_request_id_follows_the_analysis_from_api_to_worker_to_bridge(
    stack_run: StackRun,
) -> None:
    carried: dict[str, int] = {}
    for name, part in stack_run.parts.items():
        if name == "broker":
            continue
        for doc in _json_lines(name, part.log()):
            if doc.get("request_id") == stack_run.request_id:
                carried[doc["service"]] = carried.get(doc["service"], 0) + 1
                assert doc.get("user_id") in (None, stack_run.user_id), doc
                assert doc.get("analysis_id") in (None, stack_run.analysis_id), doc
    assert {"api", "worker", "bridge"} <= set(carried), f"request id only in {carried}"
    # Operators can follow the user by id in every part that handled the upload.
    for name in ("api", "worker", "bridge"):
        assert stack_run.user_id in stack_run.parts[name].log(), name
