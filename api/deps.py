"""Dependencies of the routes: app state, settings, a DB session and the calling user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry.trace import SpanKind
from sqlalchemy.orm import Session

from api import accounts
from api.state import AppState
from api.tokens import InvalidToken, Principal
from plantnotify.logs import log_context
from plantnotify.settings import Settings
from plantnotify.tracing import TRACE_ID_HEADER, TRACEPARENT_HEADER, TraceContext, span, start_trace

_bearer = HTTPBearer(
    auto_error=False,
    description="`Authorization: Bearer <accessToken>` from `POST /api/v1/auth/login` "
    "(or a token of the configured identity provider).",
)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.ctx
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(state: StateDep) -> Iterator[Session]:
    with state.sessions() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]

_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def get_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Not authenticated: send `Authorization: Bearer <accessToken>` "
            "(get one from POST /api/v1/auth/login)",
            headers=_UNAUTHORIZED,
        )
    try:
        principal = state.tokens.verify(credentials.credentials)
    except InvalidToken:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "The access token is invalid or expired; refresh it or log in again",
            headers=_UNAUTHORIZED,
        ) from None
    if not await run_in_threadpool(_active, state, principal):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "This login has ended (logged out, password changed or account deleted); log in again",
            headers=_UNAUTHORIZED,
        )
    request.scope.setdefault("state", {})["user_id"] = principal.user_id
    return principal


async def get_optional_principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller when a valid, unrevoked bearer token came; None otherwise (never 401)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        return None
    try:
        return await get_principal(request, state, credentials)
    except HTTPException:
        return None


OptionalCaller = Annotated[Principal | None, Depends(get_optional_principal)]


def _active(state: AppState, principal: Principal) -> bool:
    with state.sessions() as session:
        return accounts.is_active(session, principal)


Caller = Annotated[Principal, Depends(get_principal)]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


async def upload_trace(request: Request, response: Response) -> AsyncIterator[TraceContext]:
    """The trace of a new analysis: the caller's ``traceparent`` continued, or a new one.

    The whole upload request is its first span; every log line of the request carries the
    trace id, and the answer names it in ``X-Trace-Id`` (what support asks a farmer for).
    """
    trace = start_trace(request.headers.get(TRACEPARENT_HEADER))
    response.headers[TRACE_ID_HEADER] = trace.trace_id
    with (
        log_context(trace_id=trace.trace_id),
        span("upload", trace, kind=SpanKind.SERVER) as here,
    ):
        yield here or trace


UploadTrace = Annotated[TraceContext, Depends(upload_trace)]
