// The plantnotify web app: log in, upload, and watch results arrive live.

import catalogs from "virtual:locales";
import { AnalysesStore, fromApi, fromEvent } from "./analyses.js";
import { Api, itemsOf } from "./api.js";
import { setLocale, t } from "./i18n.js";
import { Poller } from "./poller.js";
import { WebPush } from "./push.js";
import { Inbox } from "./inbox.js";
import { Realtime, STATE } from "./realtime.js";
import { Bookmarks, SeenEvents } from "./seen.js";
import { AuthView } from "./ui/auth.js";
import { DetailView } from "./ui/detail.js";
import { clear, h, icon } from "./ui/dom.js";
import { cropName } from "./ui/format.js";
import { ALERT, BELL, LEAF, LOGOUT } from "./ui/icons.js";
import { AnalysisList } from "./ui/list.js";
import { Toasts } from "./ui/toasts.js";
import { UploadCard } from "./ui/upload.js";

document.documentElement.lang = setLocale(catalogs, navigator.languages || [navigator.language || "en"]);

const SESSION_KEY = "plantnotify.session";
const APP_TITLE = t("app.name");
// Recovery asks for a little more than strictly missed: clocks and commit order are not exact,
// and de-duplication on eventId makes the overlap harmless.
const RECOVERY_OVERLAP_MS = 5 * 60 * 1000;
// Renew the access token this long before it expires (at most 20 % of its life).
const RENEW_LEAD_MS = 60 * 1000;
// How often to ask /config whether realtime is on for us, unless the API says otherwise.
const DEFAULT_CHECK_SECONDS = 60;

const PAGE_LOADED_AT = Date.now();

/** The stored session (also one whose access token expired: its refresh token may renew it). */
function readSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (s && s.accessToken && s.userId) return s;
  } catch {
    /* fall through */
  }
  return null;
}

function accessValid(s) {
  return Boolean(s && (!s.expiresAt || s.expiresAt > Date.now()));
}

function loadSession() {
  const s = readSession();
  return s && (accessValid(s) || s.refreshToken) ? s : null;
}

/** The set of analyses with a result the user has not opened yet (shared by tabs). */
class Unseen {
  constructor(userId) {
    this.key = `plantnotify.unseen.${userId}`;
  }
  ids() {
    try {
      const v = JSON.parse(localStorage.getItem(this.key) || "[]");
      return Array.isArray(v) ? v : [];
    } catch {
      return [];
    }
  }
  has(id) {
    return this.ids().includes(id);
  }
  add(id) {
    const ids = this.ids();
    if (!ids.includes(id)) localStorage.setItem(this.key, JSON.stringify([...ids, id].slice(-200)));
  }
  remove(id) {
    localStorage.setItem(this.key, JSON.stringify(this.ids().filter((x) => x !== id)));
  }
  get size() {
    return this.ids().length;
  }
}

class App {
  constructor(root) {
    this.root = root;
    this.session = null;
    this.api = new Api({
      getToken: () => this.session?.accessToken ?? null,
      renew: (failedToken) => this._renew(failedToken),
      onSessionEnded: () => this._sessionEnded(t("session.ended")),
    });
    this.toastRoot = h("div", { class: "toasts", "aria-live": "polite", "aria-relevant": "additions" });
    this.toasts = new Toasts(this.toastRoot);
    document.body.append(this.toastRoot);
    window.addEventListener("storage", (e) => this._onStorage(e));
    window.addEventListener("hashchange", () => this._route());
    document.addEventListener("visibilitychange", () => this._updateTitle());
    // For the browser tests and for anyone curious in the console.
    window.plantnotify = { app: this };
  }

  async start() {
    const stored = readSession();
    this.session = loadSession();
    if (!this.session) {
      // A session that ran out while the page was closed says so, instead of a bare login.
      if (stored) localStorage.removeItem(SESSION_KEY);
      this._showAuth(stored ? t("session.expiredWhileAway") : undefined);
      return;
    }
    if (!accessValid(this.session)) {
      let renewed = false;
      try {
        renewed = await this._renew(this.session.accessToken);
      } catch {
        renewed = true; // the server is unreachable: keep the session, calls will retry
      }
      if (!renewed) {
        this._sessionEnded(t("session.expiredWhileAway"));
        return;
      }
    }
    this._enter();
  }

  // --- accounts ---------------------------------------------------------------------------

  async login(username, password) {
    const answer = await this.api.login(username, password);
    this._storeSession(answer, username);
    this._enter();
  }

  _storeSession(answer, username) {
    const expiresIn = Number(answer.expiresIn) || 3600;
    this.session = {
      accessToken: answer.accessToken,
      refreshToken: answer.refreshToken || null,
      userId: String(answer.userId ?? this.session?.userId),
      username: username ?? this.session?.username,
      expiresAt: Date.now() + expiresIn * 1000,
      lifetimeMs: expiresIn * 1000,
    };
    localStorage.setItem(SESSION_KEY, JSON.stringify(this.session));
    this._scheduleRenewal();
  }

  /**
   * Renew the session after ``failedToken`` was refused (or is about to expire). One renewal
   * at a time in this tab, and across tabs (a Web Lock): a refresh token is spent by its use,
   * so a tab that finds a newer session in storage adopts it instead of refreshing again.
   * Resolves true when a usable access token is in place, false when the session has ended;
   * rejects when the server could not be reached (the session is kept).
   */
  _renew(failedToken) {
    if (!this.session) return Promise.resolve(false);
    if (!this._renewing) {
      const run = () => this._renewOnce(failedToken);
      const locked = navigator.locks ? navigator.locks.request("plantnotify.session", run) : run();
      this._renewing = locked.finally(() => {
        this._renewing = null;
      });
    }
    return this._renewing;
  }

  async _renewOnce(failedToken) {
    const mine = this.session;
    if (!mine) return false;
    const stored = readSession();
    if (stored && stored.userId === mine.userId && stored.accessToken !== failedToken && stored.expiresAt > Date.now() + 5000) {
      this.session = stored; // another tab renewed it
      this._scheduleRenewal();
      return true;
    }
    const refreshToken = stored && stored.userId === mine.userId ? stored.refreshToken : mine.refreshToken;
    if (!refreshToken) return false;
    let answer;
    try {
      answer = await this.api.refresh(refreshToken);
    } catch (error) {
      if (error.status === 0 || error.status === 429 || error.status >= 500) throw error;
      return false; // refused: revoked, expired or already spent
    }
    if (this.session?.userId !== mine.userId) return false;
    this._storeSession(answer);
    if (window.plantnotify) window.plantnotify.renewals = (window.plantnotify.renewals || 0) + 1;
    return true;
  }

  /** Renew quietly before the access token expires, so no call ever meets a 401. */
  _scheduleRenewal() {
    clearTimeout(this._renewTimer);
    const s = this.session;
    if (!s || !s.refreshToken || !s.expiresAt) return;
    const lifetime = s.lifetimeMs || s.expiresAt - Date.now();
    const lead = Math.min(RENEW_LEAD_MS, lifetime * 0.2);
    this._renewTimer = setTimeout(() => {
      this._renew(s.accessToken).then(
        (ok) => {
          if (!ok && this.session === s) this._sessionEnded(t("session.ended"));
        },
        () => setTimeout(() => this._scheduleRenewal(), 5000), // server unreachable: retry soon
      );
    }, Math.max(1000, s.expiresAt - lead - Date.now()));
  }

  /** The session really ended (renewal refused): say so on the login page. */
  _sessionEnded(message) {
    if (!this.session && this._ended) return;
    this._ended = true;
    this.logout(message);
  }

  async register(username, password) {
    await this.api.register(username, password);
    await this.login(username, password);
  }

  logout(message) {
    const wasIn = Boolean(this.session);
    const session = this.session;
    if (wasIn && !message) {
      // The next person on this browser must not get this user's pushes, and the refresh
      // token is revoked on the server (best effort: this browser forgets it either way).
      const device = this.push?.token;
      (device ? this.api.unregisterDevice(device).catch(() => {}) : Promise.resolve()).finally(() => {
        if (session.refreshToken) this.api.logout(session.refreshToken).catch(() => {});
      });
      this.push?.forget();
    }
    clearTimeout(this._renewTimer);
    this._leave();
    this.session = null;
    localStorage.removeItem(SESSION_KEY);
    if (wasIn || message) this._showAuth(message || t("session.loggedOut"));
  }

  _onStorage(e) {
    if (e.key !== SESSION_KEY && e.key !== null) {
      if (this.session && e.key === `plantnotify.unseen.${this.session.userId}`) {
        this._updateTitle();
        this.list?.refreshUnseen();
      }
      return;
    }
    // Logged in or out in another tab: follow it.
    const next = loadSession();
    if (!next && this.session) {
      this._leave();
      this.session = null;
      this._showAuth(t("session.loggedOutElsewhere"));
    } else if (next && (!this.session || next.userId !== this.session.userId)) {
      this._leave();
      this.session = next;
      this._enter();
    } else if (next) {
      this.session = next; // renewed in another tab
      this._scheduleRenewal();
    }
  }

  // --- screens ----------------------------------------------------------------------------

  _showAuth(message) {
    document.title = APP_TITLE;
    const view = new AuthView({
      login: (u, p) => this.login(u, p),
      register: (u, p) => this.register(u, p),
    });
    clear(this.root).append(view.el);
    if (message) view.notice(message);
    view.focus();
  }

  _enter() {
    this._ended = false;
    this._scheduleRenewal();
    const { userId } = this.session;
    this.pagedOlder = false;
    this.store = new AnalysesStore();
    this.seen = new SeenEvents(localStorage, userId);
    this.bookmarks = new Bookmarks(localStorage, userId);
    this.bookmarks.followingSince();
    this.unseen = new Unseen(userId);
    this.inbox = new Inbox({
      userId,
      seen: this.seen,
      bookmarks: this.bookmarks,
      pageLoadedAt: PAGE_LOADED_AT,
      onEvent: (event, source) => this._applyEvent(event, source),
      onToast: (event) => this._notify(event),
      // A live event's receipt says when this tab got it (completion → device latency).
      sendReceipt: (eventId, source) =>
        this.realtime.sendReceipt(eventId, source === "live" ? Date.now() : null),
    });
    this.realtime = new Realtime({
      fetchToken: () => this._realtimeToken(),
      onMessage: (topic, payload, retained) => this._onMqttMessage(topic, payload, retained),
      onConnected: () => this._recover(),
      onFatal: (error) => this._realtimeRefused(error),
    });
    this.poller = new Poller({
      fetchSince: (since) => this.api.notificationsPage(since),
      cursor: () => new Date(this.bookmarks.cursor() - RECOVERY_OVERLAP_MS).toISOString(),
      onItem: (item) => this.inbox.handle(item, "polled"),
    });
    this.push = new WebPush({ api: this.api });
    window.plantnotify.inbox = this.inbox;
    window.plantnotify.realtime = this.realtime;
    window.plantnotify.poller = this.poller;

    this._buildShell();
    this.realtime.addEventListener("state", (e) => this._renderConnection(e.detail));
    this.poller.addEventListener("state", (e) => this._renderConnection(e.detail));
    this._renderConnection({ state: STATE.RECONNECTING, detail: t("conn.connectingDetail") });
    this._loadList();
    this.mode = null;
    this._checkMode(true);
    this._route();
    this._updateTitle();
  }

  _leave() {
    clearTimeout(this._modeTimer);
    this.realtime?.stop();
    this.poller?.stop();
    this.store?.clear();
    this.toasts.clear();
    this.realtime = null;
    this.poller = null;
  }

  // --- realtime or polling (the rollout switch, read from GET /config) ---------------------

  /** Ask the API which mode this user is in, switch if it changed, and ask again later. */
  async _checkMode(first = false) {
    clearTimeout(this._modeTimer);
    const session = this.session;
    const config = await this.api.config();
    if (this.session !== session || !this.realtime) return;
    const rt = (config && config.realtime) || { mode: "mqtt" };
    this.pollSeconds = Number(rt.pollSeconds) || 15;
    this._setMode(rt.mode === "polling" ? "polling" : "mqtt");
    if (first) this._setupPush(config);
    const every = Number(rt.checkSeconds) || DEFAULT_CHECK_SECONDS;
    this._modeTimer = setTimeout(() => this._checkMode(), every * 1000);
  }

  _setMode(mode) {
    if (mode === this.mode) return;
    const was = this.mode;
    this.mode = mode;
    this.connection.dataset.mode = mode === "polling" ? "polling" : "realtime";
    if (mode === "polling") {
      this.realtime.stop();
      this.poller.start(this.pollSeconds);
    } else {
      this.poller.stop();
      this.realtime.start();
    }
    if (window.plantnotify) window.plantnotify.mode = mode;
    if (was) console.info(`plantnotify: updates now by ${mode}`);
  }

  /** The realtime token was refused: polling when the rollout left us out, else offline. */
  _realtimeRefused(error) {
    if (error && error.status === 409) {
      this._checkMode();
      return;
    }
  }

  _buildShell() {
    this.connection = h(
      "div",
      { class: "conn", "data-testid": "connection", "data-state": STATE.DISCONNECTED, role: "status", "aria-live": "polite" },
      h("span", { class: "conn__dot" }),
      h("span", { class: "conn__label" }, t("conn.disconnected")),
    );
    this.alertsButton = h(
      "button",
      {
        type: "button",
        class: "btn btn--ghost btn--small",
        "data-testid": "alerts",
        onclick: () => this._askNotificationPermission(),
        title: t("alerts.title"),
        "aria-label": t("alerts.label"),
      },
      icon(BELL),
      h("span", { class: "hide-narrow" }, t("alerts.label")),
    );
    this._syncAlertsButton();
    const header = h(
      "header",
      { class: "topbar" },
      h("a", { class: "brand", href: "#/", "aria-label": t("app.name") }, icon(LEAF, "brand__mark"), h("span", { class: "brand__text" }, t("app.name"))),
      h("div", { class: "topbar__spacer" }),
      this.connection,
      this.alertsButton,
      h(
        "div",
        { class: "user" },
        h("span", { class: "user__avatar", "aria-hidden": "true" }, (this.session.username || "?").slice(0, 1).toUpperCase()),
        h("span", { class: "user__name hide-narrow" }, this.session.username || t("user.signedIn")),
        h("button", { type: "button", class: "icon-btn", title: t("user.logout"), "aria-label": t("user.logout"), "data-testid": "logout", onclick: () => this.logout() }, icon(LOGOUT)),
      ),
    );

    this.upload = new UploadCard({
      upload: (file, crop, onProgress) => this.api.upload(file, crop, onProgress),
      onUploaded: (answer, cropType) => this._onUploaded(answer, cropType),
    });
    this.list = new AnalysisList({
      store: this.store,
      imageUrl: (id) => this.api.imageUrl(id),
      onOpen: (id) => (location.hash = `#/analyses/${encodeURIComponent(id)}`),
      isUnseen: (id) => this.unseen.has(id),
    });
    this.listNotice = h("div", { class: "list-notice" });
    this.listCard = h(
      "section",
      { class: "card list-card", "aria-labelledby": "list-title" },
      h("div", { class: "card__head" }, h("h2", { id: "list-title" }, t("list.title")), h("span", { class: "muted small" }, t("list.subtitle"))),
      this.listNotice,
      this.list.el,
      (this.olderButton = h("button", { type: "button", class: "btn btn--secondary btn--small older", hidden: true, onclick: () => this._loadOlder() }, t("list.older"))),
    );
    this.detail = new DetailView({
      onBack: () => (location.hash = "#/"),
      image: (id) => this.list.image(id),
    });
    this.mainColumn = h("div", { class: "layout__main" }, this.listCard);
    this.liveBanner = h(
      "div",
      { class: "live-banner", hidden: true, role: "status" },
      h("div", {}, icon(ALERT), h("span", { class: "live-banner__text" })),
    );
    clear(this.root).append(
      header,
      this.liveBanner,
      h("main", { class: "layout" }, h("div", { class: "layout__side" }, this.upload.el), this.mainColumn),
      this._footer(),
    );
  }

  _footer() {
    // Development only (the API names an FCM emulator only when ENVIRONMENT=development).
    this.pushLink = h("a", { href: "#", target: "_blank", rel: "noopener", "data-testid": "push-emulator-link" }, "FCM emulator");
    this.devNote = h("p", { hidden: true, class: "dev-note", "data-testid": "dev-note" }, "Development: pushes go to the local ", this.pushLink, ".");
    return h("footer", { class: "footer muted small" }, h("p", {}, t("footer.text")), this.devNote);
  }

  /** Web push for closed tabs: a service worker, and this browser's token as a device. */
  async _setupPush(config) {
    const url = config && config.pushEmulatorUrl;
    if (url) {
      this.pushLink.href = url;
      this.devNote.hidden = false;
    }
    const session = this.session;
    await this.push.setup(config);
    if (this.session !== session) return;
    if (window.plantnotify) window.plantnotify.pushToken = this.push.token;
  }

  _route() {
    if (!this.session || !this.detail) return;
    const match = /^#\/analyses\/([^/]+)$/.exec(location.hash);
    if (match) this._openDetail(decodeURIComponent(match[1]));
    else {
      this.detail.id = null;
      this.mainColumn.replaceChildren(this.listCard);
    }
  }

  async _openDetail(id) {
    this.detail.show(id);
    this.mainColumn.replaceChildren(this.detail.el);
    this._revealDetail();
    this._markSeen(id);
    this.toasts.dismissFor(id);
    const known = this.store.get(id);
    if (known) this.detail.render(known);
    try {
      const full = fromApi(await this.api.getAnalysis(id));
      if (full) this.store.upsert(full);
      this.detail.render(this.store.get(id));
    } catch (error) {
      if (this.detail.id === id) this.detail.showError(error.status === 404 ? t("detail.notFound") : error.message);
    }
    if (this.detail.id === id) this._revealDetail();
  }

  /** Bring the opened result to the top of the screen (on a phone it sits below the upload). */
  _revealDetail() {
    const el = this.detail.el;
    const top = el.getBoundingClientRect().top + window.scrollY - (this._topbarHeight() + 8);
    window.scrollTo({ top: Math.max(0, top), behavior: "instant" });
    el.querySelector("h2")?.focus({ preventScroll: true });
  }

  _topbarHeight() {
    const bar = document.querySelector(".topbar");
    return bar && getComputedStyle(bar).position === "sticky" ? bar.getBoundingClientRect().height : 0;
  }

  // --- data -------------------------------------------------------------------------------

  async _loadList() {
    try {
      const { items, nextBefore } = await this.api.listAnalyses({ limit: 50 });
      for (const item of items) {
        const a = fromApi(item);
        if (a) this.store.upsert(a);
      }
      if (!this.pagedOlder) this._setOlder(nextBefore);
      this.store.loaded = true;
      this.list.setLoaded();
      clear(this.listNotice);
    } catch (error) {
      if (!this.session) return;
      clear(this.listNotice).append(
        h("div", { class: "notice notice--error" }, h("span", {}, t("list.loadFailed", { reason: error.message })), h("button", { type: "button", class: "btn btn--small btn--secondary", onclick: () => this._loadList() }, t("common.tryAgain"))),
      );
    }
  }

  _setOlder(nextBefore) {
    this.nextBefore = nextBefore || null;
    this.olderButton.hidden = !this.nextBefore;
  }

  async _loadOlder() {
    if (!this.nextBefore) return;
    this.olderButton.disabled = true;
    try {
      const { items, nextBefore } = await this.api.listAnalyses({ limit: 50, before: this.nextBefore });
      this.pagedOlder = true;
      for (const item of items) {
        const a = fromApi(item);
        if (a) this.store.upsert(a);
      }
      this._setOlder(nextBefore);
    } catch (error) {
      this.toasts.showMessage("error", t("list.olderFailed"), error.message);
    } finally {
      this.olderButton.disabled = false;
    }
  }

  _onUploaded(answer, cropType) {
    const id = answer && (answer.analysisId ?? answer.id);
    if (!id) return;
    this.store.upsert({
      id,
      status: answer.status || "Processing",
      cropType: answer.cropType ?? (cropType || null),
      createdAt: answer.createdAt ?? new Date().toISOString(),
    });
  }

  async _realtimeToken() {
    try {
      return await this.api.realtimeToken();
    } catch (error) {
      // 401: the session ended (the API has said so); 403/409: realtime is off for us.
      if (error.status === 401 || error.status === 403 || error.status === 409) error.fatal = true;
      throw error;
    }
  }

  _onMqttMessage(topic, payload, retained) {
    if (!payload || payload.length === 0) return; // a cleared retained message
    if (!topic.startsWith(`users/${this.session.userId}/`)) return;
    this.inbox.handle(payload, retained ? "retained" : "live");
  }

  /** After every (re)connect: fetch what was published while we were not subscribed. */
  async _recover() {
    if (this._recovering) {
      this._recoverAgain = true;
      return;
    }
    this._recovering = true;
    try {
      do {
        this._recoverAgain = false;
        const since = new Date(this.bookmarks.cursor() - RECOVERY_OVERLAP_MS).toISOString();
        try {
          const items = itemsOf(await this.api.notificationsSince(since));
          for (const item of items) this.inbox.handle(item.payload && typeof item.payload === "object" ? item.payload : item, "recovered");
        } catch (error) {
          console.warn("plantnotify: missed-event recovery failed; retained events still apply", error);
        }
        if (this.session) await this._loadList();
      } while (this._recoverAgain && this.session);
    } finally {
      this._recovering = false;
      if (window.plantnotify) window.plantnotify.recoveries = (window.plantnotify.recoveries || 0) + 1;
    }
  }

  _applyEvent(event) {
    const before = this.store.get(event.analysisId);
    const after = this.store.upsert(fromEvent(event));
    if (!before || !before.createdAt) {
      // Announced by an event first (uploaded from another device): fetch the rest.
      this.api
        .getAnalysis(event.analysisId)
        .then((item) => {
          const a = fromApi(item);
          if (a) this.store.upsert(a);
        })
        .catch(() => {});
    }
    if (this.detail && this.detail.id === event.analysisId) this.detail.render(after);
  }

  _notify(event) {
    const viewing = this.detail?.id === event.analysisId && document.visibilityState === "visible";
    if (!viewing) this.unseen.add(event.analysisId);
    this.list.refreshUnseen();
    this._updateTitle();
    this.toasts.showEvent({ event, onView: () => (location.hash = `#/analyses/${encodeURIComponent(event.analysisId)}`) });
    this._desktopNotification(event);
  }

  _markSeen(id) {
    if (this.unseen.has(id)) {
      this.unseen.remove(id);
      this.list.refreshUnseen();
      this._updateTitle();
    }
  }

  _updateTitle() {
    if (!this.session || !this.unseen) {
      document.title = APP_TITLE;
      return;
    }
    const n = this.unseen.size;
    document.title = n > 0 ? `(${n}) ${APP_TITLE}` : APP_TITLE;
  }

  _renderConnection({ state, detail, source }) {
    if (!this.connection) return;
    const polling = this.mode === "polling";
    // Only the active channel speaks (a stopped one reports "disconnected" on its way out).
    if (source && (source === "poller") !== polling) return;
    // A banner only when the interruption lasts: a token renewal takes milliseconds.
    clearTimeout(this._bannerTimer);
    if (state === STATE.CONNECTED) this.liveBanner.hidden = true;
    else {
      const text = state === STATE.DISCONNECTED ? t("conn.offBanner") : t("conn.interruptedBanner");
      this._bannerTimer = setTimeout(() => {
        this.liveBanner.querySelector(".live-banner__text").textContent = text;
        this.liveBanner.hidden = false;
      }, 2000);
    }
    this.connection.dataset.state = state;
    this.connection.className = `conn conn--${state}${polling ? " conn--polling" : ""}`;
    let label;
    if (polling) label = state === STATE.CONNECTED ? t("conn.polling") : t("conn.reconnecting");
    else if (state === STATE.RECONNECTING && !this.realtime?.stats.connects) label = t("conn.connecting");
    else label = t(`conn.${state}`);
    this.connection.querySelector(".conn__label").textContent = label;
    if (detail) console.info(`plantnotify: ${detail}`);
    this.connection.title = polling ? t("conn.pollingTitle", { seconds: this.pollSeconds }) : t(`conn.${state}Title`);
  }

  // --- desktop notifications (asked on a click only, never on load) ------------------------

  _syncAlertsButton() {
    const supported = "Notification" in window;
    this.alertsButton.hidden = !supported || Notification.permission !== "default";
  }

  async _askNotificationPermission() {
    if (!("Notification" in window)) return;
    try {
      const result = await Notification.requestPermission();
      if (result === "denied") this.toasts.showMessage("info", t("alerts.offTitle"), t("alerts.offText"));
      if (result === "granted") this.push.register();
    } finally {
      this._syncAlertsButton();
    }
  }

  _desktopNotification(event) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    if (document.visibilityState !== "hidden") return;
    const ok = event.event === "AnalysisCompleted";
    const body = ok
      ? [typeof event.overallHealthScore === "number" ? t("toast.health", { score: event.overallHealthScore }) : "", event.primaryConcern || ""].filter(Boolean).join(" · ")
      : t("failed.title");
    try {
      const note = new Notification(ok ? t("toast.ready", { crop: cropName(event.cropType) }) : t("toast.failed"), {
        body,
        tag: event.eventId, // several tabs showing the same event make one notification
        icon: "favicon.svg",
        lang: document.documentElement.lang,
      });
      note.onclick = () => {
        window.focus();
        location.hash = `#/analyses/${encodeURIComponent(event.analysisId)}`;
        note.close();
      };
    } catch {
      // Some browsers only allow notifications from a service worker; the toast is enough.
    }
  }
}

new App(document.getElementById("app")).start();
