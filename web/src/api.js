// The HTTP API (contract §3) as the web app uses it. Errors become ApiError with a message a
// farmer can act on, from the catalog (src/locales): the server's own words are for
// developers and stay in ``error.detail`` (shown only behind "technical details").
//
// Sessions: a short-lived access token and a rotating refresh token. A 401 on an
// authenticated call renews once (POST /auth/refresh) and retries; only when renewal itself is
// refused has the session really ended (``onSessionEnded``).

import { t } from "./i18n.js";

const BASE = "api/v1";

export class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the request never got an answer
    this.detail = detail;
  }
}

/** The server's text, for the "technical details" fold and the console; never the message. */
export function serverText(body) {
  if (!body || typeof body !== "object") return "";
  const { detail, error, message } = body;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) return detail.map((d) => d.msg).join("; ");
  if (typeof error === "string") return error;
  if (error && typeof error.message === "string") return error.message;
  if (typeof message === "string") return message;
  return "";
}

const KNOWN_STATUS = new Set([0, 401, 403, 404, 409, 413, 415, 422, 429, 503]);

/**
 * A farmer's message for a failed request. ``context`` names the action ("login",
 * "register", "upload", ...): ``error.<context>.<status>`` wins over ``error.<status>``, and a
 * 422's field errors (``errors: [{field, type}]``) become ``error.field.<field>.<type>``.
 */
export function farmerMessage(status, body, context = "") {
  if (status === 422 && body && Array.isArray(body.errors)) {
    for (const e of body.errors) {
      const field = String(e.field || "").split(".").pop();
      for (const key of [`error.field.${field}.${e.type}`, `error.field.${field}`]) {
        const text = t(key);
        if (text !== key) return text;
      }
    }
  }
  for (const key of [`error.${context}.${status}`, `error.${status}`]) {
    const text = t(key);
    if (text !== key) return text;
  }
  if (status >= 500) return t("error.5xx");
  return KNOWN_STATUS.has(status) ? t("error.generic") : t("error.generic");
}

function toError(status, body, context) {
  return new ApiError(status, farmerMessage(status, body, context), serverText(body) || null);
}

export class Api {
  /**
   * @param {object} o
   * @param {() => string | null} o.getToken        the current access token
   * @param {(failedToken: string|null) => Promise<boolean>} o.renew
   *        renew the session after a 401 with ``failedToken``; true when a new token is in place
   * @param {() => void} o.onSessionEnded           renewal refused: the session is over
   */
  constructor({ getToken, renew, onSessionEnded }) {
    this.getToken = getToken;
    this.renew = renew || (async () => false);
    this.onSessionEnded = onSessionEnded || (() => {});
  }

  _headers(json, token) {
    const headers = { Accept: "application/json" };
    if (json) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  async request(method, path, options = {}) {
    return (await this.requestFull(method, path, options)).body;
  }

  /** Like request(), with the response headers (paging cursors). */
  async requestFull(method, path, { json, query, auth = true, context = "" } = {}) {
    let url = `${BASE}${path}`;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, v);
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    for (let attempt = 0; ; attempt++) {
      const token = auth ? this.getToken() : null;
      let response;
      try {
        response = await fetch(url, {
          method,
          headers: this._headers(json !== undefined, token),
          body: json !== undefined ? JSON.stringify(json) : undefined,
        });
      } catch {
        throw toError(0, null, context);
      }
      const text = await response.text();
      let body = null;
      if (text) {
        try {
          body = JSON.parse(text);
        } catch {
          body = null;
        }
      }
      if (response.ok) return { body, headers: response.headers };
      if (response.status === 401 && auth) {
        if (attempt === 0 && (await this.renew(token))) continue;
        this.onSessionEnded();
      }
      throw toError(response.status, body, context);
    }
  }

  register(username, password) {
    return this.request("POST", "/auth/register", { json: { username, password }, auth: false, context: "register" });
  }

  login(username, password) {
    return this.request("POST", "/auth/login", { json: { username, password }, auth: false, context: "login" });
  }

  /** New access + refresh token for ``refreshToken`` (spent by this call). */
  refresh(refreshToken) {
    return this.request("POST", "/auth/refresh", { json: { refreshToken }, auth: false, context: "refresh" });
  }

  /** Revoke this device's refresh token (best effort: the caller forgets it anyway). */
  logout(refreshToken) {
    return this.request("POST", "/auth/logout", { json: { refreshToken }, auth: false, context: "logout" });
  }

  realtimeToken() {
    return this.request("POST", "/realtime/token", { context: "realtime" });
  }

  /** A page of analyses, newest first; ``nextBefore`` is set when older ones exist. */
  async listAnalyses({ limit = 50, before } = {}) {
    const { body, headers } = await this.requestFull("GET", "/plantanalyses", { query: { limit, before } });
    return { items: itemsOf(body), nextBefore: headers.get("X-Next-Before") };
  }

  /**
   * Client configuration (realtime or polling for this user, web push); null when the API
   * has none. Sent with the access token when there is one: the mode is per user.
   */
  async config() {
    try {
      return await this.request("GET", "/config", { auth: Boolean(this.getToken()) });
    } catch {
      return null;
    }
  }

  registerDevice(token, platform) {
    return this.request("POST", "/devices", { json: { token, platform } });
  }

  unregisterDevice(token) {
    return this.request("DELETE", `/devices/${encodeURIComponent(token)}`);
  }

  getAnalysis(id) {
    return this.request("GET", `/plantanalyses/${encodeURIComponent(id)}`);
  }

  notificationsSince(isoTime) {
    return this.request("GET", "/notifications", { query: { since: isoTime } });
  }

  /** One page of events since ``isoTime``; ``nextSince`` continues it, ``more`` says if needed. */
  async notificationsPage(isoTime) {
    const { body, headers } = await this.requestFull("GET", "/notifications", { query: { since: isoTime } });
    return { items: itemsOf(body), nextSince: headers.get("X-Next-Since"), more: headers.get("X-Has-More") === "true" };
  }

  /** The image as an object URL (the API wants the bearer token, so no plain <img src>). */
  async imageUrl(id) {
    for (let attempt = 0; ; attempt++) {
      const token = this.getToken();
      let response;
      try {
        response = await fetch(`${BASE}/plantanalyses/${encodeURIComponent(id)}/image`, {
          headers: { Authorization: `Bearer ${token}` },
        });
      } catch {
        throw toError(0, null, "image");
      }
      if (response.ok) return URL.createObjectURL(await response.blob());
      if (response.status === 401) {
        if (attempt === 0 && (await this.renew(token))) continue;
        this.onSessionEnded();
      }
      throw toError(response.status, null, "image");
    }
  }

  /**
   * Upload with progress (fetch has no upload progress; XHR does).
   * @returns {{ promise: Promise<object>, abort: () => void }}
   */
  upload(file, cropType, onProgress) {
    let xhr = null;
    let aborted = false;
    const once = () => this._uploadOnce(file, cropType, onProgress, (x) => (xhr = x));
    const promise = (async () => {
      try {
        return await once();
      } catch (error) {
        // An access token that expired mid-upload: renew once and send again.
        if (error.status === 401 && !aborted && (await this.renew(error.token))) return await once().catch((e) => this._uploadFailed(e));
        return this._uploadFailed(error);
      }
    })();
    return {
      promise,
      abort: () => {
        aborted = true;
        xhr?.abort();
      },
    };
  }

  _uploadFailed(error) {
    if (error.status === 401) this.onSessionEnded();
    throw error;
  }

  _uploadOnce(file, cropType, onProgress, setXhr) {
    const xhr = new XMLHttpRequest();
    setXhr(xhr);
    const token = this.getToken();
    return new Promise((resolve, reject) => {
      xhr.open("POST", `${BASE}/plantanalyses/async`);
      xhr.setRequestHeader("Accept", "application/json");
      if (token) xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) onProgress(e.loaded, e.total);
      };
      xhr.onload = () => {
        let body = null;
        try {
          body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
        } catch {
          body = null;
        }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else {
          const error = toError(xhr.status, body, "upload");
          error.token = token;
          reject(error);
        }
      };
      xhr.onerror = () => reject(toError(0, null, "upload"));
      xhr.onabort = () => reject(new ApiError(0, t("upload.cancelled"), null));
      const form = new FormData();
      form.append("image", file, file.name);
      if (cropType) form.append("cropType", cropType);
      xhr.send(form);
    });
  }
}

/** A list answer, whether the API sends a bare array or wraps it ({items: [...]}, ...). */
export function itemsOf(body) {
  if (Array.isArray(body)) return body;
  if (body && typeof body === "object") {
    for (const key of ["items", "analyses", "notifications", "events", "data", "results"]) {
      if (Array.isArray(body[key])) return body[key];
    }
  }
  return [];
}
