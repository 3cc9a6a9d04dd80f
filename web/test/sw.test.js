import assert from "node:assert/strict";
import { test } from "node:test";

// The service worker's handlers against a stand-in for its global scope (the browser test
// delivers a real push through the DevTools protocol; a tap on a notification cannot be
// simulated there, so the click path is pinned here).
function scope({ tabs = [] } = {}) {
  const handlers = {};
  const shown = [];
  const opened = [];
  const self = {
    location: new URL("https://farm.example/app/sw.js"),
    addEventListener: (type, fn) => (handlers[type] = fn),
    skipWaiting: () => {},
    clients: {
      claim: async () => {},
      matchAll: async () => tabs,
      openWindow: async (url) => opened.push(url),
    },
    registration: { showNotification: async (title, options) => shown.push({ title, ...options }) },
  };
  return { self, handlers, shown, opened };
}

async function fire(handler, event) {
  let done = Promise.resolve();
  handler({ ...event, waitUntil: (p) => (done = p) });
  await done;
}

const PUSH = {
  notification: { title: "Analysis complete", body: "Tomato: health 72/100" },
  data: { event: "AnalysisCompleted", eventId: "e1", analysisId: "a 1", deepLink: "app://analysis/a 1" },
};

test("a push shows one notification per analysis; a tap opens that analysis", async () => {
  const s = scope();
  globalThis.self = s.self;
  await import(`../src/sw.js?${Date.now()}`);
  await fire(s.handlers.push, { data: { json: () => PUSH } });
  assert.equal(s.shown.length, 1);
  assert.equal(s.shown[0].title, "Analysis complete");
  assert.equal(s.shown[0].tag, "a 1");
  assert.equal(s.shown[0].data.url, "https://farm.example/app/#/analyses/a%201");

  let closed = false;
  await fire(s.handlers.notificationclick, { notification: { data: s.shown[0].data, close: () => (closed = true) } });
  assert.ok(closed);
  assert.deepEqual(s.opened, ["https://farm.example/app/#/analyses/a%201"]);
});

test("a tap focuses an open tab of the app and tells it which analysis to show", async () => {
  const messages = [];
  let focused = false;
  const tab = { url: "https://farm.example/app/", focus: async () => (focused = true), postMessage: (m) => messages.push(m), visibilityState: "hidden", focused: false };
  const s = scope({ tabs: [tab] });
  globalThis.self = s.self;
  await import(`../src/sw.js?${Date.now()}-2`);
  await fire(s.handlers.notificationclick, { notification: { data: { analysisId: "a2", url: "https://farm.example/app/#/analyses/a2" }, close: () => {} } });
  assert.ok(focused);
  assert.deepEqual(messages, [{ type: "open-analysis", analysisId: "a2" }]);
  assert.deepEqual(s.opened, []);
});

test("no notification while a visible, focused tab shows the toast itself", async () => {
  const tab = { url: "https://farm.example/app/", visibilityState: "visible", focused: true };
  const s = scope({ tabs: [tab] });
  globalThis.self = s.self;
  await import(`../src/sw.js?${Date.now()}-3`);
  await fire(s.handlers.push, { data: { json: () => PUSH } });
  assert.equal(s.shown.length, 0);
});
