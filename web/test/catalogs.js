// The catalogs as the build bundles them (build.mjs: every src/locales/*.json), for tests.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { setLocale } from "../src/i18n.js";

export const LOCALES = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src", "locales");

export function catalogs() {
  const all = {};
  for (const name of readdirSync(LOCALES)) {
    if (name.endsWith(".json")) all[name.slice(0, -5)] = JSON.parse(readFileSync(path.join(LOCALES, name), "utf8"));
  }
  return all;
}

export function loadCatalogs(preferred = ["en"]) {
  return setLocale(catalogs(), preferred);
}
