"""CSRF protection of the portal's cookie-authenticated form posts (double-submit cookie).

Every page sets an ``infra_csrf`` cookie (random, ``HttpOnly``, ``SameSite=Strict``) and
puts the same value in each form (``csrf_token``) and in htmx's request headers
(``X-CSRF-Token``). A post is accepted only when the value it carries equals the cookie's
and, when the browser names an ``Origin``, that origin is the server's own. A request with
a bearer token carries no ambient credential and needs no CSRF token.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from fastapi import Request, Response

from infra_automation.server.auth import problem

COOKIE = "infra_csrf"
FIELD = "csrf_token"
HEADER = "x-csrf-token"


def token_for(request: Request) -> str:
    """The request's CSRF token (a new one when it has none; :func:`remember` sets it)."""
    known = request.cookies.get(COOKIE)
    if known:
        return known
    fresh: str | None = getattr(request.state, "csrf_new", None)
    if fresh is None:
        fresh = secrets.token_urlsafe(32)
        request.state.csrf_new = fresh
    return fresh


def remember(request: Request, response: Response, secure: bool) -> None:
    fresh: str | None = getattr(request.state, "csrf_new", None)
    if fresh is not None:
        response.set_cookie(
            COOKIE, fresh, httponly=True, samesite="strict", secure=secure, path="/"
        )


async def require_csrf(request: Request) -> None:
    """Dependency of every portal post (403 when the token or the origin is wrong)."""
    if request.headers.get("authorization"):
        return
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.url.netloc:
        raise problem(403, "csrf", f"cross-site post refused (origin {origin})")
    form = await request.form()
    sent = request.headers.get(HEADER) or str(form.get(FIELD) or "")
    cookie = request.cookies.get(COOKIE, "")
    if not cookie or not sent or not hmac.compare_digest(sent, cookie):
        raise problem(403, "csrf", "the form is stale or not from this site: reload the page")
