import assert from "node:assert/strict";
import { test } from "node:test";

import { AnalysesStore, fromApi, fromEvent, merge } from "../src/analyses.js";
import { backoffDelay, reachableWsUrl, refreshLead } from "../src/realtime.js";
import { loadCatalogs } from "./catalogs.js";

loadCatalogs();

test("a finished analysis never goes back to Processing; progress only moves forward", () => {
  let a = merge(null, { id: "a", status: "Processing", progress: 50 });
  a = merge(a, { id: "a", status: "Processing", progress: 20, stage: "late" });
  assert.equal(a.progress, 50);
  a = merge(a, fromEvent({ event: "AnalysisCompleted", analysisId: "a", overallHealthScore: 80, cropType: "maize" }));
  a = merge(a, fromEvent({ event: "AnalysisProgress", analysisId: "a", progress: 90, stage: "stale" }));
  assert.equal(a.status, "Completed");
  assert.equal(a.overallHealthScore, 80);
  assert.notEqual(a.stage, "stale");
});

test("fields the patch does not know are kept", () => {
  const a = merge({ id: "a", status: "Processing", createdAt: "t", cropType: "rice" }, { id: "a", cropType: null, status: "Failed" });
  assert.equal(a.cropType, "rice");
  assert.equal(a.createdAt, "t");
});

test("API items are accepted with analysisId or id, and read result fields", () => {
  assert.equal(fromApi({ id: "x", status: "Completed" }).id, "x");
  const a = fromApi({ analysisId: "y", status: "Completed", result: { overallHealthScore: 33 } });
  assert.equal(a.overallHealthScore, 33);
  assert.equal(fromApi({ status: "Completed" }), null);
});

test("the store sorts newest first, just-announced rows on top", () => {
  const store = new AnalysesStore();
  store.upsert({ id: "old", createdAt: "2025-01-01T00:00:00Z" });
  store.upsert({ id: "new", createdAt: "2025-02-01T00:00:00Z" });
  store.upsert({ id: "unknown" });
  assert.deepEqual(store.sorted().map((a) => a.id), ["unknown", "new", "old"]);
});

test("reconnect back-off grows, is capped, and is jittered", () => {
  const mid = () => 0.5;
  assert.equal(backoffDelay(1, { random: mid }), 500);
  assert.equal(backoffDelay(3, { random: mid }), 2000);
  assert.equal(backoffDelay(30, { random: mid }), 15000);
  assert.equal(backoffDelay(1, { random: () => 0 }), 375);
  assert.equal(backoffDelay(1, { random: () => 1 }), 625);
});

test("tokens are renewed ahead of expiry", () => {
  assert.equal(refreshLead(3600_000), 120_000);
  assert.equal(refreshLead(20_000), 4_000);
  assert.equal(refreshLead(5_000), 2_000);
});

test("a loopback WebSocket URL follows the host the page was opened on", () => {
  const page = (href) => new URL(href);
  assert.equal(reachableWsUrl("ws://127.0.0.1:9001/mqtt", page("http://192.0.2.7:8000/")), "ws://192.0.2.7:9001/mqtt");
  assert.equal(reachableWsUrl("ws://127.0.0.1:9001/mqtt", page("http://localhost:8000/")), "ws://127.0.0.1:9001/mqtt");
  assert.equal(reachableWsUrl("wss://mqtt.example.com/mqtt", page("https://app.example.com/")), "wss://mqtt.example.com/mqtt");
});

test("crop names read well, and an analyser's 'unknown' reads as a plant", async () => {
  const { cropName } = await import("../src/ui/format.js");
  assert.equal(cropName("tomato"), "Tomato");
  assert.equal(cropName("bell_pepper"), "Bell pepper");
  assert.equal(cropName("unknown"), "Plant");
  assert.equal(cropName(null), "Plant");
});
