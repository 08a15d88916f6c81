"""The TAM portal: server-rendered pages (Jinja2 + htmx) served by ``infra server``.

- :mod:`~infra_automation.portal.routes` — the pages (rules in ``server.policy.PORTAL_RULES``);
- :mod:`~infra_automation.portal.forms` — the request form from a service's JSON Schema;
- :mod:`~infra_automation.portal.picture` — the dependency picture as SVG, drawn on the server;
- :mod:`~infra_automation.portal.views` — run and change view models;
- :mod:`~infra_automation.portal.actions` — submission through the change gate, approvals;
- :mod:`~infra_automation.portal.csrf` — the double-submit CSRF check of every form post;
- :mod:`~infra_automation.portal.vendor` — htmx and its SSE extension, vendored from npm.

Every asset is served by the app itself (``/static``): no CDN, no request leaves the host.
"""
