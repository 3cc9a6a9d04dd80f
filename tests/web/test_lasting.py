"""A web app kept open all day: the rollout switch flipped under it, pushes for a closed tab,
and (with a short access-token lifetime) a session that outlives its access tokens.

By default each scenario runs on one viewport (they alternate); ``WEB_MATRIX=1`` (``make
test-web-matrix``) runs every scenario on both, phone and desktop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plantnotify.cli import main as cli_main
from tests.support.live_stack import ApiServer, LiveStack, leaf_jpeg
from tests.support.net import wait_for
from tests.web.test_browser import SPY_SCRIPT, AppPage, web_devices
from tests.web.test_farmer import VIEWPORTS

pytestmark = pytest.mark.browser

MATRIX = os.environ.get("WEB_MATRIX") == "1"


def viewports(default: str) -> list[str]:
    return list(VIEWPORTS) if MATRIX else [default]


def open_app(browser: Any, stack: LiveStack, shots: Path, viewport: str, url: str) -> AppPage:
    ctx = browser.new_context(
        viewport=VIEWPORTS[viewport], is_mobile=viewport == "phone", has_touch=viewport == "phone"
    )
    ctx.add_init_script(SPY_SCRIPT)
    app = AppPage(ctx.new_page(), stack, shots)
    app.page.goto(url + "/")
    app.viewport = viewport  # type: ignore[attr-defined]
    return app


@pytest.fixture
def rollout_cli(live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("DATABASE_URL", live_stack.settings.database_url)

    def run(arg: str) -> None:
        assert cli_main(["rollout", arg]) == 0

    yield run
    run("100")


@pytest.mark.parametrize("viewport", viewports("desktop"))
def test_rollout_switch_flipped_under_an_open_page(
    browser: Any, live_stack: LiveStack, screenshots: Path, viewport: str, rollout_cli: Any
) -> None:
    app = open_app(browser, live_stack, screenshots, viewport, live_stack.api_url)
    try:
        app.register()
        conn = app.page.locator("[data-testid=connection]")
        assert conn.get_attribute("data-mode") == "realtime"
        token = app.page.evaluate("window.plantnotify.app.session.accessToken")

        rollout_cli("off")  # the kill switch: everybody polls, at once
        app.page.wait_for_selector("[data-testid=connection][data-mode=polling]", timeout=5000)
        app.wait_connection("connected")
        assert app.page.evaluate("window.plantnotify.realtime.client") is None, "MQTT closed"
        r = httpx.post(
            f"{live_stack.api_url}/api/v1/realtime/token",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 409
        polled = live_stack.upload(token, leaf_jpeg(seed=3), crop="maize")
        app.toast_for(polled).wait_for(timeout=15_000)
        app.wait_row_status(polled, "Completed", timeout=5)
        assert app.stats("poller")["polls"] >= 1
        app.shot(f"lasting-{viewport}-polling")

        rollout_cli("100")  # back on: the same page returns to realtime
        app.page.wait_for_selector("[data-testid=connection][data-mode=realtime]", timeout=5000)
        app.wait_connection("connected")
        live = live_stack.upload(token, leaf_jpeg(seed=4), crop="maize")
        app.toast_for(live).wait_for(timeout=15_000)
        assert app.toast_for(polled).count() <= 1 and app.toast_for(live).count() == 1
        assert app.page.evaluate("window.plantnotify.inbox.stats.toasts") == 2
        assert app.errors == []
    finally:
        app.page.context.close()


@pytest.mark.parametrize("viewport", viewports("phone"))
def test_a_push_for_a_closed_tab_is_shown_by_the_service_worker(
    browser: Any, live_stack: LiveStack, screenshots: Path, viewport: str
) -> None:
    app = open_app(browser, live_stack, screenshots, viewport, live_stack.api_url)
    page = app.page
    try:
        page.context.grant_permissions(["notifications"], origin=live_stack.api_url)
        app.register()  # notifications already allowed: registered without asking
        wait_for(lambda: web_devices(live_stack, app.user_id), what="a web push device")
        page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        cdp = page.context.new_cdp_session(page)
        registrations: list[dict[str, Any]] = []
        cdp.on(
            "ServiceWorker.workerRegistrationUpdated",
            lambda e: registrations.extend(e["registrations"]),
        )
        cdp.send("ServiceWorker.enable")
        for _ in range(100):  # sync Playwright delivers CDP events while it is called
            if registrations:
                break
            page.wait_for_timeout(100)
        assert registrations, "no service worker registration"
        registration = registrations[-1]["registrationId"]

        page.goto("about:blank")  # the tab is closed: nobody shows a toast
        push = {  # what the bridge sends (contract §6): notification + data strings
            "notification": {"title": "Analysis complete", "body": "Tomato: health 72/100"},
            "data": {
                "event": "AnalysisCompleted",
                "eventId": "ev-push-1",
                "analysisId": "an-push-1",
                "deepLink": "app://analysis/an-push-1",
            },
        }
        cdp.send(
            "ServiceWorker.deliverPushMessage",
            {
                "origin": live_stack.api_url,
                "registrationId": registration,
                "data": json.dumps(push),
            },
        )
        page.goto(live_stack.api_url + "/")
        shown = None
        deadline = time.monotonic() + 10
        while not shown and time.monotonic() < deadline:
            shown = page.evaluate(
                """navigator.serviceWorker.ready
                     .then(r => r.getNotifications())
                     .then(ns => ns.map(n => ({title: n.title, body: n.body, tag: n.tag,
                                               data: n.data})))"""
            )
            page.wait_for_timeout(200)
        assert shown, "the service worker showed no notification"
        note = shown[0]
        assert note["title"] == "Analysis complete" and "72/100" in note["body"]
        assert note["tag"] == "an-push-1"
        assert note["data"]["url"].endswith("/#/analyses/an-push-1")
        assert app.errors == []
    finally:
        page.context.close()


SHORT_ACCESS_TTL = 6  # seconds; the app renews with 20 % of it left


@pytest.fixture
def short_lived_api(live_stack: LiveStack) -> Iterator[str]:
    """A second API on the same stack whose access tokens live 6 s (below the setting's floor,
    hence model_copy: only a test wants tokens this short)."""
    settings = live_stack.settings.model_copy(update={"access_token_ttl_seconds": SHORT_ACCESS_TTL})
    api = ApiServer(settings).start()
    yield api.url
    api.server.force_exit = True  # no graceful wait for the closed browser's connections
    api.stop()


def stored_session(app: AppPage) -> dict[str, Any]:
    return dict(app.page.evaluate("JSON.parse(localStorage.getItem('plantnotify.session'))"))


@pytest.mark.parametrize("viewport", viewports("phone"))
def test_a_session_outlives_its_access_tokens_and_says_when_it_ends(
    browser: Any,
    live_stack: LiveStack,
    screenshots: Path,
    viewport: str,
    short_lived_api: str,
) -> None:
    app = open_app(browser, live_stack, screenshots, viewport, short_lived_api)
    page = app.page
    try:
        username, password = app.register()
        first = stored_session(app)
        assert first["refreshToken"]
        # Three access tokens' lifetimes: renewed quietly, never logged out, still live.
        wait_for(
            lambda: page.evaluate("window.plantnotify.renewals || 0") >= 3,
            timeout=SHORT_ACCESS_TTL * 4,
            what="three silent renewals",
        )
        assert page.locator("[data-testid=login]").count() == 0, "logged out"
        now = stored_session(app)
        assert now["accessToken"] != first["accessToken"]
        assert now["refreshToken"] != first["refreshToken"], "refresh tokens rotate"
        analysis_id = app.upload(leaf_path(tmp=screenshots), crop="pepper")
        app.toast_for(analysis_id).wait_for()
        app.wait_connection("connected")
        app.shot(f"lasting-{viewport}-session-renewed")

        # Ended from elsewhere (log out everywhere): the next renewal is refused, and the page
        # says why instead of showing a bare login form.
        r = httpx.post(
            f"{short_lived_api}/api/v1/auth/logout-all",
            headers={"Authorization": f"Bearer {stored_session(app)['accessToken']}"},
        )
        assert r.status_code == 204, r.text
        message = page.locator("[data-testid=auth-message]")
        message.wait_for(timeout=SHORT_ACCESS_TTL * 2 * 1000)
        assert "session ended" in message.inner_text()
        app.shot(f"lasting-{viewport}-session-ended")

        # A reload past expiry with a dead session says so too.
        page.evaluate(
            "s => localStorage.setItem('plantnotify.session', JSON.stringify(s))",
            {**now, "expiresAt": 1},
        )
        page.reload()
        message.wait_for()
        assert "ended while you were away" in message.inner_text()

        # Logging out revokes the refresh token on the server.
        app.fill_credentials(username, password)
        page.click("[data-testid=login]")
        app.wait_connection("connected")
        refresh = stored_session(app)["refreshToken"]
        page.click("[data-testid=logout]")
        page.wait_for_selector("[data-testid=login]")
        wait_for(
            lambda: (
                httpx.post(
                    f"{short_lived_api}/api/v1/auth/refresh", json={"refreshToken": refresh}
                ).status_code
                == 401
            ),
            timeout=5,
            what="the refresh token revoked by logging out",
        )
        assert app.errors == []
    finally:
        page.context.close()


def leaf_path(tmp: Path) -> Path:
    path = tmp.parent / "lasting-leaf.jpg"
    path.write_bytes(leaf_jpeg(seed=21))
    return path
