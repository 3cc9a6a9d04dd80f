"""Bounded image decoding (issue 14, finding 4: a 381 KB 7000x7000 16-bit RGBA PNG passed the
50-megapixel cap, and four at once took the API from 340 MB to 860 MB).

The worst case is stated in api/images.py: pixels of at most MAX_CONCURRENT_DECODES images of
at most MAX_DECODED_BYTES each. Measured here as the peak RSS of a fresh process that checks
such images from many threads at once."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.images import (
    MAX_CONCURRENT_DECODES,
    MAX_DECODED_BYTES,
    ImageTooLarge,
    check_image,
)
from tests.support.api import User

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 7000, height: int = 7000) -> bytes:
    """A valid 16-bit RGBA PNG of zeros: tiny on the wire, huge once decoded. (Run-length
    deflate: as small as level 9 for zeros, in a sixth of the time.)"""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    packer = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    row = b"\x00" * (1 + width * 8)
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return png_bomb()


def test_the_reported_png_is_refused_before_decoding(bomb: bytes) -> None:
    assert len(bomb) < 1024 * 1024  # ~381 KB, as reported
    with pytest.raises(ImageTooLarge, match="MiB"):
        check_image(bomb)


def test_an_upload_of_it_is_413(client: TestClient, alice: User, bomb: bytes) -> None:
    r = client.post(
        "/api/v1/plantanalyses/async",
        headers=alice.headers,
        files={"image": ("bomb.png", bomb, "image/png")},
    )
    assert r.status_code == 413
    assert "MiB" in r.json()["detail"]


_MEASURE = """
import json, sys, threading
from api.images import check_image, ImageRejected
def hwm():  # peak RSS of this process image in KiB (ru_maxrss survives exec, VmHWM not)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
paths = json.loads(sys.argv[1])
blobs = [open(p, "rb").read() for p in paths]
base = hwm()
outcomes = []
def run(blob):
    try:
        check_image(blob)
        outcomes.append("ok")
    except ImageRejected as exc:
        outcomes.append(type(exc).__name__)
threads = [threading.Thread(target=run, args=(b,)) for b in blobs]
for t in threads: t.start()
for t in threads: t.join()
peak = hwm()
print(json.dumps({"grew": (peak - base) * 1024, "outcomes": sorted(outcomes)}))
"""


def _measure(paths: list[Path]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, json.dumps([str(p) for p in paths])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_worst_case_memory_is_bounded(tmp_path: Path, bomb: bytes) -> None:
    # four of the reported bombs at once: refused from their headers, nothing decoded
    bomb_path = tmp_path / "bomb.png"
    bomb_path.write_bytes(bomb)
    result = _measure([bomb_path] * 4)
    assert result["outcomes"] == ["ImageTooLarge"] * 4
    assert int(str(result["grew"])) < 20 * MiB, result

    # six of the largest images accepted (RGBA PNG at exactly MAX_DECODED_BYTES), at once:
    # at most MAX_CONCURRENT_DECODES are decoded together
    side = int((MAX_DECODED_BYTES // 4) ** 0.5)
    buf = io.BytesIO()
    Image.new("RGBA", (side, side), (10, 200, 30, 255)).save(buf, "PNG", compress_level=1)
    big = tmp_path / "big.png"
    big.write_bytes(buf.getvalue())
    result = _measure([big] * 6)
    assert result["outcomes"] == ["ok"] * 6
    grew = int(str(result["grew"]))
    bound = MAX_CONCURRENT_DECODES * MAX_DECODED_BYTES
    assert grew <= bound + 48 * MiB, f"peak grew {grew / MiB:.0f} MiB, bound {bound / MiB:.0f}"
    assert grew >= MAX_DECODED_BYTES * 0.9  # it really decoded them
