"""``infra server``: the REST API (FastAPI under ``/api/v1``), identities and roles, live
events over Server-Sent Events. See :mod:`infra_automation.server.app`."""

from infra_automation.server.app import DEFAULT_HOST, DEFAULT_PORT, create_app, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "create_app", "serve"]
