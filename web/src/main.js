// The plantnotify web app: log in, upload, and watch results arrive live.

import { AnalysesStore, fromApi, fromEvent } from "./analyses.js";
import { Api, itemsOf } from "./api.js";
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

const SESSION_KEY = "plantnotify.session";
const APP_TITLE = "Plantnotify";
// Recovery asks for a little more than strictly missed: clocks and commit order are not exact,
// and de-duplication on eventId makes the overlap harmless.
const RECOVERY_OVERLAP_MS = 5 * 60 * 1000;
const CONNECTION_LABEL = {
  [STATE.CONNECTED]: "Live",
  [STATE.RECONNECTING]: "Reconnecting…",
  [STATE.DISCONNECTED]: "Offline",
};

const PAGE_LOADED_AT = Date.now();

function loadSession() {
  try {
    const s = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (s && s.accessToken && s.userId && (!s.expiresAt || s.expiresAt > Date.now())) return s;
  } catch {
    /* fall through */
  }
  return null;
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
    this.api = new Api(
      () => this.session?.accessToken ?? null,
      () => this.logout("Your session has ended. Log in again to keep getting updates."),
    );
    this.toastRoot = h("div", { class: "toasts", "aria-live": "polite", "aria-relevant": "additions" });
    this.toasts = new Toasts(this.toastRoot);
    document.body.append(this.toastRoot);
    window.addEventListener("storage", (e) => this._onStorage(e));
    window.addEventListener("hashchange", () => this._route());
    document.addEventListener("visibilitychange", () => this._updateTitle());
    // For the browser tests and for anyone curious in the console.
    window.plantnotify = { app: this };
  }

  start() {
    this.session = loadSession();
    if (this.session) this._enter();
    else this._showAuth();
  }

  // --- accounts ---------------------------------------------------------------------------

  async login(username, password) {
    const answer = await this.api.login(username, password);
    const expiresIn = Number(answer.expiresIn) || 3600;
    this.session = {
      accessToken: answer.accessToken,
      userId: String(answer.userId),
      username,
      expiresAt: Date.now() + expiresIn * 1000,
    };
    localStorage.setItem(SESSION_KEY, JSON.stringify(this.session));
    this._enter();
  }

  async register(username, password) {
    await this.api.register(username, password);
    await this.login(username, password);
  }

  logout(message) {
    const wasIn = Boolean(this.session);
    if (wasIn && !message && this.pushToken) {
      // The next person on this browser must not get this user's pushes.
      this.api.unregisterDevice(this.pushToken).catch(() => {});
    }
    this._leave();
    this.session = null;
    localStorage.removeItem(SESSION_KEY);
    if (wasIn || message) this._showAuth(message);
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
      this._showAuth("You logged out in another tab.");
    } else if (next && (!this.session || next.userId !== this.session.userId)) {
      this._leave();
      this.session = next;
      this._enter();
    } else if (next) {
      this.session = next; // refreshed token
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
      sendReceipt: (eventId) => this.realtime.sendReceipt(eventId),
    });
    this.realtime = new Realtime({
      fetchToken: () => this._realtimeToken(),
      onMessage: (topic, payload, retained) => this._onMqttMessage(topic, payload, retained),
      onConnected: () => this._recover(),
      onFatal: () => {},
    });
    window.plantnotify.inbox = this.inbox;
    window.plantnotify.realtime = this.realtime;

    this._buildShell();
    this.realtime.addEventListener("state", (e) => this._renderConnection(e.detail));
    this._renderConnection({ state: STATE.RECONNECTING, detail: "Connecting to live updates…" });
    this._loadList();
    this.realtime.start();
    this._route();
    this._updateTitle();
    this._setupPush();
  }

  _leave() {
    this.pushToken = null;
    this.realtime?.stop();
    this.store?.clear();
    this.toasts.clear();
    this.realtime = null;
  }

  _buildShell() {
    this.connection = h(
      "div",
      { class: "conn", "data-testid": "connection", "data-state": STATE.DISCONNECTED, role: "status", "aria-live": "polite" },
      h("span", { class: "conn__dot" }),
      h("span", { class: "conn__label" }, "Offline"),
    );
    this.alertsButton = h(
      "button",
      { type: "button", class: "btn btn--ghost btn--small", onclick: () => this._askNotificationPermission(), title: "Get a desktop notification when a result arrives while this tab is in the background" },
      icon(BELL),
      h("span", { class: "hide-narrow" }, "Desktop alerts"),
    );
    this._syncAlertsButton();
    const header = h(
      "header",
      { class: "topbar" },
      h("a", { class: "brand", href: "#/", "aria-label": "Plantnotify" }, icon(LEAF, "brand__mark"), h("span", { class: "brand__text" }, "Plantnotify")),
      h("div", { class: "topbar__spacer" }),
      this.connection,
      this.alertsButton,
      h(
        "div",
        { class: "user" },
        h("span", { class: "user__avatar", "aria-hidden": "true" }, (this.session.username || "?").slice(0, 1).toUpperCase()),
        h("span", { class: "user__name hide-narrow" }, this.session.username || "Signed in"),
        h("button", { type: "button", class: "icon-btn", title: "Log out", "aria-label": "Log out", onclick: () => this.logout() }, icon(LOGOUT)),
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
      { class: "card list-card" },
      h("div", { class: "card__head" }, h("h2", {}, "Your analyses"), h("span", { class: "muted small" }, "Updates live as results arrive")),
      this.listNotice,
      this.list.el,
      (this.olderButton = h("button", { type: "button", class: "btn btn--secondary btn--small older", hidden: true, onclick: () => this._loadOlder() }, "Show older analyses")),
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
    this.pushLink = h("a", { href: "#", target: "_blank", rel: "noopener", "data-testid": "push-emulator-link" }, "open the FCM emulator");
    this.pushNote = h("span", { hidden: true }, " In this local setup, pushes go to a local FCM emulator: ", this.pushLink, ".");
    return h(
      "footer",
      { class: "footer muted small" },
      "Results arrive here live while this page is open. When it is closed, we send a push notification instead.",
      this.pushNote,
    );
  }

  /**
   * Register this browser for pushes when the API says where they go (the local stack's FCM
   * emulator). A production web app registers its Firebase Messaging token here instead.
   */
  async _setupPush() {
    const session = this.session;
    const config = await this.api.config();
    const url = config && config.pushEmulatorUrl;
    if (!url || this.session !== session) return;
    this.pushLink.href = url;
    this.pushNote.hidden = false;
    let token = localStorage.getItem("plantnotify.pushToken");
    if (!token) {
      const bytes = new Uint8Array(12);
      crypto.getRandomValues(bytes);
      token = `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
      localStorage.setItem("plantnotify.pushToken", token);
    }
    try {
      await this.api.registerDevice(token, "web");
      if (this.session === session) this.pushToken = token;
    } catch (error) {
      console.warn("plantnotify: could not register this browser for pushes", error);
    }
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
    window.scrollTo({ top: 0 });
    this._markSeen(id);
    const known = this.store.get(id);
    if (known) this.detail.render(known);
    try {
      const full = fromApi(await this.api.getAnalysis(id));
      if (full) this.store.upsert(full);
      this.detail.render(this.store.get(id));
    } catch (error) {
      if (this.detail.id === id) this.detail.showError(error.status === 404 ? "We couldn't find this analysis. It may belong to another account." : error.message);
    }
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
        h("div", { class: "notice notice--error" }, h("span", {}, `We couldn't load your analyses: ${error.message}`), h("button", { type: "button", class: "btn btn--small btn--secondary", onclick: () => this._loadList() }, "Try again")),
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
      this.toasts.showMessage("error", "Couldn't load older analyses", error.message);
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
      if (error.status === 401 || error.status === 403) error.fatal = true;
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

  _renderConnection({ state, detail }) {
    if (!this.connection) return;
    // A banner only when the interruption lasts: a token renewal takes milliseconds.
    clearTimeout(this._bannerTimer);
    if (state === STATE.CONNECTED) this.liveBanner.hidden = true;
    else {
      const text =
        state === STATE.DISCONNECTED
          ? detail || "Live updates are off. Results still appear when you reload the page."
          : "Live updates are interrupted; reconnecting. Nothing is lost: results that arrive meanwhile appear when we're back.";
      this._bannerTimer = setTimeout(() => {
        this.liveBanner.querySelector(".live-banner__text").textContent = text;
        this.liveBanner.hidden = false;
      }, 2000);
    }
    this.connection.dataset.state = state;
    this.connection.className = `conn conn--${state}`;
    this.connection.querySelector(".conn__label").textContent =
      state === STATE.RECONNECTING && !this.realtime?.stats.connects ? "Connecting…" : CONNECTION_LABEL[state];
    this.connection.title =
      detail ||
      (state === STATE.CONNECTED
        ? "Live: results appear here the moment they're ready."
        : state === STATE.RECONNECTING
          ? "Reconnecting to live updates. Nothing is lost: missed results are fetched when we're back."
          : "Not receiving live updates.");
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
      if (result === "denied") this.toasts.showMessage("info", "Desktop alerts are off", "You can turn them on later in your browser's site settings.");
    } finally {
      this._syncAlertsButton();
    }
  }

  _desktopNotification(event) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    if (document.visibilityState !== "hidden") return;
    const ok = event.event === "AnalysisCompleted";
    const body = ok
      ? [typeof event.overallHealthScore === "number" ? `Health ${event.overallHealthScore}/100` : "", event.primaryConcern || ""].filter(Boolean).join(" · ")
      : event.errorMessage || "The analysis could not be completed.";
    try {
      const note = new Notification(ok ? `${cropName(event.cropType)} analysis is ready` : "Analysis failed", {
        body,
        tag: event.eventId, // several tabs showing the same event make one notification
        icon: "favicon.svg",
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
