// Web push for closed tabs: the service worker (sw.js) shows a push and opens the analysis on
// a tap; this registers the browser's push token as a device (platform "web"), so the bridge's
// FCM fallback reaches it when no tab is open. Asked on a click only, never on load.
//
// The token: with Firebase configured (GET /config `webPush`) the FCM web push token of this
// browser, from Firebase's messaging SDK (loaded only then, as a separate chunk) with our own
// service worker; on the local stack (the FCM emulator) a random per-browser token the
// emulator records.

const TOKEN_KEY = "plantnotify.pushToken";

export class WebPush {
  constructor({ api }) {
    this.api = api;
    this.token = null;
    this.registration = null;
    this.config = null;
  }

  get supported() {
    return "serviceWorker" in navigator && "Notification" in window;
  }

  /** Install the service worker; register the device when notifications are already allowed. */
  async setup(config) {
    this.config = config || {};
    if (!this.supported) return;
    try {
      this.registration = await navigator.serviceWorker.register("sw.js", { scope: "./" });
    } catch (error) {
      console.warn("plantnotify: no service worker, pushes reach only open tabs", error);
    }
    navigator.serviceWorker.addEventListener("message", (e) => {
      if (e.data && e.data.type === "open-analysis" && e.data.analysisId) location.hash = `#/analyses/${encodeURIComponent(e.data.analysisId)}`;
    });
    if (Notification.permission === "granted") await this.register();
  }

  /** Register this browser as a push device (after the farmer allowed notifications). */
  async register() {
    const token = await this._token();
    if (!token) return null;
    try {
      await this.api.registerDevice(token, "web");
      this.token = token;
    } catch (error) {
      console.warn("plantnotify: could not register this browser for pushes", error);
    }
    return this.token;
  }

  /** Logged out: this browser gets no more pushes for that account. */
  forget() {
    this.token = null;
  }

  async _token() {
    const web = this.config.webPush;
    if (web && web.firebase) {
      if (!this.registration) return null;
      try {
        const [{ initializeApp }, { getMessaging, getToken }] = await Promise.all([import("@firebase/app"), import("@firebase/messaging")]);
        const app = initializeApp(web.firebase, "plantnotify-web");
        return await getToken(getMessaging(app), { vapidKey: web.vapidKey || undefined, serviceWorkerRegistration: this.registration });
      } catch (error) {
        console.warn("plantnotify: no FCM web push token", error);
        return null;
      }
    }
    if (!this.config.pushEmulatorUrl) return null;
    let token = localStorage.getItem(TOKEN_KEY);
    if (!token) {
      const bytes = new Uint8Array(12);
      crypto.getRandomValues(bytes);
      token = `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
      localStorage.setItem(TOKEN_KEY, token);
    }
    return token;
  }
}
