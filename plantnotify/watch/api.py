"""The few HTTP API calls a device makes (contract §3), with errors that say what to do."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

API_PREFIX = "/api/v1"


class WatchError(Exception):
    """A problem the user must fix (bad credentials, unreachable API); the message says how."""


@dataclass(frozen=True, slots=True)
class Login:
    user_id: str
    access_token: str
    expires_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class RealtimeGrant:
    """The answer of ``POST /realtime/token``."""

    token: str
    username: str
    client_id_prefix: str
    expires_at: float  # unix seconds, from our clock when we received it
    ttl: int
    host: str
    port: int
    ws_url: str
    analyses_filter: str
    receipts_topic: str
    protocol_version: int = 5  # 4 (3.1.1) on the clustered engine

    @classmethod
    def from_answer(cls, body: dict[str, Any], received_at: float) -> RealtimeGrant:
        try:
            ttl = int(body["expiresIn"])
            return cls(
                token=str(body["token"]),
                username=str(body["username"]),
                client_id_prefix=str(body["clientIdPrefix"]),
                expires_at=received_at + ttl,
                ttl=ttl,
                host=str(body["mqtt"]["host"]),
                port=int(body["mqtt"]["port"]),
                ws_url=str(body["mqtt"]["wsUrl"]),
                analyses_filter=str(body["topics"]["analyses"]),
                receipts_topic=str(body["topics"]["receipts"]),
                protocol_version=int(body["mqtt"].get("protocolVersion", 5)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WatchError(f"the API's realtime token answer is missing {exc}") from None


class ApiClient:
    """Logs in with a username and password and logs in again when the access token ends."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.login: Login | None = None

    def close(self) -> None:
        self._http.close()

    # --- calls ----------------------------------------------------------------------------

    def log_in(self) -> Login:
        body = self._call(
            "POST",
            "/auth/login",
            json={"username": self._username, "password": self._password},
            auth=False,
        )
        try:
            self.login = Login(
                user_id=str(body["userId"]),
                access_token=str(body["accessToken"]),
                expires_at=time.time() + int(body.get("expiresIn", 3600)),
            )
        except (KeyError, TypeError, ValueError):
            raise WatchError("the API's login answer has no userId/accessToken") from None
        return self.login

    def realtime_grant(self) -> RealtimeGrant:
        body = self._call("POST", "/realtime/token")
        return RealtimeGrant.from_answer(body, time.time())

    def register_device(self, token: str, platform: str) -> None:
        self._call("POST", "/devices", json={"token": token, "platform": platform})

    def notifications_since(self, since_iso: str) -> list[dict[str, Any]]:
        body = self._call("GET", "/notifications", params={"since": since_iso})
        return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []

    # --- plumbing -------------------------------------------------------------------------

    def _token(self) -> str:
        # Log in again shortly before the access token ends (the realtime token may not
        # outlive it, so a stale login would shorten every MQTT session).
        if self.login is None or time.time() >= self.login.expires_at - 30:
            self.log_in()
        assert self.login is not None
        return self.login.access_token

    def _call(self, method: str, path: str, *, auth: bool = True, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._token()}"} if auth else {}
            try:
                response = self._http.request(method, API_PREFIX + path, headers=headers, **kwargs)
            except httpx.HTTPError as exc:
                raise WatchError(
                    f"cannot reach the API at {self.base_url} ({type(exc).__name__}); check "
                    "--api (or PLANTNOTIFY_API) and that `plantnotify api` is running"
                ) from None
            if response.status_code == 401 and auth and attempt == 1:
                self.login = None  # revoked or expired early: log in once more
                continue
            break
        if response.status_code >= 400:
            raise WatchError(self._explain(path, response))
        try:
            return response.json() if response.content else None
        except ValueError:
            raise WatchError(
                f"{self.base_url}{API_PREFIX}{path} did not answer with JSON; is --api the "
                "plantnotify API's base URL (e.g. http://127.0.0.1:8000)?"
            ) from None

    def _explain(self, path: str, response: httpx.Response) -> str:
        try:
            detail = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if path == "/auth/login" and response.status_code == 401:
            return "wrong username or password (--username/--password or PLANTNOTIFY_USERNAME/PASSWORD)"
        message = f"{path} answered {response.status_code}"
        return f"{message}: {detail}" if isinstance(detail, str) else message
