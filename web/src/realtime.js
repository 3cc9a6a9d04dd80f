// The MQTT-over-WebSocket connection of one page (contract §2).
//
// One explicit loop owns the connection: get credentials (a fresh realtime token when the one
// we hold is close to expiry or was refused) → connect → subscribe → wait until the connection
// closes → back off → repeat. mqtt.js's own reconnect is off, so exactly one place decides when
// and with which password to reconnect. The token is renewed before it expires by closing the
// connection on purpose; the loop then reconnects at once with the new password, and the
// app's "connected" handler recovers whatever was published in the gap.

import mqtt from "mqtt";

export const STATE = Object.freeze({
  CONNECTED: "connected",
  RECONNECTING: "reconnecting",
  DISCONNECTED: "disconnected",
});

const AUTH_REFUSED = new Set([4, 5, 0x86, 0x87]); // 3.1.1 and 5.0 "bad credentials / not authorized"

/** Delay before attempt ``n`` (1-based): 0.5 s doubling to ``max``, with ±25 % jitter. */
export function backoffDelay(n, { base = 500, max = 15000, random = Math.random } = {}) {
  const raw = Math.min(max, base * 2 ** Math.max(0, n - 1));
  return Math.round(raw * (0.75 + random() * 0.5));
}

/** When to renew a token of ``ttlMs``: 20 % of its life before expiry, at most 2 min, ≥ 2 s. */
export function refreshLead(ttlMs) {
  return Math.max(2000, Math.min(120000, ttlMs * 0.2));
}

/** Random client-id suffix for this page: unique per tab and per load. */
export function pageSuffix() {
  const bytes = new Uint8Array(5);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A WebSocket URL the browser can reach: when the API names a loopback host but the page was
 * opened through another host name (a phone on the LAN, a tunnel), use the page's host.
 */
export function reachableWsUrl(wsUrl, pageLocation) {
  try {
    const url = new URL(wsUrl, pageLocation.href);
    const loopback = ["127.0.0.1", "localhost", "[::1]", "::1"];
    if (loopback.includes(url.hostname) && !loopback.includes(pageLocation.hostname)) {
      url.hostname = pageLocation.hostname;
    }
    return url.toString();
  } catch {
    return wsUrl;
  }
}

export class Realtime extends EventTarget {
  /**
   * @param {object} o
   * @param {() => Promise<object>} o.fetchToken   POST /realtime/token
   * @param {(topic: string, payload: Uint8Array, retained: boolean) => void} o.onMessage
   * @param {() => void} o.onConnected              after every successful (re)subscribe
   * @param {(error: Error) => void} o.onFatal       credentials can no longer be had
   */
  constructor({ fetchToken, onMessage, onConnected, onFatal }) {
    super();
    Object.assign(this, { fetchToken, onMessage, onConnected, onFatal });
    this.state = STATE.DISCONNECTED;
    this.detail = "";
    this.suffix = pageSuffix();
    this.grant = null; // the realtime token answer, plus receivedAt
    this.client = null;
    this.stopped = true;
    this.pendingReceipts = new Set(); // not yet acknowledged by the broker
    this.inflightReceipts = new Set(); // published on the current connection, PUBACK awaited
    this.stats = { connects: 0, tokenFetches: 0, tokenRenewals: 0, attempts: 0 };
    this._wake = null;
    this._onOnline = () => this._wakeUp();
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener("online", this._onOnline);
    this._loop();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this._onOnline);
    clearTimeout(this._renewTimer);
    if (this.client) this.client.end(true);
    this._wakeUp();
    this._setState(STATE.DISCONNECTED, "");
  }

  /** Send ``{"eventId"}`` QoS 1 to the receipts topic; kept until acknowledged. */
  sendReceipt(eventId) {
    this.pendingReceipts.add(eventId);
    this._flushReceipts();
  }

  get clientId() {
    return this.grant ? `${this.grant.clientIdPrefix}web-${this.suffix}` : null;
  }

  _setState(state, detail) {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail } }));
  }

  _tokenUsable() {
    if (!this.grant) return false;
    const ttl = this.grant.expiresIn * 1000;
    return Date.now() < this.grant.receivedAt + ttl - refreshLead(ttl);
  }

  async _credentials(forceNew) {
    if (!forceNew && this._tokenUsable()) return this.grant;
    const answer = await this.fetchToken();
    this.stats.tokenFetches += 1;
    this.grant = { ...answer, receivedAt: Date.now() };
    return this.grant;
  }

  async _loop() {
    let failures = 0;
    let refused = false;
    while (!this.stopped) {
      if (!navigator.onLine) {
        this._setState(STATE.DISCONNECTED, "You are offline. We'll reconnect when the network is back.");
        await this._sleep(30000);
        continue;
      }
      let outcome;
      try {
        const grant = await this._credentials(refused);
        if (this.stopped) break;
        this.stats.attempts += 1;
        outcome = await this._runConnection(grant);
      } catch (error) {
        if (error && error.fatal) {
          this.stopped = true;
          this._setState(STATE.DISCONNECTED, error.message);
          this.onFatal(error);
          return;
        }
        outcome = { connected: false, refused: false, error };
      }
      if (this.stopped) break;
      refused = outcome.refused;
      if (outcome.renew) {
        failures = 0; // planned: reconnect at once with the new token
        continue;
      }
      failures = outcome.connected ? 1 : failures + 1;
      const wait = backoffDelay(failures);
      this._setState(
        STATE.RECONNECTING,
        outcome.error ? `${describe(outcome.error)} Retrying in ${Math.ceil(wait / 1000)} s.` : "",
      );
      await this._sleep(wait);
    }
  }

  /** One connection, from CONNECT to close. Resolves with how it ended. */
  _runConnection(grant) {
    return new Promise((resolve) => {
      const url = reachableWsUrl(grant.mqtt.wsUrl, window.location);
      const client = mqtt.connect(url, {
        clientId: this.clientId,
        username: grant.username,
        password: grant.token,
        protocolVersion: grant.mqtt.protocolVersion === 4 ? 4 : 5, // 3.1.1 on the NATS engine
        clean: true, // a tab has no offline queue: it recovers through /notifications
        reconnectPeriod: 0, // our loop reconnects, with fresh credentials
        connectTimeout: 10000,
        keepalive: 30,
        resubscribe: false,
      });
      this.client = client;
      let connected = false;
      let refused = false;
      let renew = false;
      let lastError = null;

      client.on("connect", () => {
        client.subscribe(grant.topics.analyses, { qos: 1 }, (err, granted) => {
          if (err || !granted || granted.some((g) => g.qos >= 0x80)) {
            lastError = new Error("The server refused our subscription.");
            client.end(true);
            return;
          }
          connected = true;
          this.stats.connects += 1;
          this._setState(STATE.CONNECTED, "");
          this._scheduleRenewal(grant, client, () => {
            renew = true;
          });
          this._flushReceipts();
          this.onConnected();
        });
      });
      client.on("message", (topic, payload, packet) => {
        this.onMessage(topic, payload, Boolean(packet.retain));
      });
      client.on("error", (error) => {
        lastError = error;
        if (AUTH_REFUSED.has(error.code)) refused = true;
      });
      client.on("close", () => {
        clearTimeout(this._renewTimer);
        client.removeAllListeners("close");
        client.end(true);
        if (this.client === client) this.client = null;
        resolve({ connected, refused, renew, error: renew ? null : lastError });
      });
    });
  }

  _scheduleRenewal(grant, client, markRenew) {
    clearTimeout(this._renewTimer);
    const ttl = grant.expiresIn * 1000;
    const due = grant.receivedAt + ttl - refreshLead(ttl) - Date.now();
    this._renewTimer = setTimeout(async () => {
      try {
        await this._credentials(true); // new password first, so the gap is a single reconnect
        this.stats.tokenRenewals += 1;
        markRenew();
        client.end(false); // DISCONNECT politely; the loop reconnects with the new token
      } catch {
        // Could not renew now (API down): the broker will drop us at expiry and the loop
        // will retry with back-off; nothing else to do here.
      }
    }, Math.max(0, due));
  }

  _flushReceipts() {
    const client = this.client;
    if (!client || !client.connected || !this.grant) return;
    for (const eventId of this.pendingReceipts) {
      if (this.inflightReceipts.has(eventId)) continue;
      this.inflightReceipts.add(eventId);
      client.publish(
        this.grant.topics.receipts,
        JSON.stringify({ eventId }),
        { qos: 1, retain: false },
        (err) => {
          this.inflightReceipts.delete(eventId);
          if (!err) this.pendingReceipts.delete(eventId); // else: resent after reconnect
        },
      );
    }
  }

  _sleep(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this._wake = done;
    });
  }

  _wakeUp() {
    if (this._wake) {
      const wake = this._wake;
      this._wake = null;
      wake();
    }
  }
}

function describe(error) {
  if (!error) return "";
  if (AUTH_REFUSED.has(error.code)) return "The server did not accept our realtime token.";
  if (error.code === 0x97 || error.code === 0x9f) return "Too many open connections for this account.";
  return "Live updates are interrupted.";
}
