"""Upload, detail, list and image: real PostgreSQL and RabbitMQ; attacked with bad input and
other users' ids."""

from __future__ import annotations

import io
import json
import subprocess
import uuid
from urllib.parse import unquote, urlsplit

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Engine

from api.app import create_app
from plantnotify.contracts.queues import ANALYSIS_QUEUE, JOB_CONTENT_TYPE, AnalysisJob
from plantnotify.db.models import Analysis, AnalysisImage
from plantnotify.settings import Settings
from tests.support.api import SettingsFactory, User, image_bytes, register
from tests.support.net import free_port, wait_for
from tests.support.rabbit import declare, drain, publish_is_accepted

UPLOAD = "/api/v1/plantanalyses/async"
LIST = "/api/v1/plantanalyses"


@pytest.fixture(scope="module")
def db(api_settings: Settings) -> Engine:
    engine = create_engine(api_settings.database_url)
    yield engine
    engine.dispose()


def count_analyses(db: Engine, user_id: str, status: str | None = None) -> int:
    query = select(func.count()).select_from(Analysis).where(Analysis.user_id == user_id)
    if status:
        query = query.where(Analysis.status == status)
    with db.connect() as conn:
        return int(conn.execute(query).scalar_one())


def upload(client: TestClient, user: User, data: bytes, **form: str) -> object:
    return client.post(
        UPLOAD,
        headers=user.headers,
        files={"image": ("leaf.jpg", data, "image/jpeg")},
        data=form,
    )


# --- the happy path -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "mime"), [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")]
)
def test_upload_stores_and_queues_a_confirmed_persistent_job(
    client: TestClient, alice: User, api_rabbitmq_url: str, db: Engine, fmt: str, mime: str
) -> None:
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    data = image_bytes(fmt)
    r = client.post(
        UPLOAD,
        headers={**alice.headers, "X-Request-ID": "req-upload-1"},
        # the client's filename and content type are ignored: the bytes decide
        files={"image": ("whatever.bin", data, "application/octet-stream")},
        data={"cropType": "tomato"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "Processing" and set(body) == {"analysisId", "status"}
    analysis_id = body["analysisId"]
    assert r.headers["Location"] == f"/api/v1/plantanalyses/{analysis_id}"
    assert r.headers["X-Request-ID"] == "req-upload-1"

    with db.connect() as conn:
        row = conn.execute(select(Analysis).where(Analysis.id == analysis_id)).one()
        stored = conn.execute(
            select(AnalysisImage.data).where(AnalysisImage.analysis_id == analysis_id)
        ).scalar_one()
    assert (row.user_id, row.status, row.crop_type, row.mime_type) == (
        alice.user_id,
        "Processing",
        "tomato",
        mime,
    )
    assert stored == data and row.image_size == len(data)
    assert row.queued_at is not None  # confirmed by RabbitMQ: the requeue sweep leaves it

    messages = drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    assert len(messages) == 1
    properties, raw = messages[0]
    job = AnalysisJob.model_validate_json(raw)
    assert job == AnalysisJob(
        analysis_id=analysis_id, user_id=alice.user_id, request_id="req-upload-1"
    )
    assert json.loads(raw) == {
        "analysisId": analysis_id,
        "userId": alice.user_id,
        "requestId": "req-upload-1",
    }
    assert properties.delivery_mode == 2  # persistent
    assert properties.content_type == JOB_CONTENT_TYPE
    assert properties.message_id == analysis_id


def test_detail_list_and_image_of_the_owner(client: TestClient, alice: User) -> None:
    data = image_bytes("PNG")
    ids = [upload(client, alice, data).json()["analysisId"] for _ in range(3)]  # type: ignore[attr-defined]

    r = client.get(f"{LIST}/{ids[0]}", headers=alice.headers)
    assert r.status_code == 200
    detail = r.json()
    assert set(detail) == {
        "analysisId",
        "status",
        "cropType",
        "primaryConcern",
        "overallHealthScore",
        "result",
        "errorMessage",
        "createdAt",
        "updatedAt",
        "completedAt",
        "imageUrl",
    }
    assert detail["analysisId"] == ids[0] and detail["status"] == "Processing"
    assert detail["imageUrl"] == f"/api/v1/plantanalyses/{ids[0]}/image"
    assert detail["cropType"] is None and detail["result"] is None

    image = client.get(detail["imageUrl"], headers=alice.headers)
    assert image.status_code == 200
    assert image.content == data
    assert image.headers["content-type"] == "image/png"
    assert image.headers["x-content-type-options"] == "nosniff"

    listed = client.get(LIST, headers=alice.headers).json()
    assert [a["analysisId"] for a in listed] == list(reversed(ids))  # newest first


def test_list_pages_with_before(client: TestClient) -> None:
    user = register(client)
    data = image_bytes()
    ids = [upload(client, user, data).json()["analysisId"] for _ in range(5)]  # type: ignore[attr-defined]
    newest_first = list(reversed(ids))

    r = client.get(LIST, params={"limit": 2}, headers=user.headers)
    assert [a["analysisId"] for a in r.json()] == newest_first[:2]
    seen = [a["analysisId"] for a in r.json()]
    while "X-Next-Before" in r.headers:
        r = client.get(
            LIST, params={"limit": 2, "before": r.headers["X-Next-Before"]}, headers=user.headers
        )
        assert r.status_code == 200
        seen += [a["analysisId"] for a in r.json()]
    assert seen == newest_first

    # before as a time: everything is older than the far future, nothing older than the past
    future = client.get(LIST, params={"before": "2999-01-01T00:00:00Z"}, headers=user.headers)
    assert len(future.json()) == 5
    past = client.get(LIST, params={"before": "2000-01-01T00:00:00+00:00"}, headers=user.headers)
    assert past.json() == []


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "x"},
        {"before": "not-a-cursor"},
        {"before": "x" * 65},
    ],
)
def test_list_rejects_bad_paging(
    client: TestClient, alice: User, params: dict[str, object]
) -> None:
    r = client.get(LIST, params=params, headers=alice.headers)
    assert r.status_code == 422
    assert isinstance(r.json()["detail"], str)


def test_another_users_analysis_is_404_everywhere(
    client: TestClient, alice: User, bob: User
) -> None:
    analysis_id = upload(client, alice, image_bytes()).json()["analysisId"]  # type: ignore[attr-defined]
    for path in (f"{LIST}/{analysis_id}", f"{LIST}/{analysis_id}/image"):
        theirs = client.get(path, headers=bob.headers)
        unknown = client.get(path.replace(analysis_id, str(uuid.uuid4())), headers=bob.headers)
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json() == unknown.json()  # indistinguishable from "does not exist"
        assert client.get(path).status_code == 401
    # bob cannot page through alice's list using her id as a cursor
    r = client.get(LIST, params={"before": analysis_id}, headers=bob.headers)
    assert r.status_code == 422
    assert analysis_id not in json.dumps(client.get(LIST, headers=bob.headers).json())


def test_unknown_or_hostile_ids_are_404(client: TestClient, alice: User) -> None:
    for bad in ("nope", "x" * 200, "%27%20OR%201=1", "..%2F..%2Fetc"):
        assert client.get(f"{LIST}/{bad}", headers=alice.headers).status_code == 404


# --- bad uploads: nothing stored, nothing queued ----------------------------------------------


def _truncated_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((256, 256), 64).convert("RGB").save(buf, "JPEG")
    return buf.getvalue()[:-400]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"just some text, renamed to leaf.jpg\n" * 10, id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(_truncated_jpeg(), id="truncated-jpeg"),
        pytest.param(
            b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect/></svg>', id="svg"
        ),
        pytest.param(b"<!doctype html><script>alert(1)</script>", id="html"),
        pytest.param(image_bytes("GIF"), id="gif"),
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00" * 64, id="jpeg-magic-only"),
    ],
)
def test_not_an_image_is_415_and_nothing_is_stored(
    client: TestClient, api_rabbitmq_url: str, db: Engine, payload: bytes
) -> None:
    user = register(client)
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    r = upload(client, user, payload)
    assert r.status_code == 415, r.text  # type: ignore[attr-defined]
    assert "JPEG, PNG, WebP or HEIC" in r.json()["detail"]  # type: ignore[attr-defined]
    assert count_analyses(db, user.user_id) == 0
    assert drain(api_rabbitmq_url, ANALYSIS_QUEUE) == []


def test_oversize_is_413_before_anything_is_stored(
    client: TestClient, api_settings: Settings, api_rabbitmq_url: str, db: Engine
) -> None:
    user = register(client)
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    limit = api_settings.max_upload_bytes
    big = image_bytes() + b"\0" * limit  # a valid JPEG start, one limit too long
    r = upload(client, user, big)
    assert r.status_code == 413  # type: ignore[attr-defined]
    assert "MiB" in r.json()["detail"]  # type: ignore[attr-defined]

    # without a Content-Length (chunked), the limit is enforced while streaming
    def chunks():  # type: ignore[no-untyped-def]
        boundary = b"XbOuNdArY"
        yield (
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n\r\n'
        )
        for _ in range(limit // 65536 + 2):
            yield b"\0" * 65536
        yield b"\r\n--" + boundary + b"--\r\n"

    r = client.post(
        UPLOAD,
        headers={**user.headers, "Content-Type": "multipart/form-data; boundary=XbOuNdArY"},
        content=chunks(),
    )
    assert r.status_code == 413
    assert count_analyses(db, user.user_id) == 0
    assert drain(api_rabbitmq_url, ANALYSIS_QUEUE) == []


def test_exactly_the_limit_is_accepted_one_byte_more_is_not(
    client: TestClient, api_settings: Settings
) -> None:
    user = register(client)
    limit = api_settings.max_upload_bytes
    png = image_bytes("PNG")
    exact = png + b"\0" * (limit - len(png))  # bytes after IEND are ignored by decoders
    assert len(exact) == limit
    assert upload(client, user, exact).status_code == 202  # type: ignore[attr-defined]
    assert upload(client, user, exact + b"\0").status_code == 413  # type: ignore[attr-defined]


def test_missing_image_field_is_422(client: TestClient, db: Engine) -> None:
    user = register(client)
    r = client.post(
        UPLOAD,
        headers=user.headers,
        files={"photo": ("leaf.jpg", image_bytes(), "image/jpeg")},
        data={"cropType": "tomato"},
    )
    assert r.status_code == 422
    assert "image" in r.json()["detail"]
    r = client.post(UPLOAD, headers=user.headers, data={"cropType": "tomato"})
    assert r.status_code in (415, 422)  # urlencoded form: not multipart at all
    assert count_analyses(db, user.user_id) == 0


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, 415),
        ({"content": image_bytes(), "headers": {"Content-Type": "image/jpeg"}}, 415),
        (
            {
                "content": b"--x\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=x"},
            },
            400,
        ),
        ({"content": b"--x--\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 400),
    ],
)
def test_malformed_bodies_are_clear_4xx(
    client: TestClient, db: Engine, kwargs: dict[str, object], status: int
) -> None:
    user = register(client)
    headers = {**user.headers, **kwargs.pop("headers")}  # type: ignore[dict-item]
    r = client.post(UPLOAD, headers=headers, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)
    assert count_analyses(db, user.user_id) == 0


@pytest.mark.parametrize("crop", ["x" * 65, "tab\there", "bad\x00byte"])
def test_bad_crop_type_is_422(client: TestClient, alice: User, crop: str) -> None:
    r = upload(client, alice, image_bytes(), cropType=crop)
    assert r.status_code == 422  # type: ignore[attr-defined]
    assert "cropType" in r.json()["detail"]  # type: ignore[attr-defined]


def test_upload_requires_a_token_before_reading_the_body(client: TestClient, db: Engine) -> None:
    r = client.post(UPLOAD, files={"image": ("a.jpg", image_bytes(), "image/jpeg")})
    assert r.status_code == 401


# --- RabbitMQ cannot take the job: 503 and nothing left in Processing -------------------------


def test_rabbitmq_down_is_503_and_leaves_nothing_processing(
    make_settings: SettingsFactory, db: Engine
) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    with TestClient(create_app(make_settings(rabbitmq_url=closed))) as down:
        user = register(down)
        r = upload(down, user, image_bytes())
        assert r.status_code == 503  # type: ignore[attr-defined]
        assert "try the upload again" in r.json()["detail"]  # type: ignore[attr-defined]
        assert r.headers["Retry-After"]  # type: ignore[attr-defined]
        assert count_analyses(db, user.user_id, "Processing") == 0
        listed = down.get(LIST, headers=user.headers).json()
        assert [a["status"] for a in listed] == ["Failed"]
        assert "could not be queued" in listed[0]["errorMessage"]
        metrics = down.get("/metrics").text
        assert 'plantnotify_api_uploads_total{outcome="queue_unavailable"} 1.0' in metrics


def test_rabbitmq_refusing_the_job_is_503(
    make_settings: SettingsFactory, db: Engine, api_rabbitmq_url: str
) -> None:
    """A queue that nacks publishes (full, x-overflow reject-publish) answers 503 too."""
    vhost = unquote(urlsplit(api_rabbitmq_url).path[1:])
    ctl = ["rabbitmqctl", "-q", "-p", vhost]
    full = ["set_policy", "--apply-to", "queues", "api-test-full", f"^{ANALYSIS_QUEUE}$"]
    declare(api_rabbitmq_url)
    drain(api_rabbitmq_url, ANALYSIS_QUEUE)
    subprocess.run([*ctl, *full, '{"max-length": 0}'], check=True, capture_output=True)
    try:
        # Policies apply asynchronously; a quorum queue rejects once it is over its limit.
        wait_for(
            lambda: not publish_is_accepted(api_rabbitmq_url, ANALYSIS_QUEUE),
            timeout=30,
            what="the queue to refuse publishes",
        )
        with TestClient(create_app(make_settings())) as refusing:
            user = register(refusing)
            r = upload(refusing, user, image_bytes())
            assert r.status_code == 503  # type: ignore[attr-defined]
            assert count_analyses(db, user.user_id, "Processing") == 0
            assert count_analyses(db, user.user_id, "Failed") == 1
    finally:
        subprocess.run([*ctl, "clear_policy", "api-test-full"], check=True, capture_output=True)
        drain(api_rabbitmq_url, ANALYSIS_QUEUE)
        wait_for(
            lambda: publish_is_accepted(api_rabbitmq_url, ANALYSIS_QUEUE),
            timeout=30,
            what="the queue to accept publishes again",
        )
        drain(api_rabbitmq_url, ANALYSIS_QUEUE)


def test_upload_metrics_count_outcomes(client: TestClient, alice: User) -> None:
    def value(outcome: str) -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith(f'plantnotify_api_uploads_total{{outcome="{outcome}"}}'):
                return float(line.split()[-1])
        raise AssertionError(outcome)

    before = value("accepted"), value("not_an_image")
    upload(client, alice, image_bytes())
    upload(client, alice, b"text")
    assert (value("accepted"), value("not_an_image")) == (before[0] + 1, before[1] + 1)


def test_db_has_no_orphan_images(db: Engine) -> None:
    with db.connect() as conn:
        orphans = conn.execute(
            text(
                "SELECT count(*) FROM analysis_images i "
                "LEFT JOIN analyses a ON a.id = i.analysis_id WHERE a.id IS NULL"
            )
        ).scalar_one()
    assert orphans == 0
