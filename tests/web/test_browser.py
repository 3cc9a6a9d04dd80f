"""The web app in a real headless Chromium against the whole running system.

API, worker, broker, database and queue are real (``live_stack``); only N8N is faked. Each
test drives the page like a person would (contract §8 hooks) and checks what the person sees:
rows changing state in place, one toast per result, the connection indicator, the title badge.
Screenshots of the main states go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from plantnotify.contracts.topics import analyses_filter
from plantnotify.db.models import Device
from plantnotify.db.session import engine_for, session_factory
from tests.support.live_stack import (
    REALTIME_TOKEN_TTL,
    BrokerClock,
    LiveStack,
    ServiceSubscriber,
    leaf_jpeg,
    publish_as_service,
)
from tests.support.net import wait_for

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
LATENCY_FILE = ROOT / "test-artifacts" / "web-latency.json"
_latencies_ms: list[float] = []

# Records desktop notifications and permission prompts, and lets a test "hide" the tab
# (headless Chromium is always visible). The real Notification is still called.
SPY_SCRIPT = """
(() => {
  window.__notes = [];
  window.__permissionRequests = 0;
  window.__hidden = false;
  Object.defineProperty(document, 'visibilityState', {
    configurable: true, get: () => (window.__hidden ? 'hidden' : 'visible') });
  Object.defineProperty(document, 'hidden', { configurable: true, get: () => window.__hidden });
  const Real = window.Notification;
  if (!Real) return;
  const Spy = function (title, options) {
    window.__notes.push({ title, body: options && options.body, tag: options && options.tag });
    return new Real(title, options);
  };
  Object.defineProperty(Spy, 'permission', { get: () => Real.permission });
  Spy.requestPermission = (...args) => {
    window.__permissionRequests += 1;
    return Real.requestPermission(...args);
  };
  window.Notification = Spy;
})();
"""


class AppPage:
    """One tab of the web app."""

    def __init__(self, page: Any, stack: LiveStack, screenshots: Path) -> None:
        self.page = page
        self.stack = stack
        self.shots = screenshots
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.set_default_timeout(20_000)

    def open(self) -> AppPage:
        self.page.goto(self.stack.api_url + "/")
        return self

    def shot(self, name: str) -> None:
        self.page.wait_for_timeout(350)  # let entry animations (toasts, rows) finish
        self.page.screenshot(path=str(self.shots / f"{name}.png"))

    # --- account --------------------------------------------------------------------------

    def fill_credentials(self, username: str, password: str) -> None:
        self.page.fill("input[name=username]", username)
        self.page.fill("input[name=password]", password)

    def register(self) -> tuple[str, str]:
        username = "grower" + str(int(time.time() * 1000))[-8:]
        password = "green-leaves-" + username
        self.fill_credentials(username, password)
        self.page.click("[data-testid=register]")
        self.wait_connection("connected")
        return username, password

    @property
    def user_id(self) -> str:
        return str(self.page.evaluate("window.plantnotify.app.session.userId"))

    # --- state ----------------------------------------------------------------------------

    def connection(self) -> str:
        return str(self.page.get_attribute("[data-testid=connection]", "data-state"))

    def wait_connection(self, state: str, timeout: float = 20) -> None:
        self.page.wait_for_selector(
            f"[data-testid=connection][data-state={state}]", timeout=timeout * 1000
        )

    def toasts(self) -> Any:
        return self.page.locator("[data-testid=toast]")

    def toast_for(self, analysis_id: str) -> Any:
        return self.page.locator(f"[data-testid=toast][data-analysis-id='{analysis_id}']")

    def row(self, analysis_id: str) -> Any:
        return self.page.locator(f"[data-testid=analysis-row][data-analysis-id='{analysis_id}']")

    def wait_row_status(self, analysis_id: str, status: str, timeout: float = 20) -> None:
        self.page.wait_for_selector(
            f"[data-testid=analysis-row][data-analysis-id='{analysis_id}'][data-status={status}]",
            timeout=timeout * 1000,
        )

    def stats(self, what: str) -> dict[str, int]:
        return dict(self.page.evaluate(f"window.plantnotify.{what}.stats"))

    def recoveries(self) -> int:
        return int(self.page.evaluate("window.plantnotify.recoveries || 0"))

    # --- actions --------------------------------------------------------------------------

    def upload(self, image: Path, crop: str = "") -> str:
        self.page.set_input_files("input[type=file][name=image]", str(image))
        if crop:
            self.page.fill("input[name=cropType]", crop)
        with self.page.expect_response("**/api/v1/plantanalyses/async") as answer:
            self.page.click("[data-testid=upload]")
        assert answer.value.status == 202, answer.value.text()
        analysis_id = str(answer.value.json()["analysisId"])
        self.row(analysis_id).wait_for()
        return analysis_id


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 820})
    ctx.add_init_script(SPY_SCRIPT)
    yield ctx
    ctx.close()


@pytest.fixture
def app(context: Any, live_stack: LiveStack, screenshots: Path) -> Iterator[AppPage]:
    page = AppPage(context.new_page(), live_stack, screenshots).open()
    yield page
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"


@pytest.fixture(scope="module")
def leaf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "tomato-leaf.jpg"
    path.write_bytes(leaf_jpeg(seed=7))
    return path


@pytest.fixture(autouse=True)
def n8n_answers_ok(live_stack: LiveStack) -> Iterator[None]:
    default = live_stack.n8n.default
    yield
    live_stack.n8n.default = default


def web_devices(stack: LiveStack, user_id: str) -> list[str]:
    with session_factory(engine_for(stack.settings.database_url))() as s:
        return list(
            s.scalars(
                select(Device.token).where(Device.user_id == user_id, Device.platform == "web")
            )
        )


def clock(stack: LiveStack, app: AppPage) -> BrokerClock:
    return BrokerClock(stack, analyses_filter(app.user_id))


def record_latency(app: AppPage, broker_clock: BrokerClock, analysis_id: str) -> float:
    """Milliseconds from the event reaching mosquitto_sub to the toast on the page."""
    arrival = broker_clock.first(analysis_id, "AnalysisCompleted")
    toast = app.toast_for(analysis_id).first
    app.page.wait_for_function(
        "el => el.dataset.paintedAt", arg=toast.element_handle(), timeout=5000
    )
    shown_at = float(toast.get_attribute("data-painted-at") or 0)
    latency = shown_at - arrival.at * 1000
    _latencies_ms.append(latency)
    LATENCY_FILE.parent.mkdir(parents=True, exist_ok=True)
    LATENCY_FILE.write_text(
        json.dumps(
            {
                "what": "ms from the event reaching mosquitto_sub to the first frame painted "
                "with its toast",
                "samples_ms": [round(x, 1) for x in _latencies_ms],
                "median_ms": round(statistics.median(_latencies_ms), 1),
                "max_ms": round(max(_latencies_ms), 1),
            },
            indent=2,
        )
    )
    return latency


# --- tests ----------------------------------------------------------------------------------


def test_register_upload_and_the_toast_arrives(
    app: AppPage, live_stack: LiveStack, leaf: Path
) -> None:
    page = app.page
    page.wait_for_selector("[data-testid=register]")
    page.evaluate(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI))"
    )
    app.shot("01-login")
    # A wrong password says what to do, and nobody is logged in.
    app.fill_credentials("nobody-" + str(time.time_ns()), "wrong-password-1")
    page.click("[data-testid=login]")
    page.wait_for_selector("text=Wrong username or password")
    app.shot("02-login-error")

    app.register()
    page.wait_for_selector("text=No analyses yet")
    assert page.title() == "Plantnotify"
    app.shot("03-empty")
    assert page.evaluate("window.__permissionRequests") == 0, "permission asked without a click"

    with clock(live_stack, app) as broker_clock:
        page.set_input_files("input[type=file][name=image]", str(leaf))
        page.fill("input[name=cropType]", "tomato")
        app.shot("04-photo-chosen")
        with page.expect_response("**/api/v1/plantanalyses/async") as answer:
            page.click("[data-testid=upload]")
        analysis_id = str(answer.value.json()["analysisId"])
        # The row appears at once and shows the analysis is running.
        app.wait_row_status(analysis_id, "Processing", timeout=5)
        assert (
            page.get_attribute("[data-testid=upload-progress] [role=progressbar]", "aria-valuenow")
            == "100"
        )
        app.shot("05-processing")

        app.toast_for(analysis_id).wait_for()
        app.wait_row_status(analysis_id, "Completed", timeout=5)
        record_latency(app, broker_clock, analysis_id)  # a measurement, not an assertion
    toast = app.toast_for(analysis_id)
    assert toast.count() == 1
    text = toast.inner_text()
    assert "Tomato: result is ready" in text and "72/100" in text and "Early blight" in text, text
    assert toast.get_by_role("button", name="View").is_visible()
    assert page.title() == "(1) Plantnotify"
    assert "72" in app.row(analysis_id).inner_text()
    app.shot("06-toast")

    # "View" opens the detail with the image (fetched with the bearer token) and the result.
    toast.get_by_role("button", name="View").click()
    page.wait_for_selector(".detail img")
    page.wait_for_function("document.querySelector('.detail img').naturalWidth > 0")
    assert page.inner_text("[data-testid=detail-status]") == "Ready"
    assert "Early blight" in page.inner_text(".detail")
    assert page.title() == "Plantnotify", "opening the result clears the unseen badge"
    app.shot("07-detail")
    # The health gauge is drawn within the page's Content-Security-Policy (style-src 'self'
    # blocks style attributes; the CSSOM is allowed).
    assert page.evaluate("document.querySelector('.gauge__bar > div').style.width") == "72%"
    assert page.evaluate("window.__cspViolations") == [], "the page broke its own CSP"

    # The local stack (no FCM credentials): the development note links to the emulator's page.
    # Once the farmer allows notifications, this browser is a web push device, so a closed tab
    # gets a push. Logging out unregisters it.
    link = page.get_attribute("[data-testid=push-emulator-link]", "href")
    assert link == f"http://127.0.0.1:{live_stack.settings.fcm_emulator_port}/"
    user_id = app.user_id
    assert not web_devices(live_stack, user_id), "registered for pushes without being allowed"
    page.context.grant_permissions(["notifications"], origin=live_stack.api_url)
    page.click("[data-testid=alerts]")
    wait_for(lambda: web_devices(live_stack, user_id), what="the browser's push registration")
    page.click("[aria-label='Log out']")
    page.wait_for_selector("[data-testid=login]")
    wait_for(lambda: not web_devices(live_stack, user_id), what="the push registration removed")


def test_failed_analysis_toast_gives_the_reason(
    app: AppPage, live_stack: LiveStack, leaf: Path
) -> None:
    app.register()
    live_stack.n8n.default = "500"
    analysis_id = app.upload(leaf)
    app.toast_for(analysis_id).wait_for()
    toast = app.toast_for(analysis_id)
    assert toast.get_attribute("data-event") == "AnalysisFailed"
    assert "couldn't analyse this photo" in toast.inner_text()
    reason = app.page.evaluate(f"window.plantnotify.app.store.get('{analysis_id}').errorMessage")
    assert reason and reason not in toast.inner_text(), "the service's own words stay technical"
    app.wait_row_status(analysis_id, "Failed", timeout=5)
    app.shot("08-failed")
    # The detail says what to do; the reason is behind "Technical details".
    toast.get_by_role("button", name="Details").click()
    notice = app.page.locator("[data-testid=failed-notice]")
    notice.wait_for()
    assert "Send it again" in notice.inner_text()
    fold = app.page.locator("[data-testid=technical-details]")
    assert not fold.evaluate("el => el.open")
    fold.locator("summary").click()
    assert reason in fold.inner_text()


def test_reload_and_duplicates_never_repeat_a_toast(
    app: AppPage, live_stack: LiveStack, leaf: Path
) -> None:
    app.register()
    with ServiceSubscriber(live_stack, app.user_id) as sub:
        analysis_id = app.upload(leaf, crop="pepper")
        app.toast_for(analysis_id).wait_for()
        completed = sub.first(analysis_id, "AnalysisCompleted").payload
    assert app.toasts().count() == 1

    # A QoS-1 style duplicate (same eventId, published again) while the page is open.
    received = app.stats("inbox")["received"]
    publish_as_service(live_stack, completed)
    wait_for(lambda: app.stats("inbox")["received"] > received, what="the duplicate to arrive")
    assert app.toasts().count() == 1
    assert app.stats("inbox")["duplicates"] >= 1

    # Reload: the retained copy and the recovery both deliver it again; no toast.
    app.page.reload()
    app.wait_connection("connected")
    wait_for(lambda: app.recoveries() >= 1, what="missed-event recovery after the reload")
    wait_for(lambda: app.stats("inbox")["received"] >= 2, what="retained + recovered copies")
    app.wait_row_status(analysis_id, "Completed", timeout=5)
    # And a live duplicate after the reload is still the same event.
    received = app.stats("inbox")["received"]
    publish_as_service(live_stack, completed)
    wait_for(lambda: app.stats("inbox")["received"] > received, what="the duplicate to arrive")
    time.sleep(0.3)
    assert app.toasts().count() == 0, "a reload or a duplicate showed a toast again"
    assert app.stats("inbox")["toasts"] == 0
    app.shot("09-after-reload")


def test_broker_restart_under_an_open_page_misses_nothing(
    app: AppPage, live_stack: LiveStack, leaf: Path
) -> None:
    app.register()
    username_token = app.page.evaluate("window.plantnotify.app.session.accessToken")
    live_stack.broker.stop()
    try:
        app.wait_connection("reconnecting", timeout=5)
        # Uploaded (from another device) and finished while the broker is down.
        analysis_id = live_stack.upload(username_token, leaf.read_bytes(), crop="maize")
        wait_for(
            lambda: live_stack.n8n.answered_at.get(analysis_id),
            timeout=15,
            what="the analysis to finish while the broker is down",
        )
        app.page.wait_for_selector(".live-banner:not([hidden])", timeout=5000)
        assert app.connection() != "connected"
        app.shot("10-reconnecting")
    finally:
        live_stack.broker.start()
    app.wait_connection("connected", timeout=20)
    app.toast_for(analysis_id).wait_for(timeout=20_000)
    app.wait_row_status(analysis_id, "Completed", timeout=5)
    time.sleep(1.0)  # late copies (outbox republish, retained replay) must not add a toast
    assert app.toast_for(analysis_id).count() == 1
    assert app.stats("realtime")["connects"] >= 2
    app.shot("11-reconnected")


def test_two_tabs_of_one_user_both_update(
    context: Any, app: AppPage, live_stack: LiveStack, leaf: Path, screenshots: Path
) -> None:
    app.register()
    second = AppPage(context.new_page(), live_stack, screenshots)
    second.page.set_viewport_size({"width": 390, "height": 844})  # a phone-sized window
    second.open().wait_connection("connected")  # logged in through the shared session
    assert second.user_id == app.user_id
    with clock(live_stack, app) as broker_clock:
        analysis_id = app.upload(leaf, crop="grape")
        second.row(analysis_id).wait_for()
        for tab in (app, second):
            tab.toast_for(analysis_id).wait_for()
            tab.wait_row_status(analysis_id, "Completed", timeout=5)
        record_latency(app, broker_clock, analysis_id)
        record_latency(second, broker_clock, analysis_id)
    assert app.toast_for(analysis_id).count() == 1
    assert second.toast_for(analysis_id).count() == 1
    second.shot("12-second-tab-narrow")
    assert second.errors == []


def test_desktop_notification_only_when_hidden_and_asked_on_a_click(
    context: Any, app: AppPage, live_stack: LiveStack, leaf: Path
) -> None:
    app.register()
    assert app.page.evaluate("window.__permissionRequests") == 0
    context.grant_permissions(["notifications"], origin=live_stack.api_url)
    app.page.click("[data-testid=alerts]")
    assert app.page.evaluate("window.__permissionRequests") == 1
    app.page.evaluate("window.__hidden = true")
    analysis_id = app.upload(leaf, crop="potato")
    app.toast_for(analysis_id).wait_for()
    notes = app.page.evaluate("window.__notes")
    assert len(notes) == 1, notes
    assert notes[0]["title"] == "Tomato: result is ready"  # the crop the analyser found
    assert "72/100" in notes[0]["body"] and notes[0]["tag"]
    app.page.evaluate("window.__hidden = false")
    second = app.upload(leaf, crop="potato")
    app.toast_for(second).wait_for()
    assert len(app.page.evaluate("window.__notes")) == 1, "notified while the tab was visible"


def test_realtime_token_is_renewed_before_it_expires(
    app: AppPage, live_stack: LiveStack, leaf: Path
) -> None:
    app.register()
    wait_for(
        lambda: app.stats("realtime")["tokenRenewals"] >= 1,
        timeout=REALTIME_TOKEN_TTL + 5,
        what="a planned token renewal",
    )
    app.wait_connection("connected", timeout=5)
    analysis_id = app.upload(leaf)
    app.toast_for(analysis_id).wait_for()
    # One planned reconnect per renewal: the broker never had to kick an expired session.
    wait_for(
        lambda: (s := app.stats("realtime"))["connects"] == s["tokenRenewals"] + 1,
        timeout=5,
        what=f"connects == renewals + 1 (stats {app.stats('realtime')})",
    )
    # Make-before-break: the new connection was subscribed before the old one closed, so no
    # renewal needed a missed-event recovery (only the first connect did).
    assert app.recoveries() == 1, f"recoveries {app.recoveries()} with {app.stats('realtime')}"
