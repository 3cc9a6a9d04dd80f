// Updates without MQTT: GET /notifications?since= every few seconds. Used when the rollout
// switch leaves this user out of realtime (or turns it off for everyone): same events, same
// inbox (de-duplicated on eventId), only later. Emits the same "state" events as Realtime.

import { STATE } from "./states.js";

export class Poller extends EventTarget {
  /**
   * @param {object} o
   * @param {(since: string) => Promise<{items: object[], nextSince: string|null, more: boolean}>} o.fetchSince
   * @param {() => string} o.cursor         where to start (ISO time) when we have no position
   * @param {(item: object) => void} o.onItem
   */
  constructor({ fetchSince, cursor, onItem }) {
    super();
    Object.assign(this, { fetchSince, cursor, onItem });
    this.stopped = true;
    this.since = null;
    this.stats = { polls: 0, items: 0, failures: 0 };
  }

  start(everySeconds = 15) {
    this.everyMs = Math.max(1, everySeconds) * 1000;
    if (!this.stopped) return;
    this.stopped = false;
    this.since = null;
    this._emit(STATE.RECONNECTING);
    this._tick();
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    this._emit(STATE.DISCONNECTED);
  }

  async _tick() {
    if (this.stopped) return;
    try {
      let more = true;
      for (let pages = 0; more && pages < 10 && !this.stopped; pages++) {
        const page = await this.fetchSince(this.since || this.cursor());
        for (const item of page.items) this.onItem(item && item.payload && typeof item.payload === "object" ? item.payload : item);
        this.stats.items += page.items.length;
        if (page.nextSince) this.since = page.nextSince;
        more = page.more;
      }
      this.stats.polls += 1;
      if (!this.stopped) this._emit(STATE.CONNECTED);
    } catch {
      this.stats.failures += 1;
      if (!this.stopped) this._emit(STATE.RECONNECTING);
    }
    if (!this.stopped) this.timer = setTimeout(() => this._tick(), this.everyMs);
  }

  _emit(state) {
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail: "", source: "poller" } }));
  }
}
