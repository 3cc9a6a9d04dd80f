"""Every photo a phone takes: HEIC/HEIF is converted to JPEG; other formats are refused with a
message naming the ones we take; what the picker offers (GET /config) is what is accepted."""

from __future__ import annotations

import io

import pillow_heif
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.images import MAX_PIXELS, ImageTooLarge
from api.photos import ACCEPTED_MIME_TYPES, accept_photo, heif_to_jpeg, is_heif
from tests.support.api import User

UPLOAD = "/api/v1/plantanalyses/async"


def heic_bytes(size: tuple[int, int] = (96, 64), exif_orientation: int | None = None) -> bytes:
    image = Image.new("RGB", size, (40, 140, 60))
    image.paste((120, 80, 40), (0, 0, size[0] // 3, size[1]))  # a brown stripe on the left
    heif = pillow_heif.from_pillow(image)
    out = io.BytesIO()
    options: dict[str, object] = {"quality": 85}
    if exif_orientation:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        options["exif"] = exif.tobytes()
    heif.save(out, format="HEIF", **options)
    return out.getvalue()


def other_format(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(out, fmt)
    return out.getvalue()


def test_heic_is_recognised_from_its_bytes_not_its_name() -> None:
    assert is_heif(heic_bytes())
    assert not is_heif(other_format("JPEG"))
    assert not is_heif(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom")  # a video
    assert not is_heif(b"")


def test_heic_becomes_a_jpeg_upright_and_without_metadata() -> None:
    data, checked = accept_photo(heic_bytes((96, 64), exif_orientation=6))  # "rotate 90° CW"
    assert checked.mime_type == "image/jpeg"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        assert image.size == (64, 96), "the EXIF rotation is applied"
        assert not image.getexif(), "no metadata (location) is kept"


def test_a_huge_heic_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("api.photos.MAX_PIXELS", 96 * 64 - 1)
    with pytest.raises(ImageTooLarge):
        heif_to_jpeg(heic_bytes((96, 64)))
    assert MAX_PIXELS > 96 * 64


def test_upload_of_an_iphone_photo_is_stored_as_jpeg(client: TestClient, alice: User) -> None:
    r = client.post(
        UPLOAD,
        headers=alice.headers,
        files={"image": ("IMG_0001.HEIC", heic_bytes(), "image/heic")},
    )
    assert r.status_code == 202, r.text
    image = client.get(
        f"/api/v1/plantanalyses/{r.json()['analysisId']}/image", headers=alice.headers
    )
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/jpeg"
    assert image.content[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_refused_naming_what_works(
    client: TestClient, alice: User, fmt: str
) -> None:
    r = client.post(
        UPLOAD, headers=alice.headers, files={"image": (f"x.{fmt.lower()}", other_format(fmt))}
    )
    assert r.status_code == 415, r.text
    assert "JPEG, PNG, WebP or HEIC" in r.json()["detail"]


def test_a_damaged_heic_is_415(client: TestClient, alice: User) -> None:
    data = heic_bytes()
    r = client.post(
        UPLOAD, headers=alice.headers, files={"image": ("x.heic", data[: len(data) // 2])}
    )
    assert r.status_code == 415, r.text


def test_config_lists_exactly_the_accepted_types(client: TestClient) -> None:
    assert client.get("/api/v1/config").json()["imageTypes"] == list(ACCEPTED_MIME_TYPES)
