// Toasts: one `[data-testid=toast]` per notification (contract §8), newest on top.

import { cropName, healthBand } from "./format.js";
import { h, icon } from "./dom.js";
import { ALERT, CHECK, CLOSE } from "./icons.js";

const SHOW_MS = 12000;

export class Toasts {
  constructor(root) {
    this.root = root; // an aria-live region
  }

  /** @param {{ event: object, onView: () => void }} o */
  showEvent({ event, onView }) {
    const ok = event.event === "AnalysisCompleted";
    const title = ok ? `${cropName(event.cropType)} analysis is ready` : "Analysis failed";
    const lines = [];
    if (ok) {
      if (typeof event.overallHealthScore === "number") {
        lines.push(
          h(
            "span",
            { class: `score score--${healthBand(event.overallHealthScore)}` },
            `Health ${event.overallHealthScore}/100`,
          ),
        );
      }
      if (event.primaryConcern) lines.push(h("span", { class: "toast__concern" }, event.primaryConcern));
    } else {
      lines.push(
        h("span", { class: "toast__reason" }, event.errorMessage || "The analysis could not be completed."),
      );
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
      actionLabel: ok ? "View" : "Details",
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
      h("button", { type: "button", class: "icon-btn toast__close", "aria-label": "Dismiss", onclick: dismiss }, icon(CLOSE)),
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
    this.root.append(el); // anchored bottom-right: the newest sits nearest the corner
    return el;
  }

  clear() {
    this.root.replaceChildren();
  }
}
