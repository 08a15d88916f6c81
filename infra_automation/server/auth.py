"""Authentication (bearer token or session cookie), the rule guard, and the login limiter."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request

from infra_automation.identity import IdentityStore, User
from infra_automation.server.policy import Rule, Scope, rule_for

SESSION_COOKIE = "infra_session"


def problem(status: int, error: str, message: str, **extra: Any) -> HTTPException:
    """An HTTP error whose JSON body is ``{"error": ..., "message": ...}``."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return HTTPException(
        status, detail={"error": error, "message": message, **extra}, headers=headers
    )


@dataclass(frozen=True)
class Principal:
    """The authenticated user and the scope the endpoint's rule gives her role."""

    user: User
    scope: Scope

    @property
    def name(self) -> str:
        return self.user.name

    def may_see(self, project: str) -> bool:
        return self.scope is not Scope.ASSIGNED or project in self.user.projects

    def require_project(self, project: str) -> None:
        if not self.may_see(project):
            raise problem(
                403,
                "forbidden",
                f"{self.user.role.value} {self.name!r} is not assigned to project {project!r}",
            )

    def projects_filter(self) -> tuple[str, ...] | None:
        """The projects a listing is limited to (None: all)."""
        return self.user.projects if self.scope is Scope.ASSIGNED else None


def authenticate(request: Request, identity: IdentityStore) -> User:
    """The user of the request's bearer token or session cookie (401 otherwise)."""
    header = request.headers.get("authorization")
    if header:
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise problem(401, "unauthorized", "the Authorization header must be 'Bearer TOKEN'")
        user = identity.user_for_token(value.strip(), "api")
        if user is None:
            raise problem(401, "unauthorized", "the token is invalid, expired or revoked")
        return user
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        user = identity.user_for_token(cookie, "session")
        if user is None:
            raise problem(401, "unauthorized", "the session has ended: log in again")
        return user
    raise problem(401, "unauthorized", "authentication required: a bearer token or a session")


def route_rule(request: Request) -> Rule:
    route = request.scope.get("route")
    path = getattr(route, "path", request.url.path)
    rule = rule_for(request.method, path)
    if rule is None:  # create_app checks every route has one: this is a bug
        raise problem(500, "internal", f"no access rule for {request.method} {path}")
    return rule


def authorize(request: Request, identity: IdentityStore) -> Principal:
    """Authenticate, then apply the endpoint's rule (403 naming role and endpoint)."""
    rule = route_rule(request)
    user = authenticate(request, identity)
    scope = rule.scope(user.role)
    if scope is None:
        allowed = ", ".join(r.value for r in rule.grants) or "nobody"
        raise problem(
            403,
            "forbidden",
            f"role {user.role.value!r} may not {rule.summary} (allowed: {allowed})",
        )
    return Principal(user, scope)


@dataclass
class LoginLimiter:
    """At most ``attempts`` failed logins per user and client within ``window`` seconds."""

    attempts: int = 5
    window: float = 300.0
    _failures: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def retry_after(self, user: str, client: str) -> float:
        """Seconds to wait before the next attempt (0: go ahead)."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent((user, client), now)
            if len(failures) < self.attempts:
                return 0.0
            return max(0.0, failures[0] + self.window - now)

    def failed(self, user: str, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent((user, client), now).append(now)

    def succeeded(self, user: str, client: str) -> None:
        with self._lock:
            self._failures.pop((user, client), None)

    def _recent(self, key: tuple[str, str], now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures
