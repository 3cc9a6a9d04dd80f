// Formatting for people: relative times, sizes, crop names, health bands (in the catalog's
// language: src/locales).

import { locale, t } from "../i18n.js";

export function relativeTime(iso, now = Date.now()) {
  const at = Date.parse(iso);
  if (!Number.isFinite(at)) return "";
  const rtf = new Intl.RelativeTimeFormat(locale(), { numeric: "auto" });
  const seconds = Math.round((at - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return t("time.justNow");
  if (abs < 3600) return rtf.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return rtf.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return rtf.format(Math.round(seconds / 86400), "day");
  return new Date(at).toLocaleDateString(locale(), { day: "numeric", month: "short", year: "numeric" });
}

export function absoluteTime(iso) {
  const at = Date.parse(iso);
  if (!Number.isFinite(at)) return "";
  return new Date(at).toLocaleString(locale(), {
    day: "numeric",
    month: "short",
    hour: "2-digit",
    minute: "2-digit",
  });
}

export function fileSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
}

// What analysers answer when they could not tell the crop.
const NO_CROP = new Set(["", "unknown", "other", "none", "n/a", "unidentified"]);

export function cropName(crop) {
  if (!crop || typeof crop !== "string") return t("crop.unknown");
  const clean = crop.replace(/[_-]+/g, " ").trim();
  if (NO_CROP.has(clean.toLowerCase())) return t("crop.unknown");
  const key = `crop.${clean.toLowerCase()}`;
  const named = t(key);
  return named !== key ? named : clean[0].toUpperCase() + clean.slice(1);
}

/** "good" | "fair" | "poor" | "" for a 0–100 health score. */
export function healthBand(score) {
  if (typeof score !== "number" || !Number.isFinite(score)) return "";
  if (score >= 70) return "good";
  if (score >= 40) return "fair";
  return "poor";
}

export function healthLabel(score) {
  const band = healthBand(score);
  return band ? t(`health.${band}`) : "";
}

/** What a farmer should do for a band, when the analyser gave no advice of its own. */
export function healthAdvice(score) {
  const band = healthBand(score);
  return band ? t(`advice.${band}`) : "";
}

/** "Leaf spot" from "leaf_spot"; field names from "primaryConcern" → "Primary concern". */
export function humanize(key) {
  const spaced = String(key)
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .replace(/[_-]+/g, " ")
    .trim()
    .toLowerCase();
  return spaced ? spaced[0].toUpperCase() + spaced.slice(1) : "";
}
