"""Dependencies of the routes: app state, settings, a DB session and the calling user."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.state import AppState
from api.tokens import InvalidToken, Principal
from plantnotify.settings import Settings

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
            "The access token is invalid or expired; log in again",
            headers=_UNAUTHORIZED,
        ) from None
    request.scope.setdefault("state", {})["user_id"] = principal.user_id
    return principal


Caller = Annotated[Principal, Depends(get_principal)]
