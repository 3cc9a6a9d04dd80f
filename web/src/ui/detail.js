// One analysis: the photo and what a farmer acts on (health, concern, what to do); everything
// else the analyser said is behind "Technical details".

import { PROCESSING } from "../analyses.js";
import { t } from "../i18n.js";
import { absoluteTime, cropName, healthAdvice, healthBand, healthLabel, humanize } from "./format.js";
import { clear, h, icon } from "./dom.js";
import { ALERT, BACK, IMAGE } from "./icons.js";
import { stageLabel, statusLabel } from "./list.js";

// Result fields shown above the fold already, or never meant for people.
const SHOWN_KEYS = new Set(["cropType", "primaryConcern", "overallHealthScore", "analysisId", "userId", "imageUrl", "imageBase64"]);
// Where analysers put their advice (the first one present is shown as "What to do").
const ADVICE_KEYS = ["recommendations", "recommendation", "advice", "actions", "whatToDo", "treatment"];

/** The analyser's advice as a list of strings (empty when it gave none). */
export function adviceOf(result) {
  if (!result || typeof result !== "object") return [];
  for (const key of ADVICE_KEYS) {
    const value = result[key];
    if (typeof value === "string" && value.trim()) return [value.trim()];
    if (Array.isArray(value)) {
      const items = value.filter((v) => typeof v === "string" && v.trim()).map((v) => v.trim());
      if (items.length) return items;
    }
  }
  return [];
}

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
    this.el = h("section", { class: "card detail", "aria-labelledby": "detail-title", "data-testid": "detail" });
  }

  show(id) {
    this.id = id;
    this.imageSlot = h("div", { class: "detail__image" }, icon(IMAGE, "thumb__placeholder"));
    this.body = h("div", { class: "detail__body", "aria-live": "polite" }, h("div", { class: "empty empty--loading" }, h("span", { class: "spinner" }), t("detail.loading")));
    clear(this.el).append(
      h("button", { type: "button", class: "btn btn--ghost btn--small back", onclick: () => this.onBack() }, icon(BACK), t("detail.back")),
      h("div", { class: "detail__grid" }, this.imageSlot, this.body),
    );
    this.image(id).then((url) => {
      if (this.id !== id) return;
      if (url) this.imageSlot.replaceChildren(h("img", { src: url, alt: t("detail.photoAlt") }));
      else this.imageSlot.replaceChildren(h("p", { class: "muted" }, t("detail.photoMissing")));
    });
  }

  showError(message) {
    clear(this.body).append(h("div", { class: "notice notice--error" }, icon(ALERT), h("span", {}, message)));
  }

  /** (Re)render the result; called again whenever an event changes this analysis. */
  render(a) {
    if (!a || a.id !== this.id) return;
    const open = this.body.querySelector("details")?.open; // keep the fold as the farmer left it
    const parts = [];
    parts.push(
      h(
        "div",
        { class: "detail__head" },
        h("h2", { id: "detail-title", tabindex: "-1" }, a.status === "Completed" || a.cropType ? cropName(a.cropType) : t("detail.title")),
        h("span", { class: `chip chip--${String(a.status).toLowerCase()}`, "data-testid": "detail-status" }, a.status === "Completed" ? t("status.Ready") : statusLabel(a.status)),
      ),
    );
    const technical = [];
    if (a.status === PROCESSING) {
      const pct = typeof a.progress === "number" ? a.progress : null;
      parts.push(
        h("p", { class: "lead" }, t("detail.processing")),
        h("div", { class: `bar${pct === null ? " bar--indeterminate" : ""}` }, h("div", { class: "bar__fill", style: pct === null ? "" : `width:${Math.max(4, pct)}%` })),
        a.stage ? h("p", { class: "muted" }, `${stageLabel(a.stage)}${pct !== null ? ` · ${pct}%` : ""}`) : null,
      );
    } else if (a.status === "Failed") {
      parts.push(
        h(
          "div",
          { class: "notice notice--error", "data-testid": "failed-notice" },
          icon(ALERT),
          h("div", {}, h("strong", {}, t("failed.title")), " ", t("failed.whatToDo")),
        ),
      );
      if (a.errorMessage) technical.push(h("dt", {}, t("detail.reason")), h("dd", {}, a.errorMessage));
    } else {
      const band = healthBand(a.overallHealthScore);
      if (band) {
        parts.push(
          h(
            "div",
            { class: `gauge gauge--${band}`, "data-testid": "health" },
            h("div", { class: "gauge__value" }, String(a.overallHealthScore), h("small", {}, t("health.outOf"))),
            h("div", {}, h("div", { class: "gauge__label" }, healthLabel(a.overallHealthScore)), h("div", { class: "gauge__bar" }, h("div", { style: `width:${a.overallHealthScore}%` }))),
          ),
        );
      }
      if (a.primaryConcern) {
        parts.push(h("div", { class: "concern", "data-testid": "concern" }, h("span", { class: "muted" }, t("detail.concern")), h("strong", {}, a.primaryConcern)));
      }
      const advice = adviceOf(a.result);
      const todo = advice.length ? advice : [healthAdvice(a.overallHealthScore) || t("advice.none")];
      parts.push(
        h(
          "div",
          { class: "todo", "data-testid": "what-to-do" },
          h("h3", {}, t("detail.whatToDo")),
          todo.length === 1 ? h("p", {}, todo[0]) : h("ul", {}, todo.map((x) => h("li", {}, x))),
        ),
      );
      technical.push(...resultRows(a.result));
    }
    if (a.createdAt) technical.push(h("dt", {}, t("detail.uploaded")), h("dd", {}, absoluteTime(a.createdAt)));
    if (a.completedAt) technical.push(h("dt", {}, t("detail.completed")), h("dd", {}, absoluteTime(a.completedAt)));
    if (a.failedAt) technical.push(h("dt", {}, t("detail.failedAt")), h("dd", {}, absoluteTime(a.failedAt)));
    technical.push(h("dt", {}, t("detail.analysisId")), h("dd", {}, a.id));
    parts.push(
      h(
        "details",
        { class: "technical", "data-testid": "technical-details", open: Boolean(open) },
        h("summary", {}, t("detail.technical")),
        h("dl", { class: "facts facts--small" }, technical),
      ),
    );
    clear(this.body).append(...parts.filter(Boolean));
  }
}

function resultRows(result) {
  if (!result || typeof result !== "object") return [];
  const rows = [];
  for (const [key, value] of Object.entries(result)) {
    if (SHOWN_KEYS.has(key) || ADVICE_KEYS.includes(key) || value === null || value === undefined || value === "") continue;
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
  if (typeof value === "boolean") return value ? t("common.yes") : t("common.no");
  return String(value);
}
