// The user's analyses as the page knows them, merged from the API and from events.
//
// Events and API answers can arrive in any order (a retained replay after a fresher API read,
// a late progress event after the result): a finished analysis never goes back to
// "Processing", and progress only moves forward.

import { COMPLETED, FAILED, PROGRESS } from "./inbox.js";

export const PROCESSING = "Processing";
const TERMINAL = new Set(["Completed", "Failed"]);

/** An analysis from the API, in the page's shape. */
export function fromApi(item) {
  if (!item || typeof item !== "object") return null;
  const id = item.analysisId ?? item.id;
  if (typeof id !== "string" || !id) return null;
  const result = item.result && typeof item.result === "object" ? item.result : null;
  return {
    id,
    status: item.status || PROCESSING,
    cropType: item.cropType ?? result?.cropType ?? null,
    primaryConcern: item.primaryConcern ?? result?.primaryConcern ?? null,
    overallHealthScore: item.overallHealthScore ?? result?.overallHealthScore ?? null,
    errorMessage: item.errorMessage ?? null,
    createdAt: item.createdAt ?? null,
    completedAt: item.completedAt ?? null,
    failedAt: item.failedAt ?? null,
    updatedAt: item.updatedAt ?? null,
    progress: typeof item.progress === "number" ? item.progress : null,
    stage: item.stage ?? null,
    result,
  };
}

/** The change an event makes to its analysis. */
export function fromEvent(event) {
  const base = { id: event.analysisId };
  switch (event.event) {
    case COMPLETED:
      return {
        ...base,
        status: "Completed",
        cropType: event.cropType ?? null,
        primaryConcern: event.primaryConcern ?? null,
        overallHealthScore: event.overallHealthScore ?? null,
        completedAt: event.completedAt ?? null,
        progress: 100,
      };
    case FAILED:
      return { ...base, status: "Failed", errorMessage: event.errorMessage ?? null, failedAt: event.failedAt ?? null };
    case PROGRESS:
      return { ...base, status: PROCESSING, progress: event.progress ?? null, stage: event.stage ?? null };
    default:
      return base;
  }
}

/** ``current`` updated by ``patch``, under the never-go-back rules. */
export function merge(current, patch) {
  if (!current) return { ...patch };
  const next = { ...current };
  const regress = TERMINAL.has(current.status) && patch.status === PROCESSING;
  for (const [key, value] of Object.entries(patch)) {
    if (value === undefined) continue;
    if (regress && (key === "status" || key === "progress" || key === "stage")) continue;
    if (key === "progress" && typeof current.progress === "number" && typeof value === "number") {
      next.progress = Math.max(current.progress, value);
      continue;
    }
    // Keep what we know when the patch has nothing for a field (null from a thin event).
    if (value === null && current[key] !== null && current[key] !== undefined) continue;
    next[key] = value;
  }
  return next;
}

export class AnalysesStore extends EventTarget {
  constructor() {
    super();
    this.byId = new Map();
    this.loaded = false;
  }

  /** Merge one analysis; emits "change" with {analysis, isNew}. */
  upsert(patch) {
    if (!patch || !patch.id) return null;
    const current = this.byId.get(patch.id);
    const next = merge(current, patch);
    this.byId.set(next.id, next);
    this.dispatchEvent(new CustomEvent("change", { detail: { analysis: next, isNew: !current } }));
    return next;
  }

  /** Newest first; rows without a creation time (just announced by an event) on top. */
  sorted() {
    return [...this.byId.values()].sort((a, b) => {
      const ta = a.createdAt ? Date.parse(a.createdAt) : Infinity;
      const tb = b.createdAt ? Date.parse(b.createdAt) : Infinity;
      return tb - ta;
    });
  }

  get(id) {
    return this.byId.get(id);
  }

  clear() {
    this.byId.clear();
    this.loaded = false;
    this.dispatchEvent(new CustomEvent("reset"));
  }
}
