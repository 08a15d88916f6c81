"""The FastAPI application of ``infra server`` and the uvicorn runner.

::

    app = create_app(load_settings(root), workers=4, queue_limit=1000)
    serve(app, host="127.0.0.1", port=8080)

Every route under ``/api/v1`` has a rule in :data:`~infra_automation.server.policy.RULES`
and, unless the rule is public, depends on the guard that applies it: :func:`create_app`
raises :class:`ConfigurationError` otherwise. A submitted run is recorded ``queued`` and
answered at once; the server's own worker threads run it, or the workers' schedulers when a
broker is configured (:class:`~infra_automation.server.runner.RunQueue`; beyond
``queue_limit`` runs waiting for a thread, 429 with ``Retry-After``). The portal
(:mod:`infra_automation.portal`) is served by the same app, its pages under ``/`` with
rules in :data:`~infra_automation.server.policy.PORTAL_RULES`, its assets under ``/static``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles

from infra_automation.config import Settings, load_plugins
from infra_automation.engine import Engine
from infra_automation.exceptions import ConfigurationError
from infra_automation.identity import IdentityStore, create_identity_tables
from infra_automation.metrics import api as metrics_api
from infra_automation.server import (
    errors,
    routes_catalog,
    routes_changes,
    routes_projects,
    routes_runs,
    routes_session,
)
from infra_automation.server.policy import API, rule_for
from infra_automation.server.responses import RedactedJSON
from infra_automation.server.runner import DEFAULT_LIMIT, RunQueue
from infra_automation.server.schemas import ErrorBody
from infra_automation.server.state import ServerState, guard

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "not authenticated",
        403: "not allowed for the caller's role or project",
        404: "not found",
        422: "invalid input: every bad field is named",
    }.items()
}


def create_app(
    settings: Settings | Engine,
    *,
    workers: int = 4,
    queue_limit: int = DEFAULT_LIMIT,
    secure_cookies: bool = False,
    load_observers: bool = True,
    portal: bool = True,
) -> FastAPI:
    """The API of one project root (or of an engine built by the caller), and the portal's
    pages (``portal``)."""
    engine = settings if isinstance(settings, Engine) else _engine(settings, load_observers)
    create_identity_tables(engine.db)
    state = ServerState(
        engine=engine,
        identity=IdentityStore(engine.db),
        runs=RunQueue(engine, workers, limit=queue_limit),
        secure_cookies=secure_cookies,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state.runs.start()  # and the queued runs of before a restart
        yield
        state.runs.shutdown()
        engine.close()

    app = FastAPI(
        title="infra-automation",
        version="1",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=f"{API}/docs/oauth2-redirect",
        default_response_class=RedactedJSON,
        lifespan=lifespan,
        responses=ERRORS,  # type: ignore[arg-type]  # dict[int, dict] is what FastAPI takes
    )
    app.state.infra = state
    errors.install(app)
    routers = [m.router for m in (routes_session, routes_catalog, routes_runs, routes_projects)]
    routers += [metrics_api.router, metrics_api.metrics_router]
    routers.append(routes_changes.router)
    if portal:
        routers.append(install_portal(app))
    for router in routers:
        app.include_router(router)
    check_rules(app, routers)
    return app


def install_portal(app: FastAPI) -> APIRouter:
    """The portal's static files and HTML errors; its router (included by the caller)."""
    from infra_automation.portal import pages, routes

    app.mount("/static", StaticFiles(directory=pages.STATIC), name="static")
    app.state.html_errors = pages.error_page
    return routes.router


def _engine(settings: Settings, load_observers: bool) -> Engine:
    load_plugins(settings.plugins)
    return Engine(settings, load_observers=load_observers)


def check_rules(app: FastAPI, routers: Sequence[APIRouter]) -> None:
    """Every operation of the OpenAPI document has a rule, and the route of every rule that
    is not public depends on the guard (ConfigurationError otherwise)."""
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if rule_for(method, path) is None:
                raise ConfigurationError(f"no access rule for {method.upper()} {path}")
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute):
                continue
            calls = set(_calls(route.dependant))
            for method in route.methods or ():
                rule = rule_for(method, route.path)
                if rule is None:
                    raise ConfigurationError(f"no access rule for {method} {route.path}")
                if not rule.public and guard not in calls:
                    raise ConfigurationError(f"{method} {route.path} does not check its rule")


def _calls(dependant: Dependant) -> list[object]:
    found: list[object] = []
    for sub in dependant.dependencies:
        found += [sub.call, *_calls(sub)]
    return found


def serve(app: FastAPI, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> None:
    """Serve ``app`` with uvicorn until interrupted."""
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False)
