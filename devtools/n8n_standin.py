"""``plantnotify n8n-standin``: a local stand-in for the N8N analysis webhook (contract §5).

A separate HTTP service, so the worker always exercises the real HTTP path. It really looks at
the image: it decodes it with Pillow, counts healthy green, yellowing and brown pixels of the
plant tissue, and answers with a health score and the main concern, after
``STANDIN_DELAY_SECONDS`` (the real workflow takes minutes).

    POST /webhook/plant-analysis  {"analysisId","userId","cropType","mimeType","imageBase64",...}
    -> 200 {"cropType","primaryConcern","overallHealthScore","analysis":{...},"model":...}
    GET /healthz -> 200 {"status":"ok"}
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import logging
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

from PIL import Image, UnidentifiedImageError

from plantnotify.logs import setup_logging
from plantnotify.settings import load_settings
from worker.n8n import STANDIN_WEBHOOK_PATH

log = logging.getLogger("plantnotify.standin")

MAX_BODY_BYTES = 20 * 1024 * 1024
MODEL = "plantnotify-standin/1"


def analyse_image(data: bytes, crop_type: str | None = None) -> dict[str, Any]:
    """Health from colours: green tissue is healthy, yellow is chlorosis, brown is necrosis."""
    with Image.open(io.BytesIO(data)) as img:
        img.draft("RGB", (256, 256))  # JPEG: decode at reduced size
        small = img.convert("RGB").resize((128, 128))
    hsv = small.convert("HSV")
    green = yellow = brown = 0
    raw = hsv.tobytes()  # h, s, v interleaved; Pillow's HSV channels are all 0..255
    for i in range(0, len(raw), 3):
        h, s, v = raw[i], raw[i + 1], raw[i + 2]
        if s < 50 or v < 35:
            continue  # grey, white, black: background or shadow
        if 47 <= h <= 120:  # 66..170 degrees
            green += 1
        elif 28 <= h < 47 and v >= 90:  # 40..66 degrees, bright
            yellow += 1
        elif 4 <= h < 47:  # reds, oranges and dark yellows: lesions
            brown += 1
    total = 128 * 128
    tissue = green + yellow + brown
    result: dict[str, Any] = {
        "cropType": crop_type or "unknown",
        "model": MODEL,
        "analysis": {
            "tissueCoverage": round(tissue / total, 3),
            "greenShare": round(green / tissue, 3) if tissue else 0.0,
            "yellowShare": round(yellow / tissue, 3) if tissue else 0.0,
            "brownShare": round(brown / tissue, 3) if tissue else 0.0,
        },
    }
    if tissue < total * 0.03:
        result["primaryConcern"] = "No plant tissue recognised in the image"
        return result
    yellow_share, brown_share = yellow / tissue, brown / tissue
    health = 100 * (green + 0.4 * yellow - 0.5 * brown) / tissue
    result["overallHealthScore"] = max(0, min(100, round(health)))
    if brown_share >= 0.08:
        result["primaryConcern"] = (
            f"Leaf spot or necrosis: brown lesions on {round(brown_share * 100)}% of the leaf"
        )
    elif yellow_share >= 0.10:
        result["primaryConcern"] = (
            f"Chlorosis: yellowing on {round(yellow_share * 100)}% of the leaf "
            "(nutrient deficiency or early infection)"
        )
    else:
        result["primaryConcern"] = "No visible disease"
    return result


class _Handler(BaseHTTPRequestHandler):
    server_version = "plantnotify-standin"
    delay: float = 0.0

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/"):
            self._answer(200, {"status": "ok", "model": MODEL})
        else:
            self._answer(404, {"error": "not found"})

    def do_POST(self) -> None:
        if self.path.split("?")[0] != STANDIN_WEBHOOK_PATH:
            self._answer(404, {"error": f"POST {STANDIN_WEBHOOK_PATH}"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY_BYTES:
            self._answer(413 if length else 400, {"error": "body missing or too large"})
            return
        try:
            request = json.loads(self.rfile.read(length))
            if not isinstance(request, dict):
                raise ValueError("not an object")
            image = base64.b64decode(request["imageBase64"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            self._answer(400, {"error": "expected JSON with imageBase64"})
            return
        started = time.monotonic()
        crop = request.get("cropType")
        try:
            result = analyse_image(image, crop if isinstance(crop, str) else None)
        except (UnidentifiedImageError, OSError, ValueError):
            self._answer(422, {"error": "the image cannot be decoded"})
            return
        left = self.delay - (time.monotonic() - started)
        if left > 0:
            time.sleep(left)
        log.info(
            "analysed image: score %s",
            result.get("overallHealthScore"),
            extra={"analysis_id": str(request.get("analysisId"))[:64]},
        )
        self._answer(200, result)


def make_server(host: str, port: int, delay: float) -> ThreadingHTTPServer:
    handler = type("StandinHandler", (_Handler,), {"delay": delay})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="default STANDIN_HOST (127.0.0.1)")
    parser.add_argument("--port", type=int, help="default STANDIN_PORT")
    parser.add_argument("--delay", type=float, help="default STANDIN_DELAY_SECONDS")


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    setup_logging(settings, service="n8n-standin")
    port = args.port if args.port is not None else settings.standin_port
    delay = args.delay if args.delay is not None else settings.standin_delay_seconds
    host = args.host or settings.standin_host
    try:
        server = make_server(host, port, delay)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s (set STANDIN_PORT)", host, port, exc.strerror)
        return 1

    def on_signal(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info(
        "N8N stand-in on http://%s:%d%s (delay %.1fs)",
        host,
        server.server_address[1],
        STANDIN_WEBHOOK_PATH,
        delay,
    )
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0
