// One analysis: the photo, the result, and the state while it is being analysed.

import { PROCESSING } from "../analyses.js";
import { absoluteTime, cropName, healthBand, healthLabel, humanize } from "./format.js";
import { clear, h, icon } from "./dom.js";
import { ALERT, BACK, IMAGE } from "./icons.js";
import { stageLabel } from "./list.js";

// Result fields shown in the header already, or not meant for people.
const HIDDEN_RESULT_KEYS = new Set(["cropType", "primaryConcern", "overallHealthScore", "analysisId", "userId", "imageUrl", "imageBase64"]);

export class DetailView {
  /**
   * @param {object} o
   * @param {() => void} o.onBack
   * @param {(id: string) => Promise<string|null>} o.image
   */
  constructor({ onBack, image }) {
    this.onBack = onBack;
    this.image = image;
    this.id = null;
    this.el = h("section", { class: "card detail", "aria-live": "polite" });
  }

  show(id) {
    this.id = id;
    this.imageSlot = h("div", { class: "detail__image" }, icon(IMAGE, "thumb__placeholder"));
    this.body = h("div", { class: "detail__body" }, h("div", { class: "empty empty--loading" }, h("span", { class: "spinner" }), "Loading…"));
    clear(this.el).append(
      h(
        "button",
        { type: "button", class: "btn btn--ghost btn--small back", onclick: () => this.onBack() },
        icon(BACK),
        "All analyses",
      ),
      h("div", { class: "detail__grid" }, this.imageSlot, this.body),
    );
    this.image(id).then((url) => {
      if (this.id !== id) return;
      if (url) this.imageSlot.replaceChildren(h("img", { src: url, alt: "The uploaded plant photo" }));
      else this.imageSlot.replaceChildren(h("p", { class: "muted" }, "The photo could not be loaded."));
    });
  }

  showError(message) {
    clear(this.body).append(h("div", { class: "notice notice--error" }, icon(ALERT), h("span", {}, message)));
  }

  /** (Re)render the result; called again whenever an event changes this analysis. */
  render(a) {
    if (!a || a.id !== this.id) return;
    const band = healthBand(a.overallHealthScore);
    const parts = [];
    parts.push(
      h(
        "div",
        { class: "detail__head" },
        h("h2", {}, a.status === "Completed" || a.cropType ? cropName(a.cropType) : "Analysis"),
        h("span", { class: `chip chip--${String(a.status).toLowerCase()}`, "data-testid": "detail-status" }, a.status === PROCESSING ? "Analysing" : a.status === "Completed" ? "Ready" : a.status),
      ),
    );
    if (a.status === PROCESSING) {
      const pct = typeof a.progress === "number" ? a.progress : null;
      parts.push(
        h("p", { class: "lead" }, "We're analysing this photo. This usually takes 2–5 minutes; you can leave this page, we'll notify you."),
        h("div", { class: `bar${pct === null ? " bar--indeterminate" : ""}` }, h("div", { class: "bar__fill", style: pct === null ? "" : `width:${Math.max(4, pct)}%` })),
        a.stage ? h("p", { class: "muted" }, `${stageLabel(a.stage)}${pct !== null ? ` · ${pct}%` : ""}`) : null,
      );
    } else if (a.status === "Failed") {
      parts.push(
        h(
          "div",
          { class: "notice notice--error" },
          icon(ALERT),
          h("div", {}, h("strong", {}, "The analysis failed. "), a.errorMessage || "No reason was given.", h("br"), "Try uploading the photo again; if it keeps failing, use a sharper, well-lit photo of one leaf."),
        ),
      );
    } else {
      if (typeof a.overallHealthScore === "number") {
        parts.push(
          h(
            "div",
            { class: `gauge gauge--${band}` },
            h("div", { class: "gauge__value" }, String(a.overallHealthScore), h("small", {}, "/100")),
            h("div", {}, h("div", { class: "gauge__label" }, healthLabel(a.overallHealthScore)), h("div", { class: "gauge__bar" }, h("div", { style: `width:${a.overallHealthScore}%` }))),
          ),
        );
      }
      if (a.primaryConcern) parts.push(h("div", { class: "concern" }, h("span", { class: "muted" }, "Primary concern"), h("strong", {}, a.primaryConcern)));
      const extra = resultRows(a.result);
      if (extra.length) parts.push(h("h3", {}, "Details"), h("dl", { class: "facts" }, extra));
    }
    const times = [];
    if (a.createdAt) times.push(h("dt", {}, "Uploaded"), h("dd", {}, absoluteTime(a.createdAt)));
    if (a.completedAt) times.push(h("dt", {}, "Completed"), h("dd", {}, absoluteTime(a.completedAt)));
    if (a.failedAt) times.push(h("dt", {}, "Failed"), h("dd", {}, absoluteTime(a.failedAt)));
    if (times.length) parts.push(h("dl", { class: "facts facts--small" }, times));
    clear(this.body).append(...parts.filter(Boolean));
  }
}

function resultRows(result) {
  if (!result || typeof result !== "object") return [];
  const rows = [];
  for (const [key, value] of Object.entries(result)) {
    if (HIDDEN_RESULT_KEYS.has(key) || value === null || value === undefined || value === "") continue;
    rows.push(h("dt", {}, humanize(key)), h("dd", {}, describe(value)));
  }
  return rows;
}

function describe(value) {
  if (Array.isArray(value)) {
    if (value.length === 1) return describe(value[0]);
    return h("ul", { class: "plain" }, value.map((v) => h("li", {}, describe(v))));
  }
  if (typeof value === "object") {
    return h(
      "dl",
      { class: "facts facts--nested" },
      Object.entries(value).flatMap(([k, v]) => [h("dt", {}, humanize(k)), h("dd", {}, describe(v))]),
    );
  }
  if (typeof value === "boolean") return value ? "Yes" : "No";
  return String(value);
}
