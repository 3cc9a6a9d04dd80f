"""The few HTTP API calls a device makes (contract §3), with errors that say what to do."""

from __future__ import annotations

import contextlib
import sys
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
    refresh_token: str | None = None
    lifetime: float = 3600.0  # seconds the access token was issued for


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
    """Logs in once, then renews the access token with the rotating refresh token before it
    ends (``POST /auth/refresh``). Only when the server refuses the refresh (the session was
    ended elsewhere, or expired) does it log in again, and it says so on stderr."""

    def __init__(self, base_url: str, username: str, password: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self._username = username
        self._password = password
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout)
        self.login: Login | None = None
        self.renewals = 0  # silent renewals with the refresh token
        self.relogins = 0  # sessions that ended and were started again with the password

    def close(self) -> None:
        """Log out (revokes the refresh token on the server), then close the connection."""
        if self.login is not None and self.login.refresh_token:
            with contextlib.suppress(httpx.HTTPError):  # best effort: it expires on its own
                self._http.post(
                    API_PREFIX + "/auth/logout", json={"refreshToken": self.login.refresh_token}
                )
        self.login = None
        self._http.close()

    # --- calls ----------------------------------------------------------------------------

    def log_in(self) -> Login:
        body = self._call(
            "POST",
            "/auth/login",
            json={"username": self._username, "password": self._password},
            auth=False,
        )
        return self._store(body)

    def renew(self) -> bool:
        """Renew with the refresh token; False when the server ended the session."""
        if self.login is None or not self.login.refresh_token:
            return False
        try:
            response = self._http.post(
                API_PREFIX + "/auth/refresh", json={"refreshToken": self.login.refresh_token}
            )
        except httpx.HTTPError as exc:
            raise WatchError(
                f"cannot reach the API at {self.base_url} ({type(exc).__name__}) to renew the "
                "session"
            ) from None
        if response.status_code in (400, 401, 403, 422):
            return False
        if response.status_code >= 300:
            raise WatchError(self._explain("/auth/refresh", response))
        self._store(response.json(), user_id=self.login.user_id)
        self.renewals += 1
        return True

    def _store(self, body: Any, user_id: str | None = None) -> Login:
        try:
            lifetime = int(body.get("expiresIn", 3600))
            self.login = Login(
                user_id=str(body.get("userId") or user_id),
                access_token=str(body["accessToken"]),
                expires_at=time.time() + lifetime,
                refresh_token=body.get("refreshToken"),
                lifetime=lifetime,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
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
        # Renew shortly before the access token ends: with 20 % of its life left, at most 30 s.
        if self.login is None:
            self.log_in()
        elif time.time() >= self.login.expires_at - min(30.0, self.login.lifetime * 0.2):
            self._renew_or_log_in()
        assert self.login is not None
        return self.login.access_token

    def _renew_or_log_in(self) -> None:
        if not self.renew():
            print(
                "plantnotify watch: the login session ended (logged out elsewhere or expired); "
                "logging in again",
                file=sys.stderr,
            )
            self.relogins += 1
            self.log_in()

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
                self._renew_or_log_in()  # expired or revoked early: renew once, then retry
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
