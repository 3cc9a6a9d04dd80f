"""The web app as a farmer uses it, on a phone (390x844) and on a desktop (1280x800).

Every screen passes axe-core (0 serious or critical violations, WCAG 2.1 AA contrast), every
control is at least 44x44 px, nothing overflows 320 px, the opened result scrolls into view,
a toast never covers a control, messages are a farmer's words (one spelling), photos from a
phone (HEIC) are accepted and other formats refused with a message. Screenshots of each screen
on each viewport go to test-artifacts/screenshots/ (``farmer-<viewport>-<screen>.png``).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pillow_heif
import pytest
from PIL import Image

from tests.support.live_stack import LiveStack, leaf_jpeg
from tests.web.test_browser import SPY_SCRIPT, AppPage

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
AXE = ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}

# Everything a finger or a mouse can hit (the hidden file input is behind its label), at its
# laid-out size (offsetWidth: an entry animation's scale does not count).
TARGETS_JS = """
() => [...document.querySelectorAll(
    'button, a[href], input:not([type=file]), summary, select, label.drop, [role=button]')]
  .filter(el => {
    const r = el.getBoundingClientRect();
    const style = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && style.visibility !== 'hidden'
      && !el.closest('.dev-note');   // a link inside a sentence (WCAG 2.5.8 inline exception)
  })
  .map(el => ({what: el.outerHTML.slice(0, 90), w: el.offsetWidth, h: el.offsetHeight}))
  .filter(t => t.w < 44 || t.h < 44)
"""

# Scrolled to as a person would (scrollIntoView honours scroll-padding): is it what a tap hits?
REACHABLE_JS = """
(el) => {
  el.scrollIntoView({block: 'nearest'});
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return Boolean(hit && (hit === el || el.contains(hit)));
}
"""


@pytest.fixture(params=list(VIEWPORTS))
def viewport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def farmer(
    browser: Any, live_stack: LiveStack, screenshots: Path, viewport: str
) -> Iterator[AppPage]:
    ctx = browser.new_context(
        viewport=VIEWPORTS[viewport],
        is_mobile=viewport == "phone",
        has_touch=viewport == "phone",
        bypass_csp=True,  # to inject axe-core
    )
    ctx.add_init_script(SPY_SCRIPT)
    page = AppPage(ctx.new_page(), live_stack, screenshots).open()
    page.viewport = viewport  # type: ignore[attr-defined]
    yield page
    assert page.errors == [], f"uncaught errors in the page: {page.errors}"
    ctx.close()


def shot(app: AppPage, screen: str) -> None:
    app.shot(f"farmer-{app.viewport}-{screen}")  # type: ignore[attr-defined]


def check_screen(app: AppPage, screen: str) -> None:
    """axe-core, target sizes and (on the phone) 320 px: the same checks on every screen."""
    shot(app, screen)
    page = app.page
    if not page.evaluate("Boolean(window.axe)"):
        page.add_script_tag(content=AXE.read_text())
    violations = page.evaluate(
        """async () => (await axe.run(document, {
             runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa',
                                              'best-practice']},
             resultTypes: ['violations']})).violations
           .filter(v => v.impact === 'serious' || v.impact === 'critical')
           .map(v => ({id: v.id, impact: v.impact, help: v.help,
                       nodes: v.nodes.slice(0, 4).map(n => n.target.join(' '))}))"""
    )
    assert violations == [], f"{screen}: axe-core found {violations}"
    small = page.evaluate(TARGETS_JS)
    assert small == [], f"{screen}: targets under 44x44 px: {small}"
    if app.viewport == "phone":  # type: ignore[attr-defined]
        page.set_viewport_size({"width": 320, "height": 640})
        page.wait_for_timeout(100)
        overflow = page.evaluate("document.documentElement.scrollWidth")
        page.set_viewport_size(VIEWPORTS["phone"])
        assert overflow <= 320, f"{screen}: {overflow} px wide at a 320 px screen"


def heic_photo() -> bytes:
    with Image.open(io.BytesIO(leaf_jpeg(seed=11))) as image:
        out = io.BytesIO()
        pillow_heif.from_pillow(image.convert("RGB")).save(out, format="HEIF", quality=80)
        return out.getvalue()


def test_every_screen_works_for_a_farmer(farmer: AppPage, tmp_path: Path) -> None:
    page = farmer.page
    page.wait_for_selector("[data-testid=register]")
    check_screen(farmer, "1-login")

    # Validation in a farmer's words, before anything is sent.
    username = "farmer" + str(time.time_ns())[-9:]
    farmer.fill_credentials(username, "short")
    page.click("[data-testid=register]")
    message = page.locator("[data-testid=auth-message]")
    message.wait_for()
    assert message.inner_text().strip() == "Your password needs at least 8 characters."
    check_screen(farmer, "2-register-error")

    farmer.fill_credentials(username, "green-leaves-" + username)
    page.click("[data-testid=register]")
    farmer.wait_connection("connected")
    page.wait_for_selector("text=No analyses yet")
    check_screen(farmer, "3-empty")

    # A GIF is refused in words a farmer understands; the picker offers what the server takes.
    accept = page.get_attribute("input[type=file][name=image]", "accept") or ""
    types = page.evaluate("fetch('api/v1/config').then(r => r.json()).then(c => c.imageTypes)")
    assert [a for a in accept.split(",") if "/" in a] == types
    gif = tmp_path / "leaf.gif"
    Image.new("RGB", (8, 8), (20, 160, 40)).save(gif, "GIF")
    page.set_input_files("input[type=file][name=image]", str(gif))
    page.wait_for_selector("text=This photo is a GIF file")
    assert page.is_disabled("[data-testid=upload]")

    # An iPhone photo (HEIC) goes through.
    photo = tmp_path / "IMG_0042.HEIC"
    photo.write_bytes(heic_photo())
    analysis_id = farmer.upload(photo, crop="tomato")
    check_screen(farmer, "4-analysing")
    farmer.toast_for(analysis_id).wait_for()
    farmer.wait_row_status(analysis_id, "Completed", timeout=10)
    check_screen(farmer, "5-toast")

    # The toast covers nothing the farmer needs.
    for selector in (
        "[data-testid=upload]",
        f"[data-testid=analysis-row][data-analysis-id='{analysis_id}'] button",
        "[data-testid=logout]",
        "input[name=cropType]",
    ):
        assert page.locator(selector).evaluate(REACHABLE_JS), f"{selector} is covered"

    # Tapping the result opens it on screen, with what to act on first.
    page.click(f"[data-testid=analysis-row][data-analysis-id='{analysis_id}'] button")
    page.wait_for_selector("[data-testid=health]")
    page.wait_for_timeout(100)
    box = page.locator("[data-testid=health]").bounding_box()
    height = VIEWPORTS[farmer.viewport]["height"]  # type: ignore[attr-defined]
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= height * 0.75, box
    detail = page.locator("[data-testid=detail]")
    assert "Healthy" in detail.inner_text() or "Needs attention" in detail.inner_text()
    assert "Early blight" in page.inner_text("[data-testid=concern]")
    assert "Remove affected leaves" in page.inner_text("[data-testid=what-to-do]")
    fold = page.locator("[data-testid=technical-details]")
    assert not fold.evaluate("el => el.open"), "technical details start folded"
    check_screen(farmer, "6-result")
    fold.locator("summary").click()
    assert analysis_id in fold.inner_text()
    shot(farmer, "7-technical-details")

    text = page.inner_text("body")
    assert "nalyzing" not in text and "nalyzer" not in text, "one spelling: analyse"
