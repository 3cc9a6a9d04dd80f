"""Is it really a photo? Decided from the bytes with Pillow, never from the client's headers.

Accepted: JPEG, PNG and WebP that decode completely (a truncated file fails). SVG, HTML, text
renamed ``.jpg`` and every other format are refused, so the image endpoint only ever serves
bytes of the three raster types, with their own MIME type.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
# 50 megapixels: more than any phone camera, and bounds decoding memory (decompression bombs).
MAX_PIXELS = 50_000_000


class ImageRejected(ValueError):
    """Not an accepted image; the message says why, in words a client can act on."""


class ImageTooLarge(ImageRejected):
    """An image whose pixel dimensions exceed ``MAX_PIXELS``."""


@dataclass(frozen=True, slots=True)
class CheckedImage:
    mime_type: str
    width: int
    height: int


def check_image(data: bytes) -> CheckedImage:
    """Decode ``data`` fully; raise ``ImageRejected`` unless it is a whole JPEG/PNG/WebP."""
    if not data:
        raise ImageRejected("The image is empty. Send a JPEG, PNG, WebP or HEIC photo")
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
