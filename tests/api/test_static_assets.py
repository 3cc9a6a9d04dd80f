"""The web app's files: pre-compressed (brotli, gzip) at build time, content-hashed files cached
for a year, ``index.html`` (and the service worker) revalidated on every load."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from tests.support.api import SettingsFactory
from tests.support.live_stack import WEB_DIR, build_web

YEAR = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def dist() -> Path:
    build_web()  # the real build: the test checks what `make web` produces
    return WEB_DIR / "dist"


@pytest.fixture
def web(make_settings: SettingsFactory, dist: Path) -> TestClient:
    with TestClient(create_app(make_settings(web_dist_dir=dist))) as c:
        yield c


def bundle(web: TestClient) -> str:
    html = web.get("/").text
    match = re.search(r'src="\./(assets/main-[A-Z0-9]+\.js)"', html)
    assert match, html
    return match.group(1)


def test_the_build_precompresses_every_text_file(dist: Path) -> None:
    for name in ["index.html", *[p.name for p in (dist / "assets").glob("*.js")]]:
        path = dist / name if (dist / name).exists() else dist / "assets" / name
        assert path.with_name(path.name + ".br").is_file(), name
        assert path.with_name(path.name + ".gz").is_file(), name
        assert gzip.decompress(path.with_name(path.name + ".gz").read_bytes()) == path.read_bytes()


def test_hashed_bundle_is_compressed_and_cached_a_year(web: TestClient, dist: Path) -> None:
    path = bundle(web)
    raw = (dist / path).read_bytes()
    for coding, suffix in (("br", ".br"), ("gzip", ".gz")):
        r = web.get(f"/{path}", headers={"Accept-Encoding": coding})
        assert r.status_code == 200
        assert r.headers["content-encoding"] == coding
        assert r.headers["cache-control"] == YEAR
        assert r.headers["vary"] == "Accept-Encoding"
        assert r.headers["content-type"].startswith(("text/javascript", "application/javascript"))
        assert int(r.headers["content-length"]) == (dist / (path + suffix)).stat().st_size
        if coding == "gzip":
            assert r.content == raw  # the client decodes it back to the very same file
    compressed = (dist / (path + ".br")).stat().st_size
    assert compressed < len(raw) / 3, f"brotli {compressed} of {len(raw)} bytes"


def test_no_compression_when_the_client_takes_none(web: TestClient, dist: Path) -> None:
    path = bundle(web)
    r = web.get(f"/{path}", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers
    assert r.content == (dist / path).read_bytes()
    r = web.get(f"/{path}", headers={"Accept-Encoding": "br;q=0, gzip"})
    assert r.headers["content-encoding"] == "gzip"


def test_index_and_service_worker_are_never_cached(web: TestClient) -> None:
    for url in ("/", "/index.html", "/analyses/123", "/sw.js"):
        r = web.get(url, headers={"Accept-Encoding": "gzip"})
        assert r.status_code == 200, url
        assert r.headers["cache-control"] == "no-cache", url


def test_revalidation_answers_304(web: TestClient) -> None:
    first = web.get("/", headers={"Accept-Encoding": "br"})
    again = web.get("/", headers={"Accept-Encoding": "br", "If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.headers["cache-control"] == "no-cache"
