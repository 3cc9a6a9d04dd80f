// Toasts: one `[data-testid=toast]` per notification (contract §8), newest nearest the edge.
//
// They never cover a control for good: the space they take at the bottom of the screen is
// reserved (--toast-space: the page gets that much padding and scroll-padding), so anything a
// farmer scrolls to or tabs to stops above them. On a phone at most two are shown at once.

import { t } from "../i18n.js";
import { cropName, healthBand } from "./format.js";
import { h, icon } from "./dom.js";
import { ALERT, CHECK, CLOSE } from "./icons.js";

const SHOW_MS = 12000;
const MAX_ON_PHONE = 2;

export class Toasts {
  constructor(root) {
    this.root = root; // an aria-live region
    const reserve = () => {
      // From the top of the stack to the bottom of the screen (the stack sits above a margin).
      const space = this.root.childElementCount ? window.innerHeight - this.root.getBoundingClientRect().top + 8 : 0;
      document.documentElement.style.setProperty("--toast-space", `${Math.max(0, Math.ceil(space))}px`);
    };
    if ("ResizeObserver" in window) new ResizeObserver(reserve).observe(this.root);
    new MutationObserver(reserve).observe(this.root, { childList: true });
  }

  /** @param {{ event: object, onView: () => void }} o */
  showEvent({ event, onView }) {
    const ok = event.event === "AnalysisCompleted";
    const title = ok ? t("toast.ready", { crop: cropName(event.cropType) }) : t("toast.failed");
    const lines = [];
    if (ok) {
      if (typeof event.overallHealthScore === "number") {
        lines.push(
          h(
            "span",
            { class: `score score--${healthBand(event.overallHealthScore)}` },
            t("toast.health", { score: event.overallHealthScore }),
          ),
        );
      }
      if (event.primaryConcern) lines.push(h("span", { class: "toast__concern" }, event.primaryConcern));
    } else {
      lines.push(h("span", { class: "toast__reason" }, t("failed.toast")));
    }
    return this._show({
      kind: ok ? "success" : "error",
      title,
      lines,
      attrs: {
        "data-event-id": event.eventId,
        "data-analysis-id": event.analysisId,
        "data-event": event.event,
      },
      actionLabel: ok ? t("toast.view") : t("toast.details"),
      onAction: onView,
    });
  }

  /** A plain message toast (errors that are not tied to a form). */
  showMessage(kind, title, text) {
    return this._show({ kind, title, lines: text ? [h("span", {}, text)] : [], attrs: {}, message: true });
  }

  _show({ kind, title, lines, attrs, actionLabel, onAction, message }) {
    let timer = null;
    const dismiss = () => {
      clearTimeout(timer);
      el.classList.add("toast--leaving");
      setTimeout(() => el.remove(), 200);
    };
    const action = onAction
      ? h(
          "button",
          {
            type: "button",
            class: "btn btn--small btn--secondary toast__action",
            onclick: () => {
              dismiss();
              onAction();
            },
          },
          actionLabel,
        )
      : null;
    const el = h(
      "div",
      {
        class: `toast toast--${kind}`,
        role: kind === "error" ? "alert" : "status",
        "data-testid": message ? "message" : "toast",
        // When it was added and when it was first painted (epoch ms): the browser tests
        // measure broker → toast latency with these.
        "data-shown-at": String(Date.now()),
        ...attrs,
      },
      icon(kind === "error" ? ALERT : CHECK, "toast__icon"),
      h(
        "div",
        { class: "toast__body" },
        h("strong", { class: "toast__title" }, title),
        h("div", { class: "toast__lines" }, lines),
        action,
      ),
      h("button", { type: "button", class: "icon-btn toast__close", "aria-label": t("common.dismiss"), onclick: dismiss }, icon(CLOSE)),
    );
    requestAnimationFrame(() => {
      el.dataset.paintedAt = String(Date.now());
    });
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(dismiss, SHOW_MS);
    };
    el.addEventListener("mouseenter", () => clearTimeout(timer));
    el.addEventListener("mouseleave", arm);
    arm();
    this.root.append(el); // anchored at the bottom: the newest sits nearest the edge
    if (window.matchMedia("(max-width: 700px)").matches) {
      const shown = [...this.root.children].filter((x) => !x.classList.contains("toast--leaving"));
      for (const old of shown.slice(0, Math.max(0, shown.length - MAX_ON_PHONE))) old.remove();
    }
    return el;
  }

  /** The farmer opened this analysis: its toasts have done their job. */
  dismissFor(analysisId) {
    for (const el of this.root.querySelectorAll("[data-analysis-id]")) {
      if (el.dataset.analysisId === analysisId) el.remove();
    }
  }

  clear() {
    this.root.replaceChildren();
  }
}
