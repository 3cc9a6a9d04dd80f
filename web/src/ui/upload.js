// The upload card: pick a photo (or drop it), optional crop, a real progress bar.

import { t } from "../i18n.js";
import { fileSize } from "./format.js";
import { clear, h, icon } from "./dom.js";
import { ALERT, CHECK, UPLOAD } from "./icons.js";

// Exactly what the server accepts (api/images.py, GET /config `imageTypes`; a test keeps them
// equal). HEIC/HEIF is what iPhones take; the server converts it. File extensions are listed
// too: some browsers do not know HEIC's MIME type and would grey those photos out.
export const IMAGE_TYPES = ["image/jpeg", "image/png", "image/webp", "image/heic", "image/heif"];
const EXTENSIONS = { jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png", webp: "image/webp", heic: "image/heic", heif: "image/heif" };
export const ACCEPT = [...IMAGE_TYPES, ...Object.keys(EXTENSIONS).map((e) => `.${e}`)].join(",");
// Formats a phone or camera may produce that we refuse, named so a farmer knows what it is.
const REFUSED = { "image/gif": "GIF", "image/bmp": "BMP", "image/tiff": "TIFF", "image/svg+xml": "SVG", "image/avif": "AVIF" };

/** null when ``file`` looks acceptable, else the catalog key and parameters of why not. */
export function checkPhoto(file) {
  const ext = (file.name.split(".").pop() || "").toLowerCase();
  const type = (file.type || EXTENSIONS[ext] || "").toLowerCase();
  if (IMAGE_TYPES.includes(type) || EXTENSIONS[ext]) return null;
  if (REFUSED[type]) return ["upload.refusedFormat", { format: REFUSED[type] }];
  if (type.startsWith("image/")) return ["upload.refusedFormat", { format: type.slice(6).toUpperCase() }];
  return ["upload.notAPhoto", { name: file.name }];
}

export class UploadCard {
  /**
   * @param {object} o
   * @param {(file: File, cropType: string, onProgress: Function) => {promise: Promise, abort: Function}} o.upload
   * @param {(answer: object, cropType: string) => void} o.onUploaded
   */
  constructor({ upload, onUploaded }) {
    Object.assign(this, { upload, onUploaded });
    this.file = null;
    this.previewUrl = null;

    this.input = h("input", {
      type: "file",
      name: "image",
      accept: ACCEPT,
      class: "visually-hidden",
      id: "image-input",
      onchange: () => this._choose(this.input.files[0] || null),
    });
    this.preview = h("div", { class: "drop__preview" });
    this.dropLabel = h(
      "div",
      { class: "drop__prompt" },
      icon(UPLOAD, "drop__icon"),
      h("strong", {}, t("upload.choose")),
      h("span", { class: "muted hide-narrow" }, t("upload.orDrop")),
      h("div", { class: "muted small" }, t("upload.tip")),
    );
    this.drop = h("label", { class: "drop", for: "image-input" }, this.dropLabel, this.preview);
    for (const type of ["dragenter", "dragover"]) {
      this.drop.addEventListener(type, (e) => {
        e.preventDefault();
        this.drop.classList.add("drop--over");
      });
    }
    this.drop.addEventListener("dragleave", () => this.drop.classList.remove("drop--over"));
    this.drop.addEventListener("drop", (e) => {
      e.preventDefault();
      this.drop.classList.remove("drop--over");
      const file = e.dataTransfer?.files?.[0];
      if (file) this._choose(file);
    });

    this.crop = h("input", {
      type: "text",
      name: "cropType",
      class: "input",
      id: "crop-input",
      placeholder: t("upload.cropPlaceholder"),
      maxlength: "64",
      autocomplete: "off",
      list: "crop-suggestions",
    });
    const suggestions = h(
      "datalist",
      { id: "crop-suggestions" },
      ["tomato", "potato", "pepper", "maize", "wheat", "rice", "grape", "apple", "cassava", "coffee"].map((c) => h("option", { value: c })),
    );
    this.button = h("button", { type: "submit", class: "btn btn--primary", "data-testid": "upload", disabled: true }, t("upload.submit"));
    this.progressText = h("span", { class: "progress__text" });
    this.progressFill = h("div", { class: "bar__fill" });
    this.progress = h(
      "div",
      { class: "progress", hidden: true, "data-testid": "upload-progress" },
      h("div", { class: "bar", role: "progressbar", "aria-label": t("upload.progressLabel"), "aria-valuemin": "0", "aria-valuemax": "100" }, this.progressFill),
      this.progressText,
    );
    this.status = h("div", { class: "form-status", role: "status" });

    this.form = h(
      "form",
      { class: "upload", onsubmit: (e) => this._submit(e), novalidate: true },
      this.input,
      this.drop,
      h("div", { class: "field" }, h("label", { class: "field__label", for: "crop-input" }, t("upload.crop")), this.crop, suggestions),
      h("div", { class: "upload__actions" }, this.button),
      this.progress,
      this.status,
    );
    this.el = h("section", { class: "card upload-card", "aria-labelledby": "upload-title" }, h("h2", { id: "upload-title" }, t("upload.title")), h("p", { class: "muted" }, t("upload.intro")), this.form);
  }

  _choose(file) {
    this._setStatus(null);
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = null;
    this.file = file;
    clear(this.preview);
    this.drop.classList.toggle("drop--has-file", Boolean(file));
    if (!file) {
      this.button.disabled = true;
      return;
    }
    const problem = checkPhoto(file);
    if (problem) {
      this._setStatus("error", t(...problem));
      this.button.disabled = true;
      return;
    }
    this.previewUrl = URL.createObjectURL(file);
    // Browsers other than Safari cannot draw HEIC: show the file's name without a broken image.
    const img = h("img", { src: this.previewUrl, alt: "", onerror: () => img.remove() });
    this.preview.append(
      img,
      h("div", { class: "drop__file" }, h("strong", {}, file.name), h("span", { class: "muted" }, fileSize(file.size)), h("span", { class: "link" }, t("upload.change"))),
    );
    this.button.disabled = false;
  }

  async _submit(e) {
    e.preventDefault();
    if (!this.file || this.busy) return;
    this.busy = true;
    this.button.disabled = true;
    this.button.textContent = t("upload.sending");
    this._setStatus(null);
    this.progress.hidden = false;
    this._progress(0, this.file.size);
    const { promise } = this.upload(this.file, this.crop.value.trim(), (loaded, total) => this._progress(loaded, total));
    try {
      const answer = await promise;
      this._progress(1, 1);
      this.onUploaded(answer, this.crop.value.trim());
      this.input.value = "";
      this.crop.value = "";
      this._choose(null);
      this._setStatus("ok", t("upload.done"));
    } catch (error) {
      this._setStatus("error", error.message || t("upload.failed"));
      this.button.disabled = false;
    } finally {
      this.busy = false;
      this.button.textContent = t("upload.submit");
      setTimeout(() => {
        if (!this.busy) this.progress.hidden = true;
      }, 1200);
    }
  }

  _progress(loaded, total) {
    const pct = total ? Math.round((loaded / total) * 100) : 0;
    this.progressFill.style.width = `${pct}%`;
    this.progress.querySelector(".bar").setAttribute("aria-valuenow", String(pct));
    this.progressText.textContent = pct >= 100 ? t("upload.complete") : t("upload.progress", { pct, size: fileSize(total) });
  }

  _setStatus(kind, text) {
    clearTimeout(this._statusTimer);
    if (kind === "ok") this._statusTimer = setTimeout(() => this._setStatus(null), 8000);
    clear(this.status);
    this.status.className = "form-status";
    if (!kind) return;
    this.status.classList.add(`form-status--${kind}`);
    this.status.append(icon(kind === "error" ? ALERT : CHECK), h("span", {}, text));
  }
}
