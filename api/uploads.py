"""Reading the upload form (``multipart/form-data``: ``image`` file, optional ``cropType``)
while it streams in, so an oversize body is refused at the limit instead of after spooling it.

FastAPI's ``UploadFile`` would spool the whole body to disk before the route runs, with no
limit on file parts; here python-multipart's push parser sees every chunk as it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

IMAGE_FIELD = "image"
CROP_TYPE_FIELD = "cropType"
CROP_TYPE_MAX = 64
FORM_OVERHEAD_BYTES = 64 * 1024  # part headers, boundaries and small text fields
MAX_TEXT_FIELD_BYTES = 1024
MAX_PART_HEADER_BYTES = 8 * 1024
MAX_PARTS = 16


class UploadError(Exception):
    """A bad upload; ``status_code`` and ``detail`` are the HTTP answer, ``outcome`` the metric."""

    status_code = 400
    outcome = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UploadTooLarge(UploadError):
    status_code = 413
    outcome = "too_large"


class NotMultipart(UploadError):
    status_code = 415
    outcome = "bad_request"


class MissingField(UploadError):
    status_code = 422
    outcome = "missing_field"


class InvalidField(UploadError):
    status_code = 422
    outcome = "bad_request"


@dataclass
class UploadForm:
    image: bytes
    filename: str | None
    crop_type: str | None


@dataclass
class _Part:
    name: str | None = None
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class _FormCollector:
    def __init__(self, max_image_bytes: int) -> None:
        self.max_image_bytes = max_image_bytes
        self.parts: list[_Part] = []
        self.current = _Part()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self.ended = False

    # python-multipart callbacks -----------------------------------------------------------
    def on_part_begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise UploadError(
                f"Too many form fields (at most {MAX_PARTS}); send `image` and `cropType`"
            )
        self.current = _Part()
        self._disposition = b""

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

    def on_header_end(self) -> None:
        if bytes(self._header_name).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise UploadError("Every form part needs a Content-Disposition header with a name")
        self.current.name = name.decode("utf-8", "replace")
        filename = options.get(b"filename")
        self.current.filename = (
            filename.decode("utf-8", "replace") if filename is not None else None
        )

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self.current
        part.data += data[start:end]
        if part.name == IMAGE_FIELD:
            if len(part.data) > self.max_image_bytes:
                raise UploadTooLarge(_too_large(self.max_image_bytes))
        elif len(part.data) > MAX_TEXT_FIELD_BYTES:
            raise InvalidField(
                f"Form field {part.name!r} is too long (at most {MAX_TEXT_FIELD_BYTES} bytes)"
            )

    def on_part_end(self) -> None:
        self.parts.append(self.current)

    def on_end(self) -> None:
        self.ended = True

    def _check_header(self) -> None:
        if len(self._header_name) + len(self._header_value) > MAX_PART_HEADER_BYTES:
            raise UploadError("A form part header is too long")

    # result ---------------------------------------------------------------------------------
    def form(self) -> UploadForm:
        images = [p for p in self.parts if p.name == IMAGE_FIELD]
        if not images:
            raise MissingField(
                "Missing form field `image`: send the photo as multipart/form-data, "
                "e.g. `curl -F image=@leaf.jpg ...`"
            )
        if len(images) > 1:
            raise InvalidField("Send exactly one `image` per upload")
        crops = [p for p in self.parts if p.name == CROP_TYPE_FIELD]
        if len(crops) > 1:
            raise InvalidField("Send `cropType` at most once")
        crop_type = None
        if crops:
            try:
                crop_type = crops[0].data.decode("utf-8").strip() or None
            except UnicodeDecodeError:
                raise InvalidField("`cropType` must be UTF-8 text") from None
            if crop_type is not None and (
                len(crop_type) > CROP_TYPE_MAX or not crop_type.isprintable()
            ):
                raise InvalidField(
                    f"`cropType` must be printable text of at most {CROP_TYPE_MAX} characters"
                )
        image = images[0]
        return UploadForm(image=bytes(image.data), filename=image.filename, crop_type=crop_type)


def _too_large(limit: int) -> str:
    mib = limit / (1024 * 1024)
    return f"The image is larger than the {mib:g} MiB limit (MAX_UPLOAD_MB); send a smaller photo"


async def read_upload_form(request: Request, max_image_bytes: int) -> UploadForm:
    """Parse the upload form, refusing it as soon as it is too large or malformed."""
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data":
        raise NotMultipart(
            "Send the image as multipart/form-data with a file field named `image` "
            "(and optionally `cropType`)"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("The multipart/form-data Content-Type has no boundary")
    max_body = max_image_bytes + FORM_OVERHEAD_BYTES
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body:
        raise UploadTooLarge(_too_large(max_image_bytes))

    collector = _FormCollector(max_image_bytes)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": collector.on_part_begin,
            "on_part_data": collector.on_part_data,
            "on_part_end": collector.on_part_end,
            "on_header_field": collector.on_header_field,
            "on_header_value": collector.on_header_value,
            "on_header_end": collector.on_header_end,
            "on_headers_finished": collector.on_headers_finished,
            "on_end": collector.on_end,
        },
    )
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                raise UploadTooLarge(_too_large(max_image_bytes))
            if chunk:
                parser.write(chunk)
        parser.finalize()
    except MultipartParseError:
        raise UploadError("The multipart/form-data body is malformed") from None
    if not collector.ended:
        raise UploadError(
            "The multipart/form-data body ended before its closing boundary; "
            "the upload was cut off, send it again"
        )
    return collector.form()
