// The HTTP API (contract §3) as the web app uses it. Errors become ApiError with a message a
// person can act on; the server's own words are used when it gives a clear one.

const BASE = "api/v1";

export class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.name = "ApiError";
    this.status = status; // 0: the request never got an answer
    this.detail = detail;
  }
}

function serverMessage(body) {
  if (!body || typeof body !== "object") return "";
  const { detail, error, message } = body;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail) && detail.length) {
    const first = detail[0];
    const where = Array.isArray(first.loc) ? first.loc.filter((x) => x !== "body").join(".") : "";
    return where ? `${where}: ${first.msg}` : String(first.msg || "");
  }
  if (typeof error === "string") return error;
  if (error && typeof error.message === "string") return error.message;
  if (typeof message === "string") return message;
  return "";
}

const FALLBACK = {
  0: "We can't reach the server. Check your connection and try again.",
  401: "Your session has ended. Please log in again.",
  403: "You don't have access to that.",
  404: "We couldn't find that. It may have been removed.",
  409: "That already exists.",
  413: "That file is too large. Choose a smaller photo.",
  415: "That file isn't an image we can read. Choose a JPEG, PNG or WebP photo.",
  422: "Some information is missing or invalid. Check the form and try again.",
  429: "Too many requests right now. Wait a moment and try again.",
  503: "The service is busy or starting up. Try again in a minute.",
};

function toError(status, body) {
  const fromServer = serverMessage(body);
  const fallback =
    FALLBACK[status] ||
    (status >= 500 ? "Something went wrong on our side. Try again in a minute." : "The request failed.");
  return new ApiError(status, fromServer || fallback, body);
}

export class Api {
  /**
   * @param {() => string | null} getToken  the current access token
   * @param {() => void} onUnauthorized     called on any 401 of an authenticated call
   */
  constructor(getToken, onUnauthorized) {
    this.getToken = getToken;
    this.onUnauthorized = onUnauthorized;
  }

  _headers(json) {
    const headers = { Accept: "application/json" };
    if (json) headers["Content-Type"] = "application/json";
    const token = this.getToken();
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  async request(method, path, options = {}) {
    return (await this.requestFull(method, path, options)).body;
  }

  /** Like request(), with the response headers (paging cursors). */
  async requestFull(method, path, { json, query, auth = true } = {}) {
    let url = `${BASE}${path}`;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, v);
      const qs = params.toString();
      if (qs) url += `?${qs}`;
    }
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: this._headers(json !== undefined),
        body: json !== undefined ? JSON.stringify(json) : undefined,
      });
    } catch {
      throw toError(0, null);
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
    if (!response.ok) {
      if (response.status === 401 && auth) this.onUnauthorized();
      throw toError(response.status, body);
    }
    return { body, headers: response.headers };
  }

  register(username, password) {
    return this.request("POST", "/auth/register", { json: { username, password }, auth: false });
  }

  login(username, password) {
    return this.request("POST", "/auth/login", { json: { username, password }, auth: false });
  }

  realtimeToken() {
    return this.request("POST", "/realtime/token");
  }

  /** A page of analyses, newest first; ``nextBefore`` is set when older ones exist. */
  async listAnalyses({ limit = 50, before } = {}) {
    const { body, headers } = await this.requestFull("GET", "/plantanalyses", { query: { limit, before } });
    return { items: itemsOf(body), nextBefore: headers.get("X-Next-Before") };
  }

  /** Client configuration (where pushes go in the local stack); null when the API has none. */
  async config() {
    try {
      return await this.request("GET", "/config", { auth: false });
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

  /** The image as an object URL (the API wants the bearer token, so no plain <img src>). */
  async imageUrl(id) {
    let response;
    try {
      response = await fetch(`${BASE}/plantanalyses/${encodeURIComponent(id)}/image`, {
        headers: { Authorization: `Bearer ${this.getToken()}` },
      });
    } catch {
      throw toError(0, null);
    }
    if (!response.ok) {
      if (response.status === 401) this.onUnauthorized();
      throw toError(response.status, null);
    }
    return URL.createObjectURL(await response.blob());
  }

  /**
   * Upload with progress (fetch has no upload progress; XHR does).
   * @returns {{ promise: Promise<object>, abort: () => void }}
   */
  upload(file, cropType, onProgress) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      xhr.open("POST", `${BASE}/plantanalyses/async`);
      xhr.setRequestHeader("Accept", "application/json");
      const token = this.getToken();
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
          if (xhr.status === 401) this.onUnauthorized();
          reject(toError(xhr.status, body));
        }
      };
      xhr.onerror = () => reject(toError(0, null));
      xhr.onabort = () => reject(new ApiError(0, "Upload cancelled.", null));
      const form = new FormData();
      form.append("image", file, file.name);
      if (cropType) form.append("cropType", cropType);
      xhr.send(form);
    });
    return { promise, abort: () => xhr.abort() };
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
