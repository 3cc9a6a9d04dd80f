"""Accounts: register, log in, refresh, log out (this device or everywhere), change password.

Login sessions and revocation: ``api/accounts.py``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response, status

from api import accounts, audit, passwords, ratelimit, store
from api.deps import Caller, OptionalCaller, SessionDep, StateDep, client_ip
from api.schemas import (
    ErrorResponse,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    PasswordChangeRequest,
    RefreshRequest,
    RegisterRequest,
    RegisterResponse,
)
from api.state import AppState
from plantnotify.contracts.ids import new_user_id
from plantnotify.logs import get_logger

router = APIRouter(prefix="/auth", tags=["auth"])
log = get_logger("plantnotify.api.auth")

_LOGIN_FAILED = "Wrong username or password"
_UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses={
        409: {"model": ErrorResponse, "description": "Username taken"},
        422: {"description": "Username or password does not meet the rules"},
        429: {"model": ErrorResponse, "description": "Too many accounts from this address"},
    },
    summary="Create an account",
)
def register(
    body: RegisterRequest, request: Request, session: SessionDep, state: StateDep
) -> RegisterResponse:
    ratelimit.check(state.sessions, state.settings, ("register_ip", client_ip(request)))
    username = body.username.lower()
    if body.password.lower() == username:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "The password must not be the username"
        )
    try:
        user = store.add_user(
            session, new_user_id(), username, passwords.hash_password(body.password)
        )
    except store.UsernameTaken:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "That username is taken; choose another one, or log in if it is yours",
        ) from None
    audit.record(session, audit.REGISTERED, user_id=user.id)
    session.commit()
    log.info("user registered", extra={"user_id": user.id})
    return RegisterResponse(user_id=user.id, username=user.username)


def _tokens(state: AppState, issued: accounts.Issued) -> LoginResponse:
    return LoginResponse(
        access_token=state.tokens.issue(issued.user_id, issued.session_id),
        refresh_token=issued.refresh_token,
        expires_in=state.tokens.ttl_seconds,
        refresh_expires_in=state.settings.refresh_token_ttl_seconds,
        user_id=issued.user_id,
    )


@router.post(
    "/login",
    response_model=LoginResponse,
    responses={
        401: {"model": ErrorResponse, "description": "Wrong username or password"},
        429: {
            "model": ErrorResponse,
            "description": "Too many failed logins for this username or from this address: "
            "locked out for `Retry-After` seconds (doubling with every further excess)",
        },
    },
    summary="Log in: an access token and this device's refresh token",
)
def login(
    body: LoginRequest, request: Request, session: SessionDep, state: StateDep
) -> LoginResponse:
    ip = client_ip(request)
    username = body.username.lower()
    limits = ratelimit.limits(state.settings) if state.settings.rate_limits_enabled else None
    if limits is not None:
        wait = max(
            ratelimit.blocked_for(session, limits["login_account"], username) or 0,
            ratelimit.blocked_for(session, limits["login_ip"], ip or "") or 0,
        )
        if wait:
            audit.record(session, audit.LOGIN_LOCKED, user_id=None, ip=ip, username=username)
            session.commit()
            raise ratelimit.too_many(wait)
    user = store.user_by_username(session, username)
    if user is None or not passwords.verify_password(user.password_hash, body.password):
        if user is None:
            passwords.burn_verification_time(body.password)
        else:
            log.info("login refused", extra={"user_id": user.id})
        audit.record(
            session,
            audit.LOGIN_FAILED,
            user_id=user.id if user else None,
            ip=ip,
            reason="password" if user else "unknown user",
        )
        if limits is not None:
            ratelimit.hit(session, limits["login_account"], username)
            if ip:
                ratelimit.hit(session, limits["login_ip"], ip)
        session.commit()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _LOGIN_FAILED)
    if limits is not None:
        ratelimit.reset(session, limits["login_account"], username)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(body.password)
    issued = accounts.start_session(
        session, user.id, state.settings, user_agent=request.headers.get("user-agent")
    )
    audit.record(session, audit.LOGIN, user_id=user.id, ip=ip, session=issued.session_id)
    session.commit()
    return _tokens(state, issued)


_REFRESH_REFUSED = "The refresh token is invalid, spent or its login has ended; log in again"


@router.post(
    "/refresh",
    response_model=LoginResponse,
    responses={401: {"model": ErrorResponse, "description": _REFRESH_REFUSED}},
    summary="Spend a refresh token: a new access token and a new refresh token",
    description="The refresh token sent is spent; keep the new one. Sending a spent refresh "
    "token again ends that login session (someone else may hold a copy), unless it is the "
    "same token again within a few seconds while its successor is still unused (a lost answer).",
)
def refresh(
    body: RefreshRequest, request: Request, session: SessionDep, state: StateDep
) -> LoginResponse:
    try:
        issued = accounts.rotate(session, body.refresh_token, state.settings, ip=client_ip(request))
    except accounts.RefreshRefused as exc:
        session.commit()  # a reuse revoked the session: keep that
        log.info("refresh refused: %s", exc)
        if str(exc) == "reused":
            state.revocations_changed()
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, _REFRESH_REFUSED, headers=_UNAUTHORIZED
        ) from None
    session.commit()
    return _tokens(state, issued)


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={401: {"model": ErrorResponse, "description": "Neither token given nor valid"}},
    summary="Log this device out: its access, refresh and MQTT tokens stop working",
    description="Send this device's refresh token in the body, or the access token as bearer "
    "(or both). Live MQTT connections of the session are closed within seconds. Idempotent.",
)
def logout(
    request: Request,
    session: SessionDep,
    state: StateDep,
    caller: OptionalCaller,
    body: LogoutRequest | None = None,
) -> Response:
    sids: set[str] = set()
    if caller is not None and caller.session_id:
        sids.add(caller.session_id)
    if body is not None and body.refresh_token:
        auth = accounts.session_of_refresh(session, body.refresh_token)
        if auth is not None:
            sids.add(auth.id)
        elif caller is None:
            return Response(status_code=status.HTTP_204_NO_CONTENT)  # already spent or ended
    if not sids:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "Send this device's refresh token (JSON `refreshToken`) or its access token",
            headers=_UNAUTHORIZED,
        )
    changed = False
    for sid in sids:
        auth = store.auth_session(session, sid, for_update=True)
        if auth is not None and accounts.revoke_session(session, auth, "logout", state.settings):
            audit.record(
                session, audit.LOGOUT, user_id=auth.user_id, ip=client_ip(request), session=sid
            )
            changed = True
    session.commit()
    if changed:
        state.revocations_changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/logout-all",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={401: {"model": ErrorResponse}},
    summary="Log out everywhere: every login session of the caller ends",
)
def logout_all(request: Request, caller: Caller, session: SessionDep, state: StateDep) -> Response:
    count = accounts.revoke_user(
        session,
        caller.user_id,
        "logout_all",
        state.settings,
        whole_user=caller.source == "external",
    )
    audit.record(
        session, audit.LOGOUT_ALL, user_id=caller.user_id, ip=client_ip(request), sessions=count
    )
    session.commit()
    state.revocations_changed()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/password",
    response_model=LoginResponse,
    responses={
        401: {"model": ErrorResponse, "description": "Not logged in, or wrong current password"},
        404: {"model": ErrorResponse, "description": "Accounts of an identity provider"},
        422: {"model": ErrorResponse, "description": "The new password breaks the rules"},
    },
    summary="Change the password: every login session ends; this device gets new tokens",
)
def change_password(
    body: PasswordChangeRequest,
    request: Request,
    caller: Caller,
    session: SessionDep,
    state: StateDep,
) -> LoginResponse:
    user = store.user_by_id(session, caller.user_id, for_update=True)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "This account has no password here")
    if not passwords.verify_password(user.password_hash, body.current_password):
        audit.record(
            session,
            audit.LOGIN_FAILED,
            user_id=user.id,
            ip=client_ip(request),
            reason="password change",
        )
        session.commit()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "The current password is wrong")
    if body.new_password.lower() == user.username:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "The password must not be the username"
        )
    user.password_hash = passwords.hash_password(body.new_password)
    count = accounts.revoke_user(session, user.id, "password_changed", state.settings)
    audit.record(
        session, audit.PASSWORD_CHANGED, user_id=user.id, ip=client_ip(request), sessions=count
    )
    issued = accounts.start_session(
        session, user.id, state.settings, user_agent=request.headers.get("user-agent")
    )
    session.commit()
    state.revocations_changed()
    return _tokens(state, issued)
