// What to do with one event (contract §4), whichever way it arrived.
//
// Sources:
//   "live"      an MQTT PUBLISH forwarded while this page was subscribed (retain flag 0)
//   "retained"  the retained copy sent when this page (re)subscribed (retain flag 1)
//   "recovered" an item of GET /notifications?since=… fetched after a (re)connect
//
// Every event updates the analysis it names (idempotent) and gets a receipt. A toast is shown
// at most once per event per page, and never for an event this browser handled before the page
// was loaded (reload, QoS-1 redelivery, outbox republish). Other open tabs of the same user
// still toast an event one of them recorded first: they were open when it arrived.

export const COMPLETED = "AnalysisCompleted";
export const FAILED = "AnalysisFailed";
export const PROGRESS = "AnalysisProgress";
const KINDS = new Set([COMPLETED, FAILED, PROGRESS]);

/**
 * The event in ``raw`` (bytes, string or object), or null when it is not one of ours.
 * @returns {null | Record<string, any>}
 */
export function parseEvent(raw) {
  let obj = raw;
  try {
    if (raw instanceof Uint8Array) obj = JSON.parse(new TextDecoder().decode(raw));
    else if (typeof raw === "string") obj = JSON.parse(raw);
  } catch {
    return null;
  }
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return null;
  if (!KINDS.has(obj.event)) return null;
  for (const field of ["eventId", "analysisId", "userId"]) {
    if (typeof obj[field] !== "string" || !obj[field]) return null;
  }
  return obj;
}

export function isTerminal(event) {
  return event.event === COMPLETED || event.event === FAILED;
}

/** Server time the event happened (epoch ms), or NaN (progress events carry none). */
export function eventTime(event) {
  const stamp = event.completedAt || event.failedAt || event.createdAt;
  return stamp ? Date.parse(stamp) : NaN;
}

export class Inbox {
  /**
   * @param {object} o
   * @param {string} o.userId
   * @param {import('./seen.js').SeenEvents} o.seen
   * @param {import('./seen.js').Bookmarks} o.bookmarks
   * @param {number} o.pageLoadedAt  epoch ms this page started
   * @param {(event: object, source: string) => void} o.onEvent    every accepted event
   * @param {(event: object, source: string) => void} o.onToast    a notification to show
   * @param {(eventId: string) => void} o.sendReceipt
   */
  constructor({ userId, seen, bookmarks, pageLoadedAt, onEvent, onToast, sendReceipt }) {
    Object.assign(this, { userId, seen, bookmarks, pageLoadedAt, onEvent, onToast, sendReceipt });
    this.handledHere = new Set(); // event ids this page has already handled
    this.stats = { received: 0, duplicates: 0, ignored: 0, toasts: 0 };
  }

  /** @returns {"ignored" | "duplicate" | "toast" | "quiet"} what happened (for tests/logs) */
  handle(raw, source) {
    const event = parseEvent(raw);
    if (!event || event.userId !== this.userId) {
      this.stats.ignored += 1;
      return "ignored";
    }
    this.stats.received += 1;
    // Idempotent row update even for duplicates: a retained copy may carry fresher fields.
    this.onEvent(event, source);
    if (this.handledHere.has(event.eventId)) {
      this.stats.duplicates += 1;
      return "duplicate";
    }
    this.handledHere.add(event.eventId);
    this.sendReceipt(event.eventId, source);

    const knownSince = this.seen.firstSeenAt(event.eventId);
    this.seen.record(event.eventId);
    this.bookmarks.advance(eventTime(event));
    if (!isTerminal(event)) return "quiet";

    let show;
    if (knownSince !== undefined) {
      // Another tab recorded it while this page was open: this page shows it too.
      show = knownSince >= this.pageLoadedAt;
    } else {
      // New to this browser: live means "just now"; a replay or recovery is shown when it
      // happened while this browser was following the user (results that came in while the
      // tab was closed), and is quiet history otherwise (first login on a new browser).
      show = source === "live" || eventTime(event) >= this.bookmarks.followingSince();
    }
    if (!show) return "quiet";
    this.stats.toasts += 1;
    this.onToast(event, source);
    return "toast";
  }
}
