// The live list of analyses: one `[data-testid=analysis-row]` per analysis, updated in place.

import { PROCESSING } from "../analyses.js";
import { t } from "../i18n.js";
import { cropName, healthBand, healthLabel, relativeTime } from "./format.js";
import { clear, h, icon } from "./dom.js";
import { IMAGE, SPROUT } from "./icons.js";

/** The farmer's word for a status ("Processing" -> "Analysing"). */
export function statusLabel(status) {
  const key = `status.${status}`;
  const text = t(key);
  return text !== key ? text : String(status);
}

export class AnalysisList {
  /**
   * @param {object} o
   * @param {import('../analyses.js').AnalysesStore} o.store
   * @param {(id: string) => Promise<string>} o.imageUrl   object URL of an analysis image
   * @param {(id: string) => void} o.onOpen
   * @param {(id: string) => boolean} o.isUnseen
   */
  constructor({ store, imageUrl, onOpen, isUnseen }) {
    Object.assign(this, { store, imageUrl, onOpen, isUnseen });
    this.rows = new Map();
    this.thumbs = new Map(); // id -> Promise<object URL>
    this.list = h("ul", { class: "rows", "aria-label": t("list.title") });
    this.empty = h(
      "div",
      { class: "empty" },
      icon(SPROUT, "empty__icon"),
      h("p", { class: "empty__title" }, t("list.emptyTitle")),
      h("p", { class: "empty__text" }, t("list.emptyText")),
    );
    this.loading = h("div", { class: "empty empty--loading" }, h("span", { class: "spinner" }), t("list.loading"));
    this.el = h("div", { class: "list" }, this.loading, this.list, this.empty);
    this.observer =
      "IntersectionObserver" in window
        ? new IntersectionObserver((entries) => this._onVisible(entries), { rootMargin: "200px" })
        : null;
    store.addEventListener("change", (e) => this._onChange(e.detail));
    store.addEventListener("reset", () => this._reset());
    this._ticker = setInterval(() => this._refreshTimes(), 30000);
    this._syncEmpty();
  }

  setLoaded() {
    this._syncEmpty();
  }

  _reset() {
    for (const url of this.thumbs.values()) url.then((u) => u && URL.revokeObjectURL(u)).catch(() => {});
    this.thumbs.clear();
    this.rows.clear();
    clear(this.list);
    this._syncEmpty();
  }

  _syncEmpty() {
    const none = this.rows.size === 0;
    this.loading.hidden = this.store.loaded || !none;
    this.empty.hidden = !(this.store.loaded && none);
    this.list.hidden = none;
  }

  _onChange({ analysis }) {
    let row = this.rows.get(analysis.id);
    if (!row) {
      row = this._createRow(analysis);
      this.rows.set(analysis.id, row);
      this._place(row, analysis);
    }
    this._fill(row, analysis);
    this._syncEmpty();
  }

  /** Keep rows in the store's order without re-creating them. */
  _place(row, analysis) {
    const order = this.store.sorted();
    const index = order.findIndex((a) => a.id === analysis.id);
    const next = order.slice(index + 1).find((a) => this.rows.get(a.id)?.el.isConnected);
    if (next) this.list.insertBefore(row.el, this.rows.get(next.id).el);
    else this.list.append(row.el);
  }

  _createRow(analysis) {
    const thumb = h("span", { class: "thumb" }, icon(IMAGE, "thumb__placeholder"));
    const title = h("span", { class: "row__title" });
    const chip = h("span", { class: "chip" });
    const newDot = h("span", { class: "new-dot", title: t("list.newTitle") }, t("list.new"));
    const sub = h("span", { class: "row__sub" });
    const bar = h("span", { class: "bar bar--row" }, h("span", { class: "bar__fill" }));
    const score = h("span", { class: "row__score" });
    const time = h("time", { class: "row__time" });
    // A list item holding one button (a <li role=button> would hide the list from readers).
    const button = h(
      "button",
      { type: "button", class: "row", onclick: () => this.onOpen(analysis.id) },
      thumb,
      h("span", { class: "row__main" }, h("span", { class: "row__head" }, title, chip, newDot), sub, bar),
      h("span", { class: "row__side" }, score, time),
    );
    const el = h("li", { class: "row-item", "data-testid": "analysis-row", "data-analysis-id": analysis.id }, button);
    const row = { el, button, thumb, title, chip, newDot, sub, bar, score, time };
    if (this.observer) this.observer.observe(el);
    else this._loadThumb(analysis.id, row);
    return row;
  }

  _fill(row, a) {
    const { el } = row;
    el.dataset.status = a.status;
    row.button.classList.toggle("row--failed", a.status === "Failed");
    const known = a.cropType && cropName(a.cropType) !== t("crop.unknown");
    row.title.textContent = known ? cropName(a.cropType) : a.status === PROCESSING ? t("list.newAnalysis") : t("list.plantPhoto");
    row.chip.textContent = statusLabel(a.status);
    row.chip.className = `chip chip--${String(a.status).toLowerCase()}`;
    row.newDot.hidden = !this.isUnseen(a.id);

    const processing = a.status === PROCESSING;
    row.bar.hidden = !processing;
    if (processing) {
      const pct = typeof a.progress === "number" ? a.progress : null;
      row.bar.classList.toggle("bar--indeterminate", pct === null);
      row.bar.firstChild.style.width = pct === null ? "" : `${Math.max(4, pct)}%`;
      row.sub.textContent = a.stage ? `${stageLabel(a.stage)}${pct !== null ? ` · ${pct}%` : ""}` : t("list.waiting");
    } else if (a.status === "Failed") {
      row.sub.textContent = t("failed.short");
    } else {
      row.sub.textContent = a.primaryConcern || (a.overallHealthScore !== null ? healthLabel(a.overallHealthScore) : "");
    }

    clear(row.score);
    if (a.status === "Completed" && typeof a.overallHealthScore === "number") {
      row.score.append(
        h(
          "span",
          { class: `score score--${healthBand(a.overallHealthScore)}`, title: t("health.scoreTitle") },
          String(a.overallHealthScore),
          h("small", {}, t("health.outOf")),
        ),
      );
    }
    const when = a.completedAt || a.failedAt || a.createdAt;
    row.time.dateTime = when || "";
    row.time.dataset.iso = when || "";
    row.time.textContent = when ? relativeTime(when) : t("time.justNow");
  }

  _refreshTimes() {
    for (const row of this.rows.values()) {
      const iso = row.time.dataset.iso;
      if (iso) row.time.textContent = relativeTime(iso);
    }
  }

  refreshUnseen() {
    for (const [id, row] of this.rows) row.newDot.hidden = !this.isUnseen(id);
  }

  _onVisible(entries) {
    for (const entry of entries) {
      if (!entry.isIntersecting) continue;
      const id = entry.target.dataset.analysisId;
      const row = this.rows.get(id);
      this.observer.unobserve(entry.target);
      if (row) this._loadThumb(id, row);
    }
  }

  _loadThumb(id, row) {
    if (!this.thumbs.has(id)) this.thumbs.set(id, this.imageUrl(id).catch(() => null));
    this.thumbs.get(id).then((url) => {
      if (!url) return;
      row.thumb.replaceChildren(h("img", { src: url, alt: "", loading: "lazy" }));
    });
  }

  /** A cached object URL of the image, shared with the detail view. */
  image(id) {
    if (!this.thumbs.has(id)) this.thumbs.set(id, this.imageUrl(id).catch(() => null));
    return this.thumbs.get(id);
  }
}

/** The farmer's word for a progress stage; unknown stages read as "Analysing". */
export function stageLabel(stage) {
  const key = `stage.${String(stage).toLowerCase()}`;
  const text = t(key);
  return text !== key ? text : t("status.Processing");
}
