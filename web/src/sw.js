// The service worker: shows a push (FCM web push, contract §6) when no tab of the app is open,
// and opens the analysis when the farmer taps it. Served uncached (index.html's rules), so a
// new version is picked up on the next visit. It caches nothing: the app needs the network.

/* eslint-env serviceworker */

const APP_URL = new URL("./", self.location).href;

/** The event fields of a push: FCM sends {notification, data}; a bare event object works too. */
function parsePush(event) {
  let body = {};
  try {
    body = event.data ? event.data.json() : {};
  } catch {
    body = { notification: { body: event.data ? event.data.text() : "" } };
  }
  const data = body.data || body;
  const note = body.notification || (body.webpush && body.webpush.notification) || {};
  return { data, note };
}

function analysisUrl(analysisId) {
  return analysisId ? `${APP_URL}#/analyses/${encodeURIComponent(analysisId)}` : APP_URL;
}

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const { data, note } = parsePush(event);
  const analysisId = data.analysisId || "";
  event.waitUntil(
    (async () => {
      // An open, visible tab already shows a toast (it got the event over MQTT).
      const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      if (tabs.some((c) => c.visibilityState === "visible" && c.focused)) return;
      await self.registration.showNotification(note.title || data.title || "Plantnotify", {
        body: note.body || data.body || "",
        tag: analysisId || data.eventId || undefined, // one notification per analysis
        icon: "favicon.svg",
        data: { analysisId, url: analysisUrl(analysisId) },
      });
    })(),
  );
});

/** Focus a tab of the app on the analysis, or open one. */
async function openAnalysis(data) {
  const url = (data && data.url) || APP_URL;
  const tabs = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  const tab = tabs.find((c) => c.url.startsWith(APP_URL));
  if (tab) {
    await tab.focus().catch(() => {});
    tab.postMessage({ type: "open-analysis", analysisId: data && data.analysisId });
    return tab;
  }
  return self.clients.openWindow(url);
}

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  event.waitUntil(openAnalysis(event.notification.data));
});
