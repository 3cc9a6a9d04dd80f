import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

import { farmerMessage } from "../src/api.js";
import { setLocale, t } from "../src/i18n.js";
import { catalogs, loadCatalogs } from "./catalogs.js";

const SRC = path.join(path.dirname(fileURLToPath(import.meta.url)), "..", "src");

function sources(dir = SRC) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sources(path.join(dir, e.name)) : e.name.endsWith(".js") ? [path.join(dir, e.name)] : [],
  );
}

test("every key the app uses is in the English catalog", () => {
  const en = catalogs().en;
  const used = new Set();
  for (const file of sources()) {
    for (const m of readFileSync(file, "utf8").matchAll(/\bt\("([\w.]+)"/g)) used.add(m[1]);
  }
  assert.ok(used.size > 80, `only ${used.size} keys found`);
  const missing = [...used].filter((k) => !(k in en) && !(`${k}_other` in en));
  assert.deepEqual(missing, []);
});

test("another language is a file: its keys and placeholders match English", () => {
  const all = catalogs();
  for (const [lang, messages] of Object.entries(all)) {
    for (const [key, text] of Object.entries(messages)) {
      assert.ok(key in all.en, `${lang}: unknown key ${key}`);
      const names = (s) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();
      assert.deepEqual(names(text), names(all.en[key]), `${lang}: placeholders of ${key}`);
    }
  }
  // A catalog added at run time is picked by the browser's languages, English filling gaps.
  assert.equal(setLocale({ ...all, tr: { "auth.login": "Giriş yap" } }, ["tr-TR", "en"]), "tr");
  assert.equal(t("auth.login"), "Giriş yap");
  assert.equal(t("auth.register"), all.en["auth.register"]);
  assert.equal(setLocale(all, ["xx"]), "en");
});

test("one spelling: the catalog says 'analyse', never 'analyze'", () => {
  for (const [key, text] of Object.entries(catalogs().en)) {
    assert.doesNotMatch(text, /analyz/i, key);
  }
});

test("validation errors become a farmer's words, never the server's", () => {
  loadCatalogs();
  const short = { detail: "Invalid request: password: String should have at least 8 characters", errors: [{ field: "password", type: "string_too_short", message: "String should have at least 8 characters" }] };
  assert.equal(farmerMessage(422, short, "register"), "Your password needs at least 8 characters.");
  const badName = { errors: [{ field: "username", type: "string_pattern_mismatch" }] };
  assert.match(farmerMessage(422, badName, "register"), /^A username has 3 to 64/);
  assert.match(farmerMessage(401, { detail: "Wrong username or password" }, "login"), /^Wrong username or password\. Check them/);
  assert.match(farmerMessage(415, { detail: "The file is not a JPEG, PNG, WebP or HEIC image." }, "upload"), /phone's camera/);
  assert.match(farmerMessage(0, null, "upload"), /internet connection/);
  assert.match(farmerMessage(502, null, ""), /on our side/);
  for (const status of [400, 418, 451]) assert.doesNotMatch(farmerMessage(status, { detail: "raw server text" }), /raw server text/);
});

test("new accounts are checked with the server's rules before sending", async () => {
  loadCatalogs();
  const { checkNewAccount } = await import("../src/ui/auth.js");
  assert.equal(checkNewAccount("jo", "long-enough-1"), "auth.usernameTooShort");
  assert.equal(checkNewAccount("farmer jo", "long-enough-1"), "auth.usernameChars");
  assert.equal(checkNewAccount("farmer.jo", "short"), "auth.passwordTooShort");
  assert.equal(checkNewAccount("farmer.jo", "FARMER.JO"), "auth.passwordIsUsername");
  assert.equal(checkNewAccount("farmer.jo", "green-leaves"), null);
});

test("the photo picker takes what phones take and names what it refuses", async () => {
  loadCatalogs();
  const { ACCEPT, IMAGE_TYPES, checkPhoto } = await import("../src/ui/upload.js");
  assert.deepEqual(IMAGE_TYPES, ["image/jpeg", "image/png", "image/webp", "image/heic", "image/heif"]);
  assert.match(ACCEPT, /\.heic/);
  assert.equal(checkPhoto({ name: "IMG_0001.HEIC", type: "" }), null); // Chrome knows no HEIC type
  assert.equal(checkPhoto({ name: "leaf.jpg", type: "image/jpeg" }), null);
  assert.deepEqual(checkPhoto({ name: "a.gif", type: "image/gif" }), ["upload.refusedFormat", { format: "GIF" }]);
  assert.deepEqual(checkPhoto({ name: "notes.pdf", type: "application/pdf" }), ["upload.notAPhoto", { name: "notes.pdf" }]);
});

test("what to do: the analyser's advice, else none", async () => {
  const { adviceOf } = await import("../src/ui/detail.js");
  assert.deepEqual(adviceOf({ recommendations: ["Remove affected leaves", " ", 3] }), ["Remove affected leaves"]);
  assert.deepEqual(adviceOf({ advice: "Spray copper" }), ["Spray copper"]);
  assert.deepEqual(adviceOf({ model: "x", analysis: {} }), []);
  assert.deepEqual(adviceOf(null), []);
});
