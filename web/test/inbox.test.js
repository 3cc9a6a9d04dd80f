import assert from "node:assert/strict";
import { test } from "node:test";

import { Inbox, parseEvent } from "../src/inbox.js";
import { Bookmarks, SeenEvents } from "../src/seen.js";
import { MemoryStorage } from "./memory-storage.js";

const USER = "u1";
const T0 = Date.parse("2025-01-01T10:00:00Z");

function completed(eventId, at = T0 + 60_000, extra = {}) {
  return {
    event: "AnalysisCompleted",
    eventId,
    analysisId: `a-${eventId}`,
    userId: USER,
    status: "Completed",
    completedAt: new Date(at).toISOString(),
    cropType: "tomato",
    overallHealthScore: 70,
    imageUrl: "/x",
    ...extra,
  };
}

/** One page ("tab") of the app: its own in-page state, the browser's shared storage. */
function page(storage, clock, loadedAt) {
  const toasts = [];
  const receipts = [];
  const updates = [];
  const now = () => clock.now;
  const inbox = new Inbox({
    userId: USER,
    seen: new SeenEvents(storage, USER, now),
    bookmarks: new Bookmarks(storage, USER, now),
    pageLoadedAt: loadedAt ?? clock.now,
    onEvent: (e) => updates.push(e.eventId),
    onToast: (e) => toasts.push(e.eventId),
    sendReceipt: (id) => receipts.push(id),
  });
  inbox.bookmarks.followingSince();
  return { inbox, toasts, receipts, updates };
}

const bytes = (obj) => new TextEncoder().encode(JSON.stringify(obj));

test("a live event is toasted once; a QoS-1 duplicate is not", () => {
  const clock = { now: T0 };
  const tab = page(new MemoryStorage(), clock);
  clock.now = T0 + 60_000;
  assert.equal(tab.inbox.handle(bytes(completed("e1")), "live"), "toast");
  assert.equal(tab.inbox.handle(bytes(completed("e1")), "live"), "duplicate");
  assert.deepEqual(tab.toasts, ["e1"]);
  assert.deepEqual(tab.receipts, ["e1"]);
  assert.equal(tab.updates.length, 2, "duplicates still refresh the row (idempotent)");
});

test("after a reload, retained replays and recovered copies never toast again", () => {
  const storage = new MemoryStorage();
  const clock = { now: T0 };
  const first = page(storage, clock);
  clock.now = T0 + 60_000;
  first.inbox.handle(bytes(completed("e1")), "live");
  clock.now = T0 + 120_000;
  const reloaded = page(storage, clock);
  assert.equal(reloaded.inbox.handle(bytes(completed("e1")), "retained"), "quiet");
  assert.equal(reloaded.inbox.handle(completed("e1"), "recovered"), "duplicate");
  // Even a live republish (outbox retry) of an event handled before this load stays quiet.
  const again = page(storage, clock);
  assert.equal(again.inbox.handle(bytes(completed("e1")), "live"), "quiet");
  assert.deepEqual(reloaded.toasts, []);
  assert.deepEqual(reloaded.receipts, ["e1"], "a receipt is still sent: this device has it");
});

test("two open tabs both toast a live event, whichever records it first", () => {
  const storage = new MemoryStorage();
  const clock = { now: T0 };
  const a = page(storage, clock);
  const b = page(storage, clock);
  clock.now = T0 + 60_000;
  assert.equal(a.inbox.handle(bytes(completed("e1")), "live"), "toast");
  assert.equal(b.inbox.handle(bytes(completed("e1")), "live"), "toast");
});

test("a result that arrived while the tab was closed is toasted on return", () => {
  const storage = new MemoryStorage();
  const clock = { now: T0 };
  page(storage, clock); // the browser starts following the user at T0
  clock.now = T0 + 3_600_000;
  const later = page(storage, clock);
  assert.equal(later.inbox.handle(completed("e2", T0 + 1_800_000), "recovered"), "toast");
});

test("history on a browser that never followed the user is quiet", () => {
  const clock = { now: T0 };
  const fresh = page(new MemoryStorage(), clock);
  assert.equal(fresh.inbox.handle(bytes(completed("old", T0 - 86_400_000)), "retained"), "quiet");
  assert.deepEqual(fresh.receipts, ["old"]);
});

test("progress events update rows but never toast; foreign or malformed payloads are ignored", () => {
  const clock = { now: T0 };
  const tab = page(new MemoryStorage(), clock);
  const progress = { event: "AnalysisProgress", eventId: "p1", analysisId: "a", userId: USER, status: "Processing", progress: 40, stage: "x" };
  assert.equal(tab.inbox.handle(bytes(progress), "live"), "quiet");
  assert.equal(tab.inbox.handle(bytes({ ...completed("e9"), userId: "someone-else" }), "live"), "ignored");
  assert.equal(tab.inbox.handle(new TextEncoder().encode("not json"), "live"), "ignored");
  assert.equal(tab.inbox.handle(bytes({ event: "Other", eventId: "x", analysisId: "a", userId: USER }), "live"), "ignored");
  assert.deepEqual(tab.toasts, []);
  assert.deepEqual(tab.updates, ["p1"]);
});

test("the recovery cursor follows the newest event time", () => {
  const storage = new MemoryStorage();
  const clock = { now: T0 };
  const tab = page(storage, clock);
  assert.equal(tab.inbox.bookmarks.cursor(), T0);
  tab.inbox.handle(bytes(completed("e1", T0 + 5_000)), "live");
  tab.inbox.handle(bytes(completed("e0", T0 + 1_000)), "live");
  assert.equal(tab.inbox.bookmarks.cursor(), T0 + 5_000);
});

test("the seen set is bounded and survives corrupted storage", () => {
  const storage = new MemoryStorage();
  const seen = new SeenEvents(storage, USER, () => 1, 3);
  for (const id of ["a", "b", "c", "d"]) seen.record(id);
  assert.equal(seen.firstSeenAt("a"), undefined);
  assert.equal(seen.firstSeenAt("d"), 1);
  storage.setItem(`plantnotify.seen.${USER}`, "{broken");
  assert.equal(seen.firstSeenAt("d"), undefined);
  seen.record("e");
  assert.equal(seen.firstSeenAt("e"), 1);
});

test("parseEvent needs the contract's identifying fields", () => {
  assert.equal(parseEvent(JSON.stringify({ event: "AnalysisFailed", eventId: "e", analysisId: "a" })), null);
  assert.equal(parseEvent("[]"), null);
  assert.ok(parseEvent(JSON.stringify({ event: "AnalysisFailed", eventId: "e", analysisId: "a", userId: USER })));
});
