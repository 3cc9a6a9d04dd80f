"""Is it really a photo? Decided from the bytes with Pillow, never from the client's headers.

Accepted: JPEG, PNG and WebP that decode completely (a truncated file fails). SVG, HTML, text
renamed ``.jpg`` and every other format are refused, so the image endpoint only ever serves
bytes of the three raster types, with their own MIME type.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# 50 megapixels: more than any phone camera.
MAX_PIXELS = 50_000_000
# What one decode may allocate for its pixels (Pillow keeps most modes at 4 bytes a pixel;
# JPEGs are decoded at 1/8 scale). 64 MiB is a 16-megapixel PNG/WebP with alpha; a phone's
# 50-megapixel JPEG needs 3 MiB. The pixel cap alone let a 381 KB 7000x7000 16-bit PNG cost
# 196 MB.
MAX_DECODED_BYTES = 64 * 1024 * 1024
# Decodes at once per API process; more wait (at most DECODE_WAIT_SECONDS, then 503). So the
# pixels of bad images cost a process at most MAX_CONCURRENT_DECODES * MAX_DECODED_BYTES
# (128 MiB) on top of the raw uploads (each at most MAX_UPLOAD_MB); tests/api/test_images.py
# measures it. A HEIC conversion (api/photos.py) takes a slot too; libheif decodes at full size,
# so one costs up to MAX_PIXELS * 4 bytes (200 MB for 50 megapixels, 48 MB for an iPhone's 12).
MAX_CONCURRENT_DECODES = 2
DECODE_WAIT_SECONDS = 30.0
_decodes = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)
# Bytes per pixel of Pillow's in-memory modes (anything else: 4).
_MODE_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


class ImageRejected(ValueError):
    """Not an accepted image; the message says why, in words a client can act on."""


class ImageTooLarge(ImageRejected):
    """An image whose pixel dimensions exceed ``MAX_PIXELS`` or whose decoded pixels would
    exceed ``MAX_DECODED_BYTES``."""


class DecoderBusy(Exception):
    """Every decode slot stayed taken for ``DECODE_WAIT_SECONDS``."""


def decoded_bytes(width: int, height: int, mode: str, fmt: str) -> int:
    """What decoding costs in pixel memory (JPEGs are decoded at 1/8 scale here)."""
    if fmt == "JPEG":
        width, height = -(-width // 8), -(-height // 8)
    return width * height * _MODE_BYTES.get(mode, 4)


@dataclass(frozen=True, slots=True)
class CheckedImage:
    mime_type: str
    width: int
    height: int


def check_image(data: bytes) -> CheckedImage:
    """Decode ``data`` fully; raise ``ImageRejected`` unless it is a whole JPEG/PNG/WebP.

    At most ``MAX_CONCURRENT_DECODES`` run at once; ``DecoderBusy`` when no slot frees up."""
    if not data:
        raise ImageRejected("The image is empty. Send a JPEG, PNG, WebP or HEIC photo")
    with decode_slot():
        return _check(data)


@contextmanager
def decode_slot() -> Iterator[None]:
    """One of the ``MAX_CONCURRENT_DECODES`` slots, for any decode (HEIC conversion too)."""
    if not _decodes.acquire(timeout=DECODE_WAIT_SECONDS):
        raise DecoderBusy("every image decoder is busy")
    try:
        yield
    finally:
        _decodes.release()


def _check(data: bytes) -> CheckedImage:
    accepted = "Send a JPEG, PNG, WebP or HEIC photo"
    try:
        with Image.open(io.BytesIO(data), formats=list(FORMATS)) as probe:
            fmt = probe.format or ""
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise ImageTooLarge(
                    f"The image has {width}x{height} pixels; at most "
                    f"{MAX_PIXELS // 1_000_000} megapixels are accepted"
                )
            if decoded_bytes(width, height, probe.mode, fmt) > MAX_DECODED_BYTES:
                raise ImageTooLarge(
                    f"The image has {width}x{height} pixels in mode {probe.mode}, which would "
                    f"take more than {MAX_DECODED_BYTES // (1024 * 1024)} MiB to check; send a "
                    "JPEG photo, or a smaller PNG/WebP"
                )
            probe.verify()  # structure and checksums (PNG CRCs)
        with Image.open(io.BytesIO(data), formats=[fmt]) as image:
            if fmt == "JPEG":
                # Decode at 1/8 scale: every byte of the entropy-coded data is still read
                # (truncation fails), at a fraction of the memory and time.
                image.draft("RGB", (max(1, width // 8), max(1, height // 8)))
            image.load()
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected(
            f"The file is not a JPEG, PNG, WebP or HEIC image. {accepted}"
        ) from None
    except Image.DecompressionBombError:
        raise ImageTooLarge("The image has too many pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc)[:120]
        raise ImageRejected(f"The image is damaged or incomplete ({reason}). {accepted}") from None
    if fmt not in FORMATS:
        raise ImageRejected(f"The file is not a JPEG, PNG, WebP or HEIC image. {accepted}")
    return CheckedImage(mime_type=FORMATS[fmt], width=width, height=height)
