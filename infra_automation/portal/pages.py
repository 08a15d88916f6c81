"""What the portal's routes share: the templates, the page renderer (which also sets the
CSRF cookie), the caller of a page, and the HTML form of the API's errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from infra_automation.identity import Role
from infra_automation.portal import csrf
from infra_automation.server.auth import Principal, authenticate
from infra_automation.server.policy import Scope, rule_for
from infra_automation.server.state import ServerState, get_state

HERE = Path(__file__).parent
STATIC = HERE / "static"
_env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html", "j2"], default=True),
    undefined=StrictUndefined,
)
templates = Jinja2Templates(env=_env)


def may(role: Role, method: str, path: str) -> bool:
    """Whether ``role`` may call the portal route (for showing buttons; the route's guard
    decides)."""
    rule = rule_for(method, path)
    return rule is not None and (rule.public or rule.scope(role) is not None)


def render(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    caller: Principal | None = None,
    status: int = 200,
) -> HTMLResponse:
    state = get_state(request)
    data = {
        "caller": caller,
        "csrf_token": csrf.token_for(request),
        "may": (lambda m, p: may(caller.user.role, m, p)) if caller else (lambda m, p: False),
        **context,
    }
    response = templates.TemplateResponse(request, name, data, status_code=status)
    csrf.remember(request, response, state.secure_cookies)
    return response


def optional_user(request: Request, state: ServerState) -> Principal | None:
    """The signed-in user of a public page (for the header), or None."""
    try:
        user = authenticate(request, state.identity)
    except HTTPException:
        return None
    return Principal(user, Scope.ALL)


def error_page(request: Request, status: int, body: dict[str, Any], headers: Any) -> Response:
    """The portal's form of an API error: 401 goes to the login page, others are a page."""
    if status == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    state = get_state(request)
    context = {"status": status, "error": body}
    caller = optional_user(request, state)
    return render(request, "error.html.j2", context, caller=caller, status=status)
