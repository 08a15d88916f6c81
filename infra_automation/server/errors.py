"""Our exception tree and FastAPI's own errors as JSON bodies ``{"error", "message",
"fields"}``: 422 names every bad field, 401/403 say what is missing or refused. Outside
``/api/v1`` (the portal's pages) the same errors go to ``app.state.html_errors``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError as BodyValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from infra_automation.exceptions import (
    ChangeError,
    ConfigurationError,
    InfraError,
    PlanningError,
    RecordError,
    RequestValidationError,
    ResumeRefused,
    RunLocked,
    RunNotFound,
)
from infra_automation.server.policy import API
from infra_automation.server.responses import RedactedJSON

log = logging.getLogger(__name__)
STATUS: Sequence[tuple[type[InfraError], int, str]] = (
    (RequestValidationError, 422, "invalid"),
    (PlanningError, 422, "invalid"),
    (ConfigurationError, 422, "invalid"),
    (RunNotFound, 404, "not_found"),
    (ChangeError, 404, "not_found"),  # unknown change id or ambiguous prefix
    (RunLocked, 409, "locked"),
    (ResumeRefused, 409, "conflict"),
    (RecordError, 503, "unavailable"),
)


def body(error: str, message: str, fields: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    return {"error": error, "message": message, "fields": list(fields)}


HtmlErrors = Callable[[Request, int, dict[str, Any], Mapping[str, str] | None], Response]


def _respond(
    request: Request, status: int, content: dict[str, Any], headers: Mapping[str, str] | None = None
) -> Response:
    """JSON under the API; the page of the portal's :data:`HtmlErrors` (if any) elsewhere."""
    html: HtmlErrors | None = getattr(request.app.state, "html_errors", None)
    if html is not None and not request.url.path.startswith(API + "/"):
        return html(request, status, content, headers)
    return RedactedJSON(content, status_code=status, headers=headers)


def infra_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InfraError)
    status, error = next(((s, e) for t, s, e in STATUS if isinstance(exc, t)), (500, "internal"))
    fields: list[dict[str, str]] = []
    message = str(exc)
    if isinstance(exc, RequestValidationError):
        fields = [{"field": e.field, "message": e.message} for e in exc.errors]
        message = f"invalid request: {'; '.join(str(e) for e in exc.errors)}"
    return _respond(request, status, body(error, message, fields))


def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    content = (
        {"fields": [], **detail}
        if isinstance(detail, dict)
        else body(_error_name(exc.status_code), str(detail))
    )
    return _respond(request, exc.status_code, content, exc.headers)


def body_error(request: Request, exc: Exception) -> Response:
    """FastAPI's validation of the body, path and query, with our field names."""
    assert isinstance(exc, BodyValidationError)
    fields = [
        {"field": _location(e.get("loc", ())), "message": str(e.get("msg", "invalid"))}
        for e in exc.errors()
    ]
    message = "invalid request: " + "; ".join(f"{f['field']}: {f['message']}" for f in fields)
    return _respond(request, 422, body("invalid", message, fields))


def _location(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        where = parts.pop(0)
        return ".".join(parts) or where
    return ".".join(parts) or "(top)"


def _error_name(status: int) -> str:
    names = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed"}
    return names.get(status, "error" if status < 500 else "internal")


def unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return RedactedJSON(body("internal", "internal error (see the server log)"), status_code=500)


def install(app: FastAPI) -> None:
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(InfraError, infra_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(BodyValidationError, body_error)
