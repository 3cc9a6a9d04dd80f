// The MQTT-over-WebSocket connection of one page (contract §2).
//
// One explicit loop owns the connection: get credentials (a fresh realtime token when the one
// we hold is close to expiry or was refused) → connect → subscribe → wait until the connection
// closes → back off → repeat. mqtt.js's own reconnect is off, so exactly one place decides when
// and with which password to reconnect.
//
// Token renewal is make-before-break: before the token expires a second connection is opened
// with a fresh token (another client id), subscribed, and only then is the old one closed, so
// there is no moment without a subscription. Messages that arrive on both during the overlap
// are the same events; the inbox de-duplicates them on eventId.

import mqtt from "mqtt";

import { STATE } from "./states.js";

export { STATE };

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
    this.pendingReceipts = new Map(); // eventId -> receivedAt, until the broker acknowledges
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
    this.client = null;
    this._wakeUp();
    this._setState(STATE.DISCONNECTED, "");
  }

  /**
   * Send ``{"eventId"}`` QoS 1 to the receipts topic; kept until acknowledged. With
   * ``receivedAt`` (ms since the epoch: when the event arrived live) the receipt also says how
   * and where it arrived, for the delivery timeline and the completion → device latency.
   */
  sendReceipt(eventId, receivedAt = null) {
    if (!this.pendingReceipts.has(eventId)) this.pendingReceipts.set(eventId, receivedAt);
    this._flushReceipts();
  }

  get clientId() {
    return this.grant ? `${this.grant.clientIdPrefix}web-${this.suffix}` : null;
  }

  _setState(state, detail) {
    if (state === this.state && detail === this.detail) return;
    this.state = state;
    this.detail = detail;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, detail, source: "realtime" } }));
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
    let conn = null; // a connected, subscribed connection handed over by a renewal
    const gen = (this._gen = (this._gen || 0) + 1); // a restart (stop, start) ends this loop
    const over = () => this.stopped || gen !== this._gen;
    while (!over()) {
      if (!conn && !navigator.onLine) {
        this._setState(STATE.DISCONNECTED, "You are offline. We'll reconnect when the network is back.");
        await this._sleep(30000);
        continue;
      }
      let outcome;
      try {
        if (!conn) {
          const grant = await this._credentials(refused);
          if (over()) break;
          this.stats.attempts += 1;
          conn = await this._connect(grant);
          if (over()) {
            conn.client.end(true);
            break;
          }
        }
        const handedOver = conn.handover;
        this._adopt(conn);
        if (!handedOver) this.onConnected(); // a handover had no gap: nothing to recover
        outcome = await conn.closed;
        conn = null;
      } catch (error) {
        conn = null;
        if (error && error.fatal) {
          if (over()) break;
          this.stopped = true;
          this._setState(STATE.DISCONNECTED, error.message);
          this.onFatal(error);
          return;
        }
        outcome = error && "connected" in error ? error : { connected: false, refused: false, error };
      }
      if (over()) break;
      refused = outcome.refused;
      if (outcome.next) {
        failures = 0; // planned: the new connection is already subscribed
        conn = outcome.next;
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

  /**
   * Connect and subscribe with ``grant``. Resolves, once subscribed, with
   * ``{client, grant, closed}`` (``closed`` resolves with how the connection ended); rejects
   * with such an outcome when it never got that far.
   */
  _connect(grant, suffix = this.suffix) {
    return new Promise((resolve, reject) => {
      const url = reachableWsUrl(grant.mqtt.wsUrl, window.location);
      const client = mqtt.connect(url, {
        clientId: `${grant.clientIdPrefix}web-${suffix}`,
        username: grant.username,
        password: grant.token,
        protocolVersion: grant.mqtt.protocolVersion === 4 ? 4 : 5, // 3.1.1 on the NATS engine
        clean: true, // a tab has no offline queue: it recovers through /notifications
        reconnectPeriod: 0, // our loop reconnects, with fresh credentials
        connectTimeout: 10000,
        keepalive: 30,
        resubscribe: false,
      });
      const conn = { client, grant, suffix, next: null, handover: false, subscribed: false };
      let refused = false;
      let lastError = null;
      let finish;
      conn.closed = new Promise((r) => (finish = r));

      client.on("connect", () => {
        client.subscribe(grant.topics.analyses, { qos: 1 }, (err, granted) => {
          if (err || !granted || granted.some((g) => g.qos >= 0x80)) {
            lastError = new Error("The server refused our subscription.");
            client.end(true);
            return;
          }
          conn.subscribed = true;
          this.stats.connects += 1;
          resolve(conn);
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
        client.removeAllListeners("close");
        client.end(true);
        if (this.client === client) {
          this.client = null;
          clearTimeout(this._renewTimer);
        }
        const outcome = { connected: conn.subscribed, refused, next: conn.next, error: conn.next ? null : lastError };
        if (!conn.subscribed) reject(outcome);
        finish(outcome);
      });
    });
  }

  /** Make ``conn`` the page's connection. */
  _adopt(conn) {
    this.client = conn.client;
    this.grant = conn.grant;
    this.suffix = conn.suffix;
    this._setState(STATE.CONNECTED, "");
    this._scheduleRenewal(conn);
    this._flushReceipts();
  }

  _scheduleRenewal(conn) {
    clearTimeout(this._renewTimer);
    const { grant } = conn;
    const ttl = grant.expiresIn * 1000;
    const due = grant.receivedAt + ttl - refreshLead(ttl) - Date.now();
    this._renewTimer = setTimeout(async () => {
      try {
        const fresh = await this._credentials(true);
        if (this.stopped || this.client !== conn.client) return;
        const next = await this._connect(fresh, pageSuffix()); // subscribed before we let go
        if (this.stopped || this.client !== conn.client) {
          next.client.end(true);
          return;
        }
        next.handover = true;
        conn.next = next;
        this.stats.tokenRenewals += 1;
        conn.client.end(false); // DISCONNECT politely; the loop adopts ``next`` at once
      } catch {
        // Could not renew now (API or broker down): the broker drops us at expiry and the
        // loop reconnects with back-off; try again a little later meanwhile.
        if (!this.stopped && this.client === conn.client) setTimeout(() => this._scheduleRenewal(conn), 5000);
      }
    }, Math.max(0, due));
  }

  _flushReceipts() {
    const client = this.client;
    if (!client || !client.connected || !this.grant) return;
    for (const [eventId, receivedAt] of this.pendingReceipts) {
      if (this.inflightReceipts.has(eventId)) continue;
      this.inflightReceipts.add(eventId);
      const receipt =
        receivedAt === null
          ? { eventId, clientId: this.clientId }
          : { eventId, receivedAt, transport: "ws", clientId: this.clientId };
      client.publish(
        this.grant.topics.receipts,
        JSON.stringify(receipt),
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
