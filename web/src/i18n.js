// Every word the app shows comes from one catalog per language: src/locales/<lang>.json.
// Adding a language is adding that file (the build picks up every file in the folder); a key
// missing from it falls back to English. Placeholders are {name}; a key ending in _one /
// _other is chosen by Intl.PluralRules from the {count} parameter.

let fallback = {};
let messages = {};
let lang = "en";
let plural = new Intl.PluralRules("en");

/**
 * Choose the catalog: the first of ``preferred`` (e.g. navigator.languages) that exists, by full
 * tag ("pt-BR") or by language ("tr-TR" -> "tr"); English otherwise.
 * @param {Record<string, Record<string, string>>} catalogs
 * @param {readonly string[]} preferred
 */
export function setLocale(catalogs, preferred = []) {
  fallback = catalogs.en || {};
  lang = "en";
  for (const tag of preferred) {
    const exact = String(tag);
    const base = exact.split("-")[0].toLowerCase();
    const hit = catalogs[exact] ? exact : catalogs[base] ? base : null;
    if (hit) {
      lang = hit;
      break;
    }
  }
  messages = catalogs[lang] || fallback;
  plural = new Intl.PluralRules(lang);
  return lang;
}

export function locale() {
  return lang;
}

/** The message ``key`` with ``{placeholders}`` filled in; the key itself if nobody has it. */
export function t(key, params = {}) {
  let text;
  if (typeof params.count === "number") {
    const form = `${key}_${plural.select(params.count)}`;
    text = messages[form] ?? messages[`${key}_other`] ?? fallback[form] ?? fallback[`${key}_other`];
  }
  text = text ?? messages[key] ?? fallback[key];
  if (typeof text !== "string") return key;
  return text.replace(/\{(\w+)\}/g, (m, name) => (params[name] !== undefined && params[name] !== null ? String(params[name]) : m));
}

/** True when the catalog (or English) has ``key``. */
export function has(key) {
  return key in messages || key in fallback;
}
