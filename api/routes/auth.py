"""``POST /auth/register`` and ``POST /auth/login``."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from api import passwords
from api.deps import SessionDep, StateDep
from api.schemas import (
    ErrorResponse,
    LoginRequest,
    LoginResponse,
    RegisterRequest,
    RegisterResponse,
)
from plantnotify.contracts.ids import new_user_id
from plantnotify.db.models import User
from plantnotify.logs import get_logger

router = APIRouter(prefix="/auth", tags=["auth"])
log = get_logger("plantnotify.api.auth")

_LOGIN_FAILED = "Wrong username or password"


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=RegisterResponse,
    responses={
        409: {"model": ErrorResponse, "description": "Username taken"},
        422: {"description": "Username or password does not meet the rules"},
    },
    summary="Create an account",
)
def register(body: RegisterRequest, session: SessionDep) -> RegisterResponse:
    username = body.username.lower()
    if body.password.lower() == username:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, "The password must not be the username"
        )
    user = User(
        id=new_user_id(), username=username, password_hash=passwords.hash_password(body.password)
    )
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            "That username is taken; choose another one, or log in if it is yours",
        ) from None
    log.info("user registered", extra={"user_id": user.id})
    return RegisterResponse(user_id=user.id, username=user.username)


@router.post(
    "/login",
    response_model=LoginResponse,
    responses={401: {"model": ErrorResponse, "description": "Wrong username or password"}},
    summary="Get an access token",
)
def login(body: LoginRequest, session: SessionDep, state: StateDep) -> LoginResponse:
    user = session.scalar(select(User).where(User.username == body.username.lower()))
    if user is None:
        passwords.burn_verification_time(body.password)
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _LOGIN_FAILED)
    if not passwords.verify_password(user.password_hash, body.password):
        log.info("login refused", extra={"user_id": user.id})
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, _LOGIN_FAILED)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash_password(body.password)
        session.commit()
    return LoginResponse(
        access_token=state.tokens.issue(user.id),
        expires_in=state.tokens.ttl_seconds,
        user_id=user.id,
    )
