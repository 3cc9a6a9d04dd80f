"""The web app at ``/``: the built files of ``web/dist`` (``WEB_DIST_DIR``), or a placeholder.

Unknown paths without a file extension outside ``/api`` get ``index.html`` (client-side
routes); API paths that match no route keep their JSON ``404``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
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


class _SpaFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            last = path.rsplit("/", 1)[-1]
            if exc.status_code == 404 and not path.startswith("api") and "." not in last:
                return await super().get_response("index.html", scope)
            raise


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
