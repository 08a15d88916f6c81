"""The change records over the API, on a real ``infra server`` whose inventory and catalog
declare a change policy: submit through the gate (normal waits, standard and emergency run,
refusals are 409 naming why), list with filters and pages, show, approve by department (an
approval that completes the change runs it; a different dry run voids it), reject, export;
the roles of the portal; bad input named; secrets never in an answer."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from infra_automation.changes import ChangeService, State
from infra_automation.changes.model import canonical
from infra_automation.executors import register
from infra_automation.identity import Role
from infra_automation.secrets import remember
from infra_automation.server.policy import API
from tests.changes.change_helpers import FileExecutor
from tests.server.conftest import INVENTORY, PASSWORD, LiveServer, live_server, make_root

SECRET = "hunter2-very-secret"
SITE = {
    **INVENTORY,
    "change": {
        "approval": {
            "mode": "departments",
            "approvers": {"network": ["nina", "approver-user"], "vmware": ["approver-user"]},
        },
        "emergency": {"retrospective_hours": 6},
    },
}
SERVICES: list[dict[str, Any]] = [
    {
        "name": "landscape",
        "description": "A router line and a VM",
        "owner": "tests",
        "params": {
            "device": {"type": "string", "default": "core"},
            "vlan": {"type": "integer", "default": 100},
            "vm": {"type": "string", "default": "vm1"},
            "note": {"type": "string", "default": "plain"},
        },
        "steps": [
            {
                "id": "network",
                "department": "network",
                "executor": "testchg.file",
                "params": {
                    "device": "{{ params.device }}",
                    "content": "vlan {{ params.vlan }} {{ params.note }}",
                },
            },
            {
                "id": "vms",
                "department": "vmware",
                "executor": "core.noop",
                "needs": ["network"],
                "params": {"echo": {"names": ["{{ params.vm }}"]}},
            },
        ],
        "change": {"type": "normal", "risk": "high"},
    },
    {
        "name": "standard",
        "description": "Pre-approved",
        "owner": "tests",
        "params": {"vm": {"type": "string", "default": "s1"}},
        "steps": [
            {
                "id": "vms",
                "department": "vmware",
                "executor": "core.noop",
                "params": {"echo": {"names": ["{{ params.vm }}"]}},
            }
        ],
        "change": {"type": "standard", "risk": "low"},
    },
    {
        "name": "hotfix",
        "description": "Emergency",
        "owner": "tests",
        "steps": [{"id": "fix", "department": "os", "executor": "core.noop"}],
        "change": {"type": "emergency"},
    },
]


def served(base: Path, workers: int = 4) -> Iterator[LiveServer]:
    register("testchg.file", FileExecutor, replace=True)
    root = make_root(base)
    (root / "inventories" / "lab" / "inventory.yml").write_text(yaml.safe_dump(SITE))
    for service in SERVICES:
        (root / "catalog" / f"{service['name']}.yml").write_text(yaml.safe_dump(service))
    with live_server(root, workers=workers) as server:
        server.state.identity.add_user("nina", Role.APPROVER, PASSWORD)  # network only
        yield server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module: each test uses its own projects and devices (every change
    holds its project and device, so tests sharing one would refuse each other's changes)."""
    yield from served(tmp_path_factory.mktemp("changes-api") / "project")


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LiveServer]:
    yield from served(tmp_path / "project")


def client(live: LiveServer, role: Role | str) -> httpx.Client:
    """A client of a role's user, or of the user named ``role``."""
    if isinstance(role, Role):
        return live.client(role)
    token = live.state.identity.create_token(role, "tests").value
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=live.url, headers=headers, timeout=60)


def submit(
    live: LiveServer,
    name: str,
    role: Role = Role.ENGINEER,
    *,
    params: dict[str, Any] | None = None,
    **body: Any,
) -> httpx.Response:
    """Submit for project ``name``; a landscape's device and VM are named after it too."""
    body = {"service": "landscape", "project": name, **body}
    own = {"device": name, "vm": f"{name}-vm"} if body["service"] == "landscape" else {}
    body["params"] = {**own, **(params or {})}
    with client(live, role) as http:
        return http.post(f"{API}/requests/submit", json=body)


def device(live: LiveServer, name: str) -> Path:
    return live.state.engine.settings.root / "devices" / f"{name}.cfg"


def test_a_normal_change_waits_and_runs_once_each_department_approved(live: LiveServer) -> None:
    answer = submit(live, "normal")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["status"] == "awaiting approval" and body["run_id"] is None
    gate = body["change"]
    assert gate["decision"] == "waiting"
    assert gate["missing"] == ["department network", "department vmware"]
    change_id = gate["change"]["id"]
    assert body["change_url"] == f"{API}/changes/{change_id}"
    assert not device(live, "normal").exists()  # only the dry run ran

    with client(live, Role.VIEWER) as http:
        shown = http.get(f"{API}/changes/{change_id[:12]}").json()
    assert shown["state"] == "waiting" and shown["type"] == "normal" and shown["risk"] == "high"
    assert shown["requester"] == "engineer-user"
    assert set(shown["items"]) == {"project:normal", "device:normal", "vm:normal-vm"}
    network = next(s for s in shown["steps"] if s["department"] == "network")
    assert "+vlan 100 plain" in network["diff"] and network["changed"]
    assert shown["missing"] == ["department network", "department vmware"]

    with client(live, "nina") as http:
        first = http.post(f"{API}/changes/{change_id}/approve", json={"comment": "looks fine"})
    assert first.status_code == 200, first.text
    assert first.json()["missing"] == ["department vmware"]
    assert first.json()["run_id"] is None and first.json()["change"]["state"] == "waiting"

    with client(live, Role.APPROVER) as http:
        last = http.post(f"{API}/changes/{change_id}/approve").json()
    assert last["gate"]["decision"] == "run" and last["run_id"]
    run = live.wait_idle(last["run_id"])
    assert run["status"] == "success"
    assert device(live, "normal").read_text() == "vlan 100 plain\n"
    with client(live, Role.ENGINEER) as http:
        done = http.get(f"{API}/changes/{change_id}").json()
    assert done["state"] == "implemented" and done["run_id"] == last["run_id"]
    approvals = {(a["approver"], a["department"], a["sha256"]) for a in done["approvals"]}
    assert approvals == {  # she approves for every department she may: network again
        ("nina", "network", change_id),
        ("approver-user", "network", change_id),
        ("approver-user", "vmware", change_id),
    }
    assert [h["state"] for h in done["history"]] == [
        "waiting",
        "approved",
        "implementing",
        "implemented",
    ]


def test_the_requester_cannot_approve_her_own_change(live: LiveServer) -> None:
    request = live.state.engine.validate(
        {
            "service": "landscape",
            "project": "own",
            "requester": "approver-user",
            "params": {"device": "own", "vm": "own-vm"},
        }
    )
    change = ChangeService(live.state.engine).gate(request).change
    assert change is not None
    with client(live, Role.APPROVER) as http:
        answer = http.post(f"{API}/changes/{change.id}/approve")
    assert answer.status_code == 409
    body = answer.json()
    assert body["error"] == "refused" and "cannot approve" in body["message"]
    assert body["change"] == change.id and body["state"] == "waiting"


def test_an_approval_that_completes_a_changed_dry_run_voids_it(live: LiveServer) -> None:
    change_id = submit(live, "void").json()["change"]["change"]["id"]
    with client(live, "nina") as http:
        assert http.post(f"{API}/changes/{change_id}/approve").status_code == 200
    device(live, "void").parent.mkdir(exist_ok=True)
    device(live, "void").write_text("vlan 7 out of band\n")
    with client(live, Role.APPROVER) as http:
        answer = http.post(f"{API}/changes/{change_id}/approve").json()
    assert answer["gate"]["decision"] == "voided" and answer["run_id"] is None
    assert answer["gate"]["voided"] == change_id
    assert answer["change"]["state"] == "voided"
    new = answer["gate"]["change"]
    assert new["state"] == "waiting" and new["id"] != change_id
    assert device(live, "void").read_text() == "vlan 7 out of band\n"  # nothing ran
    with client(live, Role.VIEWER) as http:
        old = http.get(f"{API}/changes/{change_id}").json()
    assert all(a["voided_at"] and not a["counts"] for a in old["approvals"])


def test_a_rejected_change_can_never_run(live: LiveServer) -> None:
    change_id = submit(live, "reject").json()["change"]["change"]["id"]
    with client(live, Role.APPROVER) as http:
        rejected = http.post(f"{API}/changes/{change_id}/reject", json={"comment": "not now"})
        assert rejected.status_code == 200 and rejected.json()["change"]["state"] == "rejected"
        again = http.post(f"{API}/changes/{change_id}/approve")
    assert again.status_code == 409 and "can never run" in again.json()["message"]
    resubmitted = submit(live, "reject")
    assert resubmitted.status_code == 409
    assert "rejected by approver-user: not now" in resubmitted.json()["message"]
    assert not device(live, "reject").exists()


def test_a_change_rejected_after_the_gate_does_not_run(live: LiveServer) -> None:
    """Between the gate that lets a change run and its run's start: the claim refuses it."""
    from infra_automation.changes import ChangeRefused
    from infra_automation.server.runner import change_job

    engine = live.state.engine
    changes = ChangeService(engine)
    request = engine.validate({"service": "standard", "project": "claim", "requester": "jane"})
    outcome = changes.gate(request)
    assert outcome.change is not None and outcome.plan is not None
    job = change_job(engine, changes, outcome.plan, outcome.change.id)
    assert changes.reject(outcome.change.id, "jane", comment="withdrawn").accepted
    runs_before = len(engine.store.list_runs())
    with pytest.raises(ChangeRefused, match="rejected"):
        job()
    assert len(engine.store.list_runs()) == runs_before  # nothing was recorded, nothing ran


def test_a_change_rejected_while_its_run_is_queued_never_runs(tmp_path: Path) -> None:
    """The run of a standard change waits behind a busy worker; rejected meanwhile, the
    claim at its start refuses it: recorded failed, nothing ran, the change stays rejected."""
    with contextmanager(served)(tmp_path / "project", workers=1) as one:
        engine = one.state.engine
        data = {"service": "slow", "project": "claim-busy", "requester": "tests"}
        slow = engine.plan(engine.validate({**data, "params": {"pause": 1.0}}))
        busy = one.state.runs.submit(slow)  # holds the only worker for five seconds
        answer = submit(one, "claim-queued", service="standard", params={"vm": "queued-vm"})
        assert answer.status_code == 202 and answer.json()["status"] == "queued", answer.text
        run_id, change = answer.json()["run_id"], answer.json()["change"]["change"]["id"]
        with client(one, Role.APPROVER) as http:
            assert http.get(f"{API}/runs/{run_id}").json()["status"] == "queued"
            rejected = http.post(f"{API}/changes/{change}/reject", json={"comment": "withdrawn"})
        assert rejected.status_code == 200 and rejected.json()["change"]["state"] == "rejected"
        run = one.wait_idle(run_id, timeout=60)
        assert busy is not None and one.wait_idle(busy, timeout=60)["status"] == "success"
        with client(one, Role.VIEWER) as http:
            kinds = [e["kind"] for e in http.get(f"{API}/runs/{run_id}/events").json()["events"]]
        view = ChangeService(engine).store.get(change)
    assert run["status"] == "failed" and "rejected" in run["error"], run["error"]
    assert [s["status"] for s in run["steps"]] == ["pending"]  # nothing ran
    assert kinds == ["run.queued", "run.finished"]
    assert view.state is State.REJECTED and view.run_id is None


def test_standard_and_emergency_changes_run_at_once(live: LiveServer) -> None:
    standard = submit(live, "std", service="standard", params={"vm": "std-vm"})
    assert standard.status_code == 202 and standard.json()["status"] == "queued"
    assert live.wait_idle(standard.json()["run_id"])["status"] == "success"
    emergency = submit(live, "hotfix", service="hotfix").json()
    assert emergency["status"] == "queued" and emergency["change"]["change"]["flagged"]
    live.wait_idle(emergency["run_id"])
    hotfix = emergency["change"]["change"]["id"]
    with client(live, Role.VIEWER) as http:
        query = {"flagged": "true", "project": "hotfix"}
        flagged = http.get(f"{API}/changes", params=query).json()["changes"]
        assert [c["id"] for c in flagged] == [hotfix]
        assert flagged[0]["state"] == "implemented"
    with client(live, Role.APPROVER) as http:
        retro = http.post(f"{API}/changes/{hotfix}/approve", json={"comment": "ok after all"})
    assert retro.status_code == 200 and not retro.json()["change"]["flagged"]
    assert "retrospective approval" in retro.json()["reason"]
    with client(live, Role.VIEWER) as http:
        assert http.get(f"{API}/changes", params=query).json()["changes"] == []
        details = http.get(f"{API}/changes/{hotfix}").json()
    assert details["retrospective_by"] == "approver-user"


def test_a_conflicting_change_is_refused_naming_the_first(live: LiveServer) -> None:
    first = submit(live, "conflict", params={"vm": "web1"}).json()["change"]["change"]["id"]
    second = submit(live, "conflict-two", service="standard", params={"vm": "web1"})
    assert second.status_code == 409
    body = second.json()
    assert body["error"] == "refused" and body["conflict"] == first
    assert first[:12] in body["message"] and "vm:web1" in body["message"]


def test_only_engineers_override_the_change_type(live: LiveServer) -> None:
    refused = submit(live, "alpha", Role.TAM, change_type="emergency")
    assert refused.status_code == 403
    assert refused.json()["fields"][0]["field"] == "change_type"
    allowed = submit(live, "override", Role.ENGINEER, change_type="emergency")
    assert allowed.status_code == 202 and allowed.json()["status"] == "queued"
    assert allowed.json()["change"]["change"]["type"] == "emergency"
    live.wait_idle(allowed.json()["run_id"])


def test_listing_filters_pages_and_a_tams_projects(fresh: LiveServer) -> None:
    live = fresh  # its own server: the counts are of its changes only
    # the three share device:core: the first waits, the others are refused naming it
    core = {"device": "core"}
    answers = [submit(live, p, params=core) for p in ("alpha", "beta", "gamma")]
    assert [a.status_code for a in answers] == [202, 409, 409]
    with client(live, Role.VIEWER) as http:
        everything = http.get(f"{API}/changes").json()
        assert len(everything["changes"]) == 3 and everything["next_cursor"] is None
        first = http.get(f"{API}/changes", params={"limit": 2}).json()
        rest = http.get(f"{API}/changes", params={"limit": 2, "cursor": first["next_cursor"]})
        paged = [c["id"] for c in first["changes"] + rest.json()["changes"]]
        assert paged == [c["id"] for c in everything["changes"]]
        only = http.get(f"{API}/changes", params={"status": "waiting"}).json()["changes"]
        assert [c["project"] for c in only] == ["alpha"]
        refused = http.get(f"{API}/changes", params={"status": "refused", "project": "beta"})
        assert [c["project"] for c in refused.json()["changes"]] == ["beta"]
    with client(live, Role.TAM) as http:
        mine = http.get(f"{API}/changes").json()["changes"]
        assert {c["project"] for c in mine} == {"alpha"}
        beta = next(c for c in everything["changes"] if c["project"] == "beta")
        denied = http.get(f"{API}/changes/{beta['id']}")
        assert denied.status_code == 403 and "not assigned to project 'beta'" in denied.text


def test_the_export_is_the_itsm_document_of_the_hashed_record(live: LiveServer) -> None:
    change_id = submit(live, "export").json()["change"]["change"]["id"]
    with client(live, Role.ENGINEER) as http:
        doc = http.get(f"{API}/changes/{change_id}/export").json()
    assert doc["schema"] == "infra-automation/change/v1" and doc["number"] == change_id
    assert hashlib.sha256(canonical(doc["content"]).encode()).hexdigest() == change_id
    assert doc["work_notes"][0]["to"] == "waiting" and "from" in doc["work_notes"][0]
    assert {i["kind"] for i in doc["cmdb_ci"]} == {"project", "device", "vm"}


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/changes/not-a-hash", None, "change_id"),
        ("GET", "/changes/abc", None, "change_id"),
        ("GET", "/changes?status=open", None, "status"),
        ("GET", "/changes?cursor=zzz", None, "cursor"),
        ("GET", "/changes?limit=0", None, "limit"),
        ("POST", "/changes/{id}/approve", {"comment": "two\nlines"}, "comment"),
        ("POST", "/changes/{id}/approve", {"department": "Net work"}, "department"),
        ("POST", "/changes/{id}/reject", {"why": "x"}, "why"),
        ("POST", "/requests/submit", {"service": "landscape", "project": "alpha", "change": "x"},
         "change"),
        ("POST", "/requests/submit",
         {"service": "landscape", "project": "alpha", "change_type": "urgent"}, "change_type"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(
    live: LiveServer, method: str, path: str, body: Any, field: str
) -> None:
    change_id = "ab" * 32
    role = Role.ENGINEER if path.startswith("/requests") else Role.APPROVER
    with client(live, role) as http:
        answer = http.request(method, API + path.format(id=change_id), json=body)
    assert answer.status_code == 422, answer.text
    assert field in [f["field"] for f in answer.json()["fields"]]


def test_an_unknown_change_is_404(live: LiveServer) -> None:
    with client(live, Role.APPROVER) as http:
        answer = http.post(f"{API}/changes/{'0' * 64}/approve")
    assert answer.status_code == 404 and "no change" in answer.json()["message"]


def test_secrets_never_reach_an_answer(live: LiveServer) -> None:
    remember(SECRET)
    change_id = submit(live, "secret", params={"note": SECRET}).json()["change"]["change"]["id"]
    with client(live, Role.ENGINEER) as http:
        bodies = [
            http.get(f"{API}/changes").text,
            http.get(f"{API}/changes/{change_id}").text,
            http.get(f"{API}/changes/{change_id}/export").text,
        ]
    for text in bodies:
        assert SECRET not in text
    shown = json.loads(bodies[1])
    network = next(s for s in shown["steps"] if s["department"] == "network")
    assert "+vlan 100 ********" in network["diff"]


def test_a_service_no_policy_governs_runs_as_before(tmp_path: Path) -> None:
    with live_server(make_root(tmp_path / "plain")) as plain:
        with plain.client(Role.ENGINEER) as http:
            request = {"service": "quick", "project": "alpha"}
            body = http.post(f"{API}/requests/submit", json=request)
        assert body.status_code == 202 and body.json()["status"] == "queued"
        assert body.json()["change"] is None
        plain.wait_idle(body.json()["run_id"])
        assert ChangeService(plain.state.engine).store.changes() == []


def test_the_state_history_reaches_the_projects_docs(live: LiveServer) -> None:
    change_id = submit(live, "docs").json()["change"]["change"]["id"]
    with client(live, "nina") as http:
        http.post(f"{API}/changes/{change_id}/approve", json={"comment": "network ok"})
    history = live.state.engine.settings.root / "docs" / "projects" / "docs" / "history.md"
    page = history.read_text()
    section = page.split("<!-- BEGIN CHANGES -->")[1].split("<!-- END CHANGES -->")[0]
    assert f"`{change_id[:12]}`" in section and "waiting" in section
    assert "| nina | approved | network |" in section
    assert ChangeService(live.state.engine).store.get(change_id).state is State.WAITING


def test_the_remote_cli_exits_3_while_the_change_waits_and_4_once_refused(
    live: LiveServer, tmp_path: Path
) -> None:
    request = tmp_path / "remote.yml"
    params = {"device": "remote", "vm": "remote-vm"}
    request.write_text(
        yaml.safe_dump({"service": "landscape", "project": "remote", "params": params})
    )
    env = {**os.environ, "INFRA_TOKEN": live.tokens[Role.ENGINEER]}
    argv = [sys.executable, "-m", "infra_automation.cli", "--server", live.url, "apply"]

    def remote() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*argv, str(request)], capture_output=True, text=True, env=env, timeout=120
        )

    waiting = remote()
    assert waiting.returncode == 3, waiting.stdout + waiting.stderr
    assert "awaiting approval" in waiting.stderr and "waits for approval" in waiting.stderr
    with client(live, Role.VIEWER) as http:
        [found] = http.get(f"{API}/changes", params={"project": "remote"}).json()["changes"]
    with client(live, Role.APPROVER) as http:
        assert http.post(f"{API}/changes/{found['id']}/reject").status_code == 200
    refused = remote()
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "rejected by approver-user" in " ".join(refused.stderr.split())
