"""The change record and its approvals in the project's documentation history: the waiting
change as soon as its dry run is recorded, each approval as it is given (the section of
``history.md`` rewritten between runs), and the implemented change with its run after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from change_helpers import TUESDAY

from infra_automation.changes import ChangeService, Decision, State
from infra_automation.config import load_settings
from infra_automation.docs.changes import BEGIN, END, change_history
from infra_automation.engine import Engine
from infra_automation.executors import ExecutorRegistry


@pytest.fixture
def documented(root: Path, registry: ExecutorRegistry, database_url: str) -> Iterator[Engine]:
    """An engine that writes docs (the docs observer of the entry points)."""
    settings = load_settings(root, env={"INFRA_DATABASE_URL": database_url})
    eng = Engine(settings, registry=registry, load_observers=True)
    yield eng
    eng.close()


def section(root: Path, project: str = "shop") -> str:
    page = (root / "docs" / "projects" / project / "history.md").read_text()
    return page.split(BEGIN, 1)[1].split(END, 1)[0]


def test_the_change_and_its_approvals_appear_in_the_history(documented: Engine) -> None:
    root = documented.settings.root
    changes = ChangeService(documented, clock=lambda: TUESDAY)
    assert changes.docs is not None
    request = documented.validate({"service": "landscape", "project": "shop", "requester": "jane"})
    change = changes.gate(request).change
    assert change is not None
    shown = section(root)
    assert f"### Change `{change.id[:12]}`: waiting" in shown
    assert f"| SHA-256 | `{change.id}` |" in shown
    assert "| Type | normal |" in shown and "| Risk | high |" in shown
    assert "| Requested by | jane |" in shown and "No approvals." in shown

    page = root / "docs" / "projects" / "shop" / "history.md"
    manual = page.read_text().replace("<!-- BEGIN MANUAL -->", "<!-- BEGIN MANUAL -->kept", 1)
    page.write_text(manual)
    assert changes.approve(change.id, "nina", comment="network ok").accepted
    shown = section(root)
    assert "| nina | approved | network |" in shown and f"`{change.id[:12]}` | yes |" in shown
    assert "<!-- BEGIN MANUAL -->kept" in page.read_text()  # only the section was rewritten

    for who in ("victor", "olga"):
        changes.approve(change.id, who)
    outcome = changes.gate(request)
    assert outcome.decision is Decision.RUN and outcome.plan is not None
    changes.claim(change.id)
    result = documented.run(outcome.plan)
    done = changes.finish(change.id, result)
    assert done.state is State.IMPLEMENTED
    shown = section(root)
    assert f"### Change `{change.id[:12]}`: implemented" in shown
    assert f"| Run | `{result.run_id}` |" in shown
    assert "| infra | its run starts |" in shown  # the state history
    assert "<!-- BEGIN MANUAL -->kept" in page.read_text()
    [entry] = change_history(root, "shop")
    assert [a.approver for a in entry.approvals] == ["nina", "victor", "olga"]


def test_a_voided_change_and_its_successor_both_show(documented: Engine) -> None:
    root = documented.settings.root
    changes = ChangeService(documented, clock=lambda: TUESDAY)
    request = documented.validate({"service": "landscape", "project": "shop", "requester": "jane"})
    first = changes.gate(request).change
    assert first is not None
    (root / "devices").mkdir()
    (root / "devices" / "core.cfg").write_text("out of band\n")
    second = changes.gate(request)
    assert second.decision is Decision.VOIDED and second.change is not None
    shown = section(root)
    assert f"### Change `{first.id[:12]}`: voided" in shown
    assert f"| Superseded by | `{second.change.id[:12]}` |" in shown
    assert f"### Change `{second.change.id[:12]}`: waiting" in shown


def test_a_project_without_changes_says_so(documented: Engine) -> None:
    documented.apply(documented.validate({"service": "plain", "project": "calm"}))
    assert "No change records yet." in section(documented.settings.root, "calm")
