"""Steps of one run that start together on the same hosts share one ``ansible-playbook``.

A landscape's web, backup and monitoring steps start at the same moment, after the
baseline, on the same VMs. Run as three ``ansible-playbook`` processes they each pay
Ansible's start and exit and a new mitogen connection per host, and fight for the cores:
measured here, the three cost 10-12 s of CPU in parallel, the same three plays in one
process 6 s. So the Ansible steps of a run (with a session, :mod:`.ansible`) meet in a
:class:`Batches` (a run resource): the first step of a batch waits until the steps the
scheduler started with it (``StepContext.peers``) got there too (at most ``GATHER_MAX``; a
step started alone waits for nobody), and those whose hosts, check mode, strategy and
variables agree run as one playbook made of theirs, in the order they came:

    - name: infra step 1 web          # marker: events after it are the web step's
      hosts: all
      gather_facts: false
      tasks: [{ansible.builtin.meta: clear_host_errors}]
    - ansible.builtin.import_playbook: <root>/playbooks/web.yml
      vars: {infra_step_id: web, infra_department: web}
    - name: infra step 2 backup
      ...

Each marker clears the host errors of the steps before it, so a host that failed the web
play still gets the backup play, as it would in a process of its own. Each step's result
is read from the events after its marker (counts, failures, diffs, what ``set_stats``
reported), its log holds that part of Ansible's output. A step the process did not reach
(Ansible stops a playbook whose play failed on every host; a crash; a parse error of
another step's playbook) runs again alone, in its own thread: only its own outcome counts.
When the guard stopped the process at its timeout (the sum of the steps' timeouts), the
steps it had not finished fail with that timeout. ``INFRA_ANSIBLE_BATCH=0`` turns batching
off; without a session (``INFRA_ANSIBLE_SESSION=0``) there is none.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from infra_automation.exceptions import ConfigurationError
from infra_automation.results import StepResult

if TYPE_CHECKING:
    from infra_automation.departments.ansible import AnsibleJob
    from infra_automation.executors.base import StepContext

BATCH_ENV = "INFRA_ANSIBLE_BATCH"  # "0": every step its own ansible-playbook
BATCH_KEY = "ansible.batches"
GATHER_MAX = 2.0  # seconds a batch waits at most for the peers of its steps
IDENTITY_VARS = ("infra_step_id", "infra_department")  # per step: play vars, not extra vars
MARKER = "infra step "
STOPPED = ("timeout", "canceled")  # ansible-runner's status when the guard or runner stopped it


def run_batches(ctx: StepContext) -> Batches | None:
    """The run's batches, or None when ``INFRA_ANSIBLE_BATCH=0``."""
    raw = os.environ.get(BATCH_ENV, "1")
    if raw not in ("0", "1"):
        raise ConfigurationError(f"{BATCH_ENV}={raw!r}: expected 0 or 1")
    return None if raw == "0" else ctx.resources.get(BATCH_KEY, Batches)


@dataclass
class Member:
    job: AnsibleJob
    planned: tuple[str, ...]
    done: threading.Event = field(default_factory=threading.Event)
    result: StepResult | None = None  # None once done: the step runs alone
    # its extra vars but the identity ones, and the batch key: read once (secrets included)
    shared: dict[str, Any] = field(init=False)
    key: str = field(init=False)

    def __post_init__(self) -> None:
        extravars = self.job.extravars
        self.shared = {k: v for k, v in extravars.items() if k not in IDENTITY_VARS}
        self.key = batch_key(self.job, extravars["infra_host_passwords"])

    @property
    def step_id(self) -> str:
        return self.job.ctx.step_id


@dataclass
class Batch:
    members: list[Member] = field(default_factory=list)
    first: float = field(default_factory=time.monotonic)

    def expected(self) -> set[str]:
        """The steps that may still join: the members' peers (``StepContext.peers``)."""
        return {p for m in self.members for p in m.job.ctx.peers}

    def admits(self, member: Member) -> bool:
        """No variable the member shares with the batch has another value there."""
        for other in self.members:
            theirs = other.shared
            if any(theirs[k] != v for k, v in member.shared.items() if k in theirs):
                return False
        return True


class Batches:
    """Where the Ansible steps of one run meet (see the module's docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: dict[str, Batch] = {}
        self._arrived: set[str] = set()

    def arrive(self, step_id: str) -> None:
        """A step got here, joining a batch or not (an early failure): no one waits for it."""
        with self._cond:
            self._arrived.add(step_id)
            self._cond.notify_all()

    def run(self, job: AnsibleJob, planned: Sequence[str] = ()) -> StepResult:
        member = Member(job, tuple(planned))
        key = member.key
        with self._cond:
            batch = self._open.get(key)
            if batch is None or not batch.admits(member):
                batch = self._open[key] = Batch()
            batch.members.append(member)
            lead = batch.members[0] is member
            self._arrived.add(member.step_id)
            self._cond.notify_all()
        if lead:
            self._gather(key, batch)
            run_batch(batch.members)
        member.done.wait()
        if member.result is not None:
            return member.result
        if len(batch.members) > 1:
            job.reset("batch: the shared ansible-playbook did not finish this step: alone now\n")
        return job.run(planned)

    def _gather(self, key: str, batch: Batch) -> None:
        """Wait until every peer of the batch's steps got here (at most ``GATHER_MAX``)."""
        with self._cond:
            while not batch.expected() <= self._arrived:
                left = batch.first + GATHER_MAX - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._open.get(key) is batch:
                del self._open[key]


def batch_key(job: AnsibleJob, passwords: Mapping[str, str]) -> str:
    """Steps with the same key may share a process: the same hosts (and their connection
    variables), check mode, strategy and session."""
    from infra_automation.departments.ansible import build_inventory

    session = str(job.session.path) if job.session else ""
    hosts = build_inventory(job.hosts, set(passwords))
    return json.dumps([hosts, job.check, job.strategy.name, session], sort_keys=True)


def run_batch(members: Sequence[Member]) -> None:
    """Run the members' playbooks in one process and hand each its result; a member left
    without one runs alone."""
    try:
        if len(members) > 1:
            _run_together(members)
    finally:
        for member in members:
            member.done.set()


def marker(i: int, member: Member) -> str:
    return f"{MARKER}{i + 1} {member.step_id}"


def wrapper_playbook(members: Sequence[Member]) -> str:
    plays: list[dict[str, Any]] = []
    for i, member in enumerate(members):
        job = member.job
        plays.append(
            {
                "name": marker(i, member),
                "hosts": "all",
                "gather_facts": False,
                "tasks": [{"ansible.builtin.meta": "clear_host_errors"}],
            }
        )
        plays.append(
            {
                "ansible.builtin.import_playbook": str(job.playbook),
                "vars": {"infra_step_id": member.step_id, "infra_department": job.ctx.department},
            }
        )
    return yaml.safe_dump(plays, sort_keys=False)


class Router:
    """Hands each event to the step whose marker play came last before it."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.index = {marker(i, m): i for i, m in enumerate(members)}
        self.current: int | None = None
        self.in_marker = False  # a marker's own events count for no step
        self.ended = False  # the recap came: the playbook ran to its end

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.in_marker = data.get("play") in self.index
            if self.in_marker:
                self.current = self.index[str(data["play"])]
        if self.current is None:
            return False
        job = self.members[self.current].job
        if kind == "playbook_on_stats":  # the whole process's recap: no step's own
            self.ended = True
        if kind == "playbook_on_stats" or self.in_marker:
            job.output.append(str(event.get("stdout") or "") + "\n")
            return False
        return job.on_event(event)

    def finished(self, i: int) -> bool:
        """Member ``i``'s playbook ran to its end (or stopped, as it would have alone)."""
        if self.current is None or i > self.current:
            return False
        return i < self.current or self.ended


def _run_together(members: Sequence[Member]) -> None:
    lead = members[0].job
    steps = ", ".join(m.step_id for m in members)
    extravars: dict[str, Any] = {}
    for member in members:
        extravars |= member.shared
        member.job.output.append(f"batch: one ansible-playbook for the steps {steps}\n")
    strategy = lead.strategy
    for member in members[1:]:  # the lead's own line comes from its launch
        member.job.output.append(f"strategy: {strategy.name} ({strategy.note})\n")
    router = Router(members)
    launched = lead.launch(
        lead.playbook,
        extravars,
        router,
        timeout=sum(m.job.params.timeout for m in members),
        forks=max(m.job.params.forks for m in members),
        wrapper=wrapper_playbook(members),
    )
    if isinstance(launched, StepResult):
        return  # it did not start: each runs alone
    status, rc = launched
    for i, member in enumerate(members):
        if router.finished(i):
            member.result = member.job.result("successful", 0, member.planned)
        elif status in STOPPED:
            member.result = member.job.result(status, rc, member.planned)
        else:
            continue  # not reached, or the process died in it: alone, from the start
        member.job.write_log()
