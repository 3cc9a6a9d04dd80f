// Event ids this browser has already handled for one user, persisted in localStorage.
//
// QoS 1 may deliver an event twice, a reconnect replays the retained event of every analysis,
// and missed-event recovery overlaps with both: the eventId is the one thing that tells them
// apart, so every toast is gated on it. The set is shared by all tabs of the user (same
// origin, same storage), bounded, and merged on write so two tabs never drop each other's ids.

const MAX_IDS = 2000;

export class SeenEvents {
  /**
   * @param {Storage} storage  localStorage (or a stand-in in unit tests)
   * @param {string} userId
   * @param {() => number} [now]
   * @param {number} [max]
   */
  constructor(storage, userId, now = () => Date.now(), max = MAX_IDS) {
    this.storage = storage;
    this.key = `plantnotify.seen.${userId}`;
    this.now = now;
    this.max = max;
  }

  /** @returns {Array<[string, number]>} [eventId, firstSeenAt] pairs, oldest first */
  _load() {
    try {
      const raw = this.storage.getItem(this.key);
      const entries = raw ? JSON.parse(raw) : [];
      if (!Array.isArray(entries)) return [];
      return entries.filter(
        (e) => Array.isArray(e) && typeof e[0] === "string" && Number.isFinite(e[1]),
      );
    } catch {
      return []; // unreadable (corrupted by hand): start afresh rather than break the app
    }
  }

  /**
   * When any tab of this browser first handled ``eventId`` (epoch ms), or undefined.
   * Read fresh every time: another tab may have recorded it a moment ago.
   */
  firstSeenAt(eventId) {
    const hit = this._load().find((e) => e[0] === eventId);
    return hit ? hit[1] : undefined;
  }

  /** Record ``eventId`` (read-merge-write); returns its first-seen time. */
  record(eventId) {
    const entries = this._load();
    const hit = entries.find((e) => e[0] === eventId);
    if (hit) return hit[1];
    const at = this.now();
    entries.push([eventId, at]);
    const kept = entries.length > this.max ? entries.slice(entries.length - this.max) : entries;
    try {
      this.storage.setItem(this.key, JSON.stringify(kept));
    } catch {
      // Storage full or disabled: the in-page guard still stops duplicates in this page.
    }
    return at;
  }

  clear() {
    this.storage.removeItem(this.key);
  }
}

/**
 * Per-user bookmarks: when this browser started following the user (events older than that
 * are history, never toasted) and the newest server timestamp seen (the `since` of recovery).
 */
export class Bookmarks {
  constructor(storage, userId, now = () => Date.now()) {
    this.storage = storage;
    this.userId = userId;
    this.now = now;
    this.startKey = `plantnotify.followingSince.${userId}`;
    this.cursorKey = `plantnotify.cursor.${userId}`;
  }

  /** Epoch ms when this browser began following the user; set on first use. */
  followingSince() {
    const raw = this.storage.getItem(this.startKey);
    const value = raw ? Number(raw) : NaN;
    if (Number.isFinite(value)) return value;
    const start = this.now();
    this.storage.setItem(this.startKey, String(start));
    return start;
  }

  /** Newest event time seen (epoch ms), or followingSince when nothing was seen yet. */
  cursor() {
    const raw = this.storage.getItem(this.cursorKey);
    const value = raw ? Number(raw) : NaN;
    return Number.isFinite(value) ? value : this.followingSince();
  }

  advance(epochMs) {
    if (Number.isFinite(epochMs) && epochMs > this.cursor()) {
      this.storage.setItem(this.cursorKey, String(epochMs));
    }
  }
}
