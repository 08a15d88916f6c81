"""Fixtures of the portal tests: a project root with a small catalog (core steps plus two
test executors: one whose dry run shows a config diff, one that fails while a marker file
exists), a real ``infra server`` on a loopback port with a user per role, and headless
Chromium (Debian's ``chromium``) whose every request is checked to stay on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from infra_automation.executors import ExecutorInfo, StepContext, register
from infra_automation.results import ErrorKind, StepResult
from tests.browser.conftest import Requests
from tests.server.conftest import PASSWORD, LiveServer, live_server, make_root

__all__ = ["PASSWORD", "LiveServer", "Requests"]


class ConfigParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lines: list[str] = []


class RouterConfig:
    """A stand-in for a router push: the dry run shows the lines it would add."""

    info = ExecutorInfo(
        key="portaltest.config",
        department="network",
        description="Config lines (a diff in check mode)",
        params=ConfigParams,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        lines = ctx.typed_params(ConfigParams).lines
        return StepResult.success(changed=True, diff="".join(f"+ {line}\n" for line in lines))

    def apply(self, ctx: StepContext) -> StepResult:
        return self.preview(ctx)


class FlakyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    marker: str


class Flaky:
    """Fails (unreachable) while its marker file exists."""

    info = ExecutorInfo(
        key="portaltest.flaky",
        department="os",
        description="Fails while the marker exists",
        params=FlakyParams,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return StepResult.success()

    def apply(self, ctx: StepContext) -> StepResult:
        if Path(ctx.typed_params(FlakyParams).marker).exists():
            return StepResult.failure("host os1 did not answer", kind=ErrorKind.UNREACHABLE)
        return StepResult.success(changed=True)


def _lite(name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Network, VMs, OS and backup in small (core steps)",
        "owner": "platform-team",
        "params": {
            "size": {"type": "string", "enum": ["small", "medium", "large"], "default": "small"},
            "vms": {"type": "integer", "default": 2, "minimum": 1, "maximum": 8},
            "backup": {"type": "boolean", "default": True},
            "title": {"type": "string", "default": "Welcome", "pattern": "[A-Za-z ]{1,30}"},
        },
        "steps": [
            {
                "id": "network",
                "department": "network",
                "executor": "portaltest.config",
                "params": {"lines": ["ip route 10.9.0.0/24 Null0", "! {{ params.size }}"]},
            },
            {
                "id": "vms",
                "department": "vmware",
                "executor": "core.sleep",
                "needs": ["network"],
                "params": {"seconds": 0.6},
            },
            {
                "id": "os",
                "department": "os",
                "executor": "core.sleep",
                "needs": ["vms"],
                "params": {"seconds": 0.6},
            },
            {
                "id": "backup",
                "department": "backup",
                "executor": "core.noop",
                "needs": ["os"],
                "when": "params.backup",
            },
        ],
        **(extra or {}),
    }


def portal_root(base: Path) -> Path:
    root = make_root(base)
    marker = root / "flaky.marker"
    flaky = {
        "name": "flaky",
        "description": "A step that fails while a marker file exists",
        "owner": "tests",
        "params": {},
        "steps": [
            {"id": "prepare", "executor": "core.noop"},
            {
                "id": "host",
                "department": "os",
                "executor": "portaltest.flaky",
                "needs": ["prepare"],
                "params": {"marker": str(marker)},
            },
        ],
    }
    services = [_lite("lite"), _lite("lite-change", {"change": {"type": "normal"}}), flaky]
    for service in services:
        (root / "catalog" / f"{service['name']}.yml").write_text(yaml.safe_dump(service))
    return root


@pytest.fixture(scope="module")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    register("portaltest.config", RouterConfig, replace=True)
    register("portaltest.flaky", Flaky, replace=True)
    root = portal_root(tmp_path_factory.mktemp("portal") / "project")
    with live_server(root) as live:
        yield live


@pytest.fixture
def requests_seen() -> Requests:
    return Requests()


@pytest.fixture
def page(browser: Any, portal: LiveServer, requests_seen: Requests) -> Iterator[Any]:
    """A fresh 1,280-px wide browser context; afterwards no request may have left 127.0.0.1."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", requests_seen.handle)
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()
    assert requests_seen.outside == [], requests_seen.outside
    assert requests_seen.seen, "the page made no request at all"


def login(page: Any, live: LiveServer, user: str) -> None:
    page.goto(f"{live.url}/login")
    page.fill("input[name=name]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#whoami")


@contextmanager
def browser_tab(browser: Any, timeout_ms: float = 15_000) -> Iterator[tuple[Any, Requests]]:
    """A fresh 1,280-px wide context's tab and every URL it requested; on leaving, none may
    have left 127.0.0.1 (those were aborted) and the page must have made some."""
    requests = Requests()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", requests.handle)
    tab = context.new_page()
    tab.set_default_timeout(timeout_ms)
    try:
        yield tab, requests
    finally:
        context.close()
    assert requests.outside == [], requests.outside
    assert requests.seen, "the page made no request at all"
