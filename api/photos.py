"""Every photo a phone takes: HEIC/HEIF (iPhones) is converted to JPEG before the usual check.

``accept_photo(data)`` returns the bytes to store and their checked type. HEIF is recognised
from its bytes (the ``ftyp`` box), never from the client's headers; its pixel size is read from
the header and bounded (``images.MAX_PIXELS``) before anything is decoded. The JPEG keeps the
photo's orientation (EXIF rotation applied) and drops the rest of its metadata (location).
Everything after that is ``images.check_image``: JPEG, PNG and WebP are stored as sent, any
other format is refused with a message naming the ones we take.
"""

from __future__ import annotations

import io

from PIL import ImageOps

from api.images import (
    MAX_PIXELS,
    CheckedImage,
    ImageRejected,
    ImageTooLarge,
    check_image,
    decode_slot,
)

# What uploads accept (GET /config `imageTypes`; the web app's file picker offers exactly these).
ACCEPTED_MIME_TYPES = ("image/jpeg", "image/png", "image/webp", "image/heic", "image/heif")
HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1", b"heif"}
JPEG_QUALITY = 90


def is_heif(data: bytes) -> bool:
    """An ISO-BMFF file whose major or compatible brands say HEIF."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    size = int.from_bytes(data[0:4], "big")
    box = data[8 : min(max(size, 16), 256)]
    brands = {box[0:4]} | {box[i : i + 4] for i in range(8, len(box) - 3, 4)}
    return bool(brands & HEIF_BRANDS)


def heif_to_jpeg(data: bytes) -> bytes:
    import pillow_heif

    try:
        heif = pillow_heif.open_heif(data, convert_hdr_to_8bit=True)
        width, height = heif.size
        if width * height > MAX_PIXELS:
            raise ImageTooLarge(
                f"The image has {width}x{height} pixels; at most "
                f"{MAX_PIXELS // 1_000_000} megapixels are accepted"
            )
        image = heif.to_pillow()  # libheif applies the rotation; its EXIF then says "upright"
    except ImageRejected:
        raise
    except (ValueError, RuntimeError, OSError, EOFError) as exc:
        raise ImageRejected(
            f"The HEIC photo is damaged or incomplete ({str(exc)[:120]}). "
            "Send the photo again, or as JPEG"
        ) from None
    image = ImageOps.exif_transpose(image).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


def accept_photo(data: bytes) -> tuple[bytes, CheckedImage]:
    """The bytes to store (HEIF converted to JPEG) and their checked type."""
    if is_heif(data):
        with decode_slot():  # bounded like every decode (api/images.py)
            data = heif_to_jpeg(data)
    return data, check_image(data)


__all__ = ["ACCEPTED_MIME_TYPES", "accept_photo", "is_heif"]
