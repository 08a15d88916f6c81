"""The session fixture ``lab``: the real local lab, started once per test session.

- A lab that is already up and healthy is reused untouched; other engineers and other
  pytest sessions share it. It is torn down at session end only if this session started
  it (nothing of it ran before), no other session still uses it, and ``INFRA_LAB_KEEP=1``
  is not set.
- Tests that need the lab carry the ``lab`` marker; requesting the fixture adds it, so
  ``pytest -m "not lab"`` runs the quick tests without starting anything. When the lab
  cannot start, every test using the fixture ERRORs with the reason; a ``lab`` test that
  skips is turned into a failure (lab tests never skip silently).
- ``INFRA_LAB_NAME`` picks another instance (default ``lab``, inventory ``inventories/lab``;
  ``scripts/test.sh``: ``tests``). The session's lab binds VMs to a pool of four hosts
  (``--no-guests``); an instance up with guests (``infra lab up``'s default) is refused as it
  is, never switched (test_guests_lab.py builds on guests, on an instance of its own).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from infra_automation.exceptions import InfraError
from infra_automation.lab import DEFAULT_NAME, Lab, LabOptions

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the ``lab`` fixture, so ``-m "not lab"`` deselects it."""
    for item in items:
        if "lab" in getattr(item, "fixturenames", ()) and item.get_closest_marker("lab") is None:
            item.add_marker(pytest.mark.lab)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """A ``lab`` test never skips silently: a skip becomes a failure naming the reason."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if (
        report.skipped
        and item.get_closest_marker("lab") is not None
        and not hasattr(report, "wasxfail")
    ):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"a test marked 'lab' must not skip (it skipped: {reason})"


@pytest.fixture(scope="session")
def lab(pytestconfig: pytest.Config) -> Iterator[Lab]:
    name = os.environ.get("INFRA_LAB_NAME", DEFAULT_NAME)
    error: InfraError | str | None = None
    try:
        recorded = Lab(ROOT, name)
        running = recorded.options  # what the last `up` asked for (defaults if none)
        # The session's tests bind VMs to a pool (`infra lab up --no-guests`): core+edge, four
        # pool hosts (a project scaled to three web VMs beside the pool's spare) and vCenter at
        # least; a bigger lab stays so. A lab up with guests (`infra lab up`'s default) is
        # never switched: its projects' VMs live on their guests (tests/integration/
        # test_guests_lab.py builds on guests, on an instance of its own).
        if recorded.is_up() and running.guests:
            error = (
                f"it is up with guests (`infra lab up`'s default) and the session's lab tests "
                f"bind VMs to a pool of hosts; it is left as it is: run them on an instance of "
                f"their own (INFRA_LAB_NAME=tests, as scripts/test.sh does), or "
                f"`infra lab up --name {name} --no-guests --hosts 4`"
            )
        else:
            options = LabOptions(
                routers=max(running.routers, 2), hosts=max(running.hosts, 4), guests=False
            )
            instance = Lab(ROOT, name, options)
            lease = instance.acquire(cleanup_on_failure=os.environ.get("INFRA_LAB_KEEP") != "1")
    except InfraError as exc:
        error = exc
    if error is not None:  # outside the except: the report shows the reason, not a chain
        pytest.fail(f"the lab {name!r} cannot serve the lab tests: {error}", pytrace=False)
    yield instance
    outcome = instance.release(lease, keep=os.environ.get("INFRA_LAB_KEEP") == "1")
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"lab {instance.name!r}: {outcome}")


# Debian's chromium, driven by Playwright (never `playwright install`): one browser for the
# whole session, shared by the docs-site and the portal tests (Playwright's sync API cannot
# run twice at once in one thread).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    # Never skipped: the dev extra installs playwright, scripts/bootstrap.sh Debian's chromium.
    from playwright import sync_api

    assert CHROMIUM.is_file(), f"no {CHROMIUM}: apt-get install -y chromium"
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()
