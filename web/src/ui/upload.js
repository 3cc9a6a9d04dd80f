// The upload card: pick a photo (or drop it), optional crop, a real progress bar.

import { fileSize } from "./format.js";
import { clear, h, icon } from "./dom.js";
import { ALERT, CHECK, UPLOAD } from "./icons.js";

const ACCEPT = "image/jpeg,image/png,image/webp,image/heic,image/heif,image/gif,image/bmp,image/tiff";

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
      h("strong", {}, "Choose a photo"),
      h("span", { class: "muted" }, " or drop it here"),
      h("div", { class: "muted small" }, "A sharp, well-lit photo of one leaf works best. JPEG, PNG or WebP."),
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
      placeholder: "e.g. tomato (optional)",
      maxlength: "64",
      autocomplete: "off",
      list: "crop-suggestions",
    });
    const suggestions = h(
      "datalist",
      { id: "crop-suggestions" },
      ["tomato", "potato", "pepper", "maize", "wheat", "rice", "grape", "apple", "cassava", "coffee"].map((c) => h("option", { value: c })),
    );
    this.button = h("button", { type: "submit", class: "btn btn--primary", "data-testid": "upload", disabled: true }, "Analyse photo");
    this.progressText = h("span", { class: "progress__text" });
    this.progressFill = h("div", { class: "bar__fill" });
    this.progress = h(
      "div",
      { class: "progress", hidden: true, "data-testid": "upload-progress" },
      h("div", { class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" }, this.progressFill),
      this.progressText,
    );
    this.status = h("div", { class: "form-status", role: "status" });

    this.form = h(
      "form",
      { class: "upload", onsubmit: (e) => this._submit(e), novalidate: true },
      this.input,
      this.drop,
      h("label", { class: "field" }, h("span", { class: "field__label" }, "Crop"), this.crop, suggestions),
      h("div", { class: "upload__actions" }, this.button),
      this.progress,
      this.status,
    );
    this.el = h("section", { class: "card upload-card" }, h("h2", {}, "New analysis"), h("p", { class: "muted" }, "Results usually arrive in 2–5 minutes. Keep working: we'll notify you."), this.form);
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
    if (file.type && !file.type.startsWith("image/")) {
      this._setStatus("error", `“${file.name}” is not an image. Choose a JPEG, PNG or WebP photo.`);
      this.button.disabled = true;
      return;
    }
    this.previewUrl = URL.createObjectURL(file);
    this.preview.append(
      h("img", { src: this.previewUrl, alt: "" }),
      h("div", { class: "drop__file" }, h("strong", {}, file.name), h("span", { class: "muted" }, fileSize(file.size)), h("span", { class: "link" }, "Change photo")),
    );
    this.button.disabled = false;
  }

  async _submit(e) {
    e.preventDefault();
    if (!this.file || this.busy) return;
    this.busy = true;
    this.button.disabled = true;
    this.button.textContent = "Uploading…";
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
      this._setStatus("ok", "Uploaded. We're analysing it now — you'll get a notification when it's ready.");
    } catch (error) {
      this._setStatus("error", error.message || "The upload failed. Try again.");
      this.button.disabled = false;
    } finally {
      this.busy = false;
      this.button.textContent = "Analyse photo";
      setTimeout(() => {
        if (!this.busy) this.progress.hidden = true;
      }, 1200);
    }
  }

  _progress(loaded, total) {
    const pct = total ? Math.round((loaded / total) * 100) : 0;
    this.progressFill.style.width = `${pct}%`;
    this.progress.querySelector(".bar").setAttribute("aria-valuenow", String(pct));
    this.progressText.textContent = pct >= 100 ? "Upload complete" : `Uploading… ${pct}% of ${fileSize(total)}`;
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
