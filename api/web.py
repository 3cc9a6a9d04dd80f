"""The web app at ``/``: the built files of ``web/dist`` (``WEB_DIST_DIR``), or a placeholder.

Unknown paths without a file extension outside ``/api`` get ``index.html`` (client-side
routes); API paths that match no route keep their JSON ``404``.

Caching and compression (the build writes ``.br`` and ``.gz`` beside every text file):
files under ``assets/`` have a content hash in their name and are cached for a year
(``immutable``); everything else (``index.html``, the service worker, the favicon) is
revalidated on every load (``no-cache``), so a deploy reaches every open app on its next
load. A client that accepts brotli or gzip gets the pre-compressed file, with
``Vary: Accept-Encoding``; nothing is compressed per request.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIST_DIR = REPO_ROOT / "web" / "dist"

PLACEHOLDER = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>plantnotify</title></head>
<body style="font-family: sans-serif; max-width: 40rem; margin: 3rem auto">
<h1>plantnotify API</h1>
<p>The web app is not built yet (no <code>index.html</code> in <code>{dist}</code>).
Build it with <code>make web</code> (or <code>make install</code>), or point
<code>WEB_DIST_DIR</code> at a built copy, then restart the API.</p>
<p>The API itself is running: see <a href="/docs">/docs</a>.</p>
</body></html>
"""


IMMUTABLE_DIR = "assets"
CACHE_IMMUTABLE = "public, max-age=31536000, immutable"
CACHE_REVALIDATE = "no-cache"
# Preferred first; the suffix the build writes for each.
ENCODINGS = (("br", ".br"), ("gzip", ".gz"))


def _accepted(header: str) -> set[str]:
    """Codings the client accepts (``q=0`` means refused)."""
    accepted = set()
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        q = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        try:
            if float(q) > 0:
                accepted.add(name.strip().lower())
        except ValueError:
            continue
    return accepted


class _SpaFiles(StaticFiles):
    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        request_headers = Headers(scope=scope)
        path = str(full_path)
        rel = os.path.relpath(path, str(self.directory))
        immutable = rel.split(os.sep, 1)[0] == IMMUTABLE_DIR
        cache = CACHE_IMMUTABLE if immutable else CACHE_REVALIDATE
        accepted = _accepted(request_headers.get("accept-encoding", ""))
        response: FileResponse | None = None
        for coding, suffix in ENCODINGS:
            if coding in accepted and os.path.isfile(path + suffix):
                response = FileResponse(
                    path + suffix,
                    status_code=status_code,
                    stat_result=os.stat(path + suffix),
                    media_type=mimetypes.guess_type(path)[0] or "text/plain",
                    headers={"Content-Encoding": coding},
                )
                break
        if response is None:
            response = FileResponse(path, status_code=status_code, stat_result=stat_result)
        response.headers["Cache-Control"] = cache
        response.headers["Vary"] = "Accept-Encoding"
        if self.is_not_modified(response.headers, request_headers):
            return Response(status_code=304, headers=_not_modified_headers(response))
        return response

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code == 404 and not path.startswith("api") and "." not in last:
                return await super().get_response("index.html", scope)
            raise


def _not_modified_headers(response: Response) -> dict[str, str]:
    keep = ("cache-control", "content-location", "date", "etag", "expires", "vary")
    return {k: v for k, v in response.headers.items() if k in keep}


def mount_web(app: FastAPI, dist_dir: Path | None) -> Path:
    """Serve the built web app at ``/`` (mount it after every API route)."""
    directory = (dist_dir or DEFAULT_DIST_DIR).resolve()
    if (directory / "index.html").is_file():
        app.mount("/", _SpaFiles(directory=directory, html=True), name="web")
    else:
        page = PLACEHOLDER.format(dist=directory)

        @app.get("/", include_in_schema=False)
        def placeholder() -> HTMLResponse:
            return HTMLResponse(page)

    return directory
