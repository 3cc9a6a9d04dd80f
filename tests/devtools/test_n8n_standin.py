"""The N8N stand-in over real HTTP: it really reads the image, and the worker's client accepts
its answers."""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from devtools.n8n_standin import make_server
from devtools.world import leaf_png
from worker.n8n import STANDIN_WEBHOOK_PATH, N8nAnswer, N8nClient, N8nRequest


@pytest.fixture
def standin() -> Iterator[str]:
    server = make_server("127.0.0.1", 0, delay=0.05)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def analyse(url: str, image: bytes) -> httpx.Response:
    body = {
        "analysisId": "a1",
        "userId": "u1",
        "cropType": "pepper",
        "mimeType": "image/png",
        "imageBase64": base64.b64encode(image).decode(),
        "imageUrl": "/x",
    }
    return httpx.post(url + STANDIN_WEBHOOK_PATH, json=body, timeout=5)


def solid(color: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(out, fmt)
    return out.getvalue()


def test_a_healthy_leaf_scores_higher_than_a_spotted_one(standin: str) -> None:
    healthy = analyse(standin, leaf_png(spots=0)).json()
    spotted = analyse(standin, leaf_png(spots=40)).json()
    assert healthy["cropType"] == "pepper"
    assert healthy["overallHealthScore"] >= 95
    assert healthy["primaryConcern"] == "No visible disease"
    assert spotted["overallHealthScore"] < healthy["overallHealthScore"] - 10
    assert spotted["primaryConcern"].startswith("Leaf spot")
    yellow = analyse(standin, solid((215, 205, 50))).json()
    assert yellow["primaryConcern"].startswith("Chlorosis")
    nothing = analyse(standin, solid((250, 250, 250))).json()
    assert "overallHealthScore" not in nothing
    assert nothing["primaryConcern"] == "No plant tissue recognised in the image"


def test_the_worker_client_reads_its_answer(standin: str) -> None:
    client = N8nClient(standin + STANDIN_WEBHOOK_PATH, timeout=5, max_attempts=1, backoff=0)
    request = N8nRequest("a1", "u1", None, "image/png", leaf_png(spots=3), "/x")
    answer = client.analyse(request, threading.Event())
    assert isinstance(answer, N8nAnswer)
    assert answer.crop_type == "unknown" and answer.overall_health_score is not None
    assert "analysis" in answer.result


def test_bad_requests_get_a_clear_4xx(standin: str) -> None:
    assert analyse(standin, b"definitely not an image").status_code == 422
    bad = httpx.post(standin + STANDIN_WEBHOOK_PATH, content=b"{nope", timeout=5)
    assert bad.status_code == 400
    missing = httpx.post(standin + STANDIN_WEBHOOK_PATH, json={"analysisId": "a"}, timeout=5)
    assert missing.status_code == 400
    assert httpx.post(standin + "/elsewhere", json={}, timeout=5).status_code == 404
    assert httpx.get(standin + "/healthz", timeout=5).json()["status"] == "ok"
