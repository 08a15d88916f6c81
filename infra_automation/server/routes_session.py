"""Login, logout, who am I, users and API tokens."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from infra_automation.identity import TokenInfo, User
from infra_automation.server.auth import SESSION_COOKIE, problem
from infra_automation.server.policy import API, Scope
from infra_automation.server.responses import OneTimeSecretJSON
from infra_automation.server.schemas import (
    Login,
    TokenCreated,
    TokenIn,
    TokenOut,
    UserIn,
    UserOut,
)
from infra_automation.server.state import Caller, StateDep

router = APIRouter(prefix=API, tags=["identity"])


def user_out(user: User) -> UserOut:
    return UserOut(name=user.name, role=user.role, projects=list(user.projects))


def token_out(info: TokenInfo) -> TokenOut:
    return TokenOut(
        id=info.id,
        user=info.user,
        label=info.label,
        created_at=info.created_at,
        expires_at=info.expires_at,
        revoked_at=info.revoked_at,
    )


@router.post("/login", response_model=UserOut)
def login(body: Login, request: Request, response: Response, state: StateDep) -> UserOut:
    """Password login: sets an httponly, SameSite=Strict session cookie (for the API and
    the portal, so its path is ``/``)."""
    client = request.client.host if request.client else "unknown"
    wait = state.limiter.retry_after(body.name, client)
    if wait > 0:
        raise problem(429, "rate_limited", f"too many failed logins: retry in {wait:.0f} s")
    user = state.identity.check_password(body.name, body.password)
    if user is None:
        state.limiter.failed(body.name, client)
        raise problem(401, "unauthorized", "wrong user name or password")
    state.limiter.succeeded(body.name, client)
    session = state.identity.create_session(user.name)
    response.set_cookie(
        SESSION_COOKIE,
        session.value,
        httponly=True,
        samesite="strict",
        secure=state.secure_cookies,
        max_age=int((session.info.expires_at - session.info.created_at).total_seconds())
        if session.info.expires_at
        else None,
        path="/",
    )
    return user_out(user)


@router.post("/logout", status_code=204)
def logout(request: Request, response: Response, caller: Caller, state: StateDep) -> None:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        state.identity.end_session(cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.get("/me", response_model=UserOut)
def me(caller: Caller) -> UserOut:
    return user_out(caller.user)


@router.get("/users", response_model=list[UserOut])
def list_users(caller: Caller, state: StateDep) -> list[UserOut]:
    return [user_out(u) for u in state.identity.list_users()]


@router.post("/users", response_model=UserOut, status_code=201)
def add_user(body: UserIn, caller: Caller, state: StateDep) -> UserOut:
    return user_out(state.identity.add_user(body.name, body.role, body.password, body.projects))


@router.get("/tokens", response_model=list[TokenOut])
def list_tokens(caller: Caller, state: StateDep) -> list[TokenOut]:
    owner = None if caller.scope is Scope.ALL else caller.name
    return [token_out(t) for t in state.identity.list_tokens(owner)]


@router.post(
    "/tokens", response_model=TokenCreated, status_code=201, response_class=OneTimeSecretJSON
)
def create_token(body: TokenIn, caller: Caller, state: StateDep) -> TokenCreated:
    """A new API token of the caller; its value is in this response only."""
    issued = state.identity.create_token(caller.name, body.label)
    return TokenCreated(info=token_out(issued.info), value=issued.value)


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, caller: Caller, state: StateDep) -> None:
    owner = None if caller.scope is Scope.ALL else caller.name
    if not state.identity.revoke(token_id, user=owner):
        raise problem(404, "not_found", f"no active token {token_id!r} of yours")
