"""Ansible steps of one run share one ``ansible-playbook``: those that start together on the
same hosts, and those that wait for them only.

A landscape's web, backup and monitoring steps start at the same moment, after the
baseline, on the same VMs. Run as three ``ansible-playbook`` processes they each pay
Ansible's start and exit and a new mitogen connection per host, and fight for the cores:
measured here, the three cost 10-12 s of CPU in parallel, the same three plays in one
process 6 s. And run after the baseline's process, they pay that start again, about 2 s
of the landscape's critical path. So the Ansible steps of a run (with a session,
:mod:`.ansible`) meet in a :class:`Batches` (a run resource): the first step of a batch
waits until the steps the scheduler started with it (``StepContext.peers``) got there too
(at most ``GATHER_MAX``; a step started alone waits for nobody), and those whose hosts,
check mode, strategy and variables agree run as one playbook made of theirs, in the order
they came, followed by the plays of their followers (``StepContext.followers``: the steps
that wait for them only, prepared now):

    - name: infra step 1 os_baseline  # marker: events after it are the baseline's
      hosts: all
      gather_facts: false
      tasks: [{ansible.builtin.meta: clear_host_errors}]
    - ansible.builtin.import_playbook: <root>/playbooks/os-baseline.yml
      vars: {infra_step_id: os_baseline, infra_department: os}
    - name: infra step 2 web          # a follower's marker is its gate
      hosts: all
      gather_facts: false
      vars: {infra_gate: "<until the gate file is written, at most GATHER_MAX: cat it>"}
      tasks:  # closed, it fails every host: Ansible ends the playbook there
        - {ansible.builtin.fail: ..., when: "lookup('pipe', infra_gate) != 'go'"}
        - ansible.builtin.meta: clear_host_errors
    - ansible.builtin.import_playbook: <root>/playbooks/web.yml
      ...

A step's result is read from the events after its marker (counts, failures, diffs, what
``set_stats`` reported; its log holds that part of Ansible's output) and handed to it as
soon as the next marker starts: the baseline's step ends while the process waits at the
web step's gate. A follower's gate opens ("go") only when the scheduler started that step
and its play, built again then, is the one prepared; it closes ("stop", or nothing written
in ``GATHER_MAX``) when the step it follows failed or it did not start, and the playbook
ends there. So no follower's play runs before the scheduler started its step, and none
after a failed need. Each marker clears the host errors of the steps before it, so a host
that failed the web play still gets the backup play, as it would in a process of its own.
A step the process did not reach (Ansible stops a playbook whose play failed on every host;
a closed gate; a crash; a parse error of another step's playbook) runs again alone, in its
own thread: only its own outcome counts. When the guard stopped the process at its timeout
(the sum of the steps' timeouts), the steps it had not finished fail with that timeout.
``INFRA_ANSIBLE_BATCH=0`` turns batching off; without a session (``INFRA_ANSIBLE_SESSION=0``)
there is none.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from infra_automation.exceptions import ConfigurationError
from infra_automation.results import Status, StepResult

if TYPE_CHECKING:
    from infra_automation.departments.ansible import AnsibleJob, AnsibleSession
    from infra_automation.executors.base import StepContext

BATCH_ENV = "INFRA_ANSIBLE_BATCH"  # "0": every step its own ansible-playbook
BATCH_KEY = "ansible.batches"
GATHER_MAX = 2.0  # seconds a batch waits at most for the peers of its steps, a gate for its step
GATE_POLL = 0.01  # seconds between two looks at a gate file
IDENTITY_VARS = ("infra_step_id", "infra_department")  # per step: play vars, not extra vars
MARKER = "infra step "
NOT_FINISHED = "batch: the shared ansible-playbook did not finish this step: alone now\n"
STOPPED = ("timeout", "canceled")  # ansible-runner's status when the guard or runner stopped it


def run_batches(ctx: StepContext) -> Batches | None:
    """The run's batches, or None when ``INFRA_ANSIBLE_BATCH=0``."""
    raw = os.environ.get(BATCH_ENV, "1")
    if raw not in ("0", "1"):
        raise ConfigurationError(f"{BATCH_ENV}={raw!r}: expected 0 or 1")
    return None if raw == "0" else ctx.resources.get(BATCH_KEY, Batches, Batches.close)


Followers = Callable[[], Sequence["AnsibleJob"]]


def _none() -> list[AnsibleJob]:
    return []


@dataclass
class Member:
    job: AnsibleJob
    planned: tuple[str, ...] = ()
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

    def agrees(self, others: Sequence[Member]) -> bool:
        """No variable it shares with ``others`` has another value there."""
        for other in others:
            theirs = other.shared
            if any(theirs[k] != v for k, v in self.shared.items() if k in theirs):
                return False
        return True


@dataclass
class Batch:
    members: list[Member] = field(default_factory=list)
    first: float = field(default_factory=time.monotonic)
    pipeline: Pipeline | None = None  # set by the lead once it is started (None: alone)
    started: threading.Event = field(default_factory=threading.Event)

    def expected(self) -> set[str]:
        """The steps that may still join: the members' peers (``StepContext.peers``)."""
        return {p for m in self.members for p in m.job.ctx.peers}


@dataclass
class Slot:
    """A step's place in a shared ``ansible-playbook``: its marker play, then its playbook."""

    index: int
    member: Member  # a follower's: as prepared until its step joins
    gate: Path | None = None  # a follower's gate file: "go" lets its play run
    decided: bool = False  # its gate file is written
    started: bool = False  # its own play began
    finished: bool = False  # its playbook ran to its end (or stopped, as it would alone)
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def marker(self) -> str:
        return marker(self.index, self.member)


class Pipeline:
    """One ``ansible-playbook`` for the slots' playbooks, in its own thread."""

    def __init__(
        self, slots: list[Slot], gates: Path | None, release: Callable[[Pipeline], None]
    ) -> None:
        self.slots = slots
        self.gates = gates
        self.release = release  # its places not taken are no longer offered
        self.status: str | None = None
        self.rc: int | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="infra-ansible-batch", daemon=True)

    def slot_of(self, member: Member) -> Slot:
        return next(s for s in self.slots if s.member is member)

    def _run(self) -> None:
        try:
            launched = _launch(self.slots)
            if isinstance(launched, tuple):
                self.status, self.rc = launched
        finally:
            with self.lock:
                for slot in self.slots:
                    slot.decided = True  # a gate not reached stays closed
            self.release(self)
            for slot in self.slots:
                slot.ended.set()
            if self.gates is not None:
                shutil.rmtree(self.gates, ignore_errors=True)

    def decide(self, slot: Slot, go: bool) -> None:
        """Write ``slot``'s gate once: "go" or "stop"."""
        with self.lock:
            if slot.decided or slot.gate is None:
                return
            slot.decided = True
            part = slot.gate.with_suffix(".part")
            part.write_text("go" if go else "stop")
            part.replace(slot.gate)

    def close(self, timeout: float) -> None:
        for slot in self.slots:
            self.decide(slot, go=False)
        self.thread.join(timeout)

    def outcome(self, slot: Slot) -> StepResult | None:
        """The slot's result once its part ended; None: not reached, it runs alone."""
        slot.ended.wait()
        job = slot.member.job
        if slot.finished:
            result = job.result("successful", 0, slot.member.planned)
        elif self.status in STOPPED:
            result = job.result(str(self.status), self.rc, slot.member.planned)
        else:
            return None
        job.write_log()
        if slot.index == 0 and result.status is not Status.SUCCESS:
            for other in self.slots:  # the followers wait for the lead: they will not start
                self.decide(other, go=False)
        return result


class Batches:
    """Where the Ansible steps of one run meet (see the module's docstring)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._open: dict[str, Batch] = {}
        self._arrived: set[str] = set()
        self._reserved: dict[str, tuple[Pipeline, Slot]] = {}  # follower step -> its place
        self._pipelines: list[Pipeline] = []

    def arrive(self, step_id: str) -> None:
        """A step got here, joining a batch or not (an early failure): no one waits for it,
        and a place prepared for it that it did not take closes now, not at its timeout."""
        with self._cond:
            self._arrived.add(step_id)
            self._cond.notify_all()
            reserved = self._reserved.pop(step_id, None)
        if reserved is not None:
            pipeline, slot = reserved
            pipeline.decide(slot, go=False)

    def run(
        self, job: AnsibleJob, planned: Sequence[str] = (), followers: Followers = _none
    ) -> StepResult:
        member = Member(job, tuple(planned))
        with self._cond:
            reserved = self._reserved.pop(member.step_id, None)
            if reserved is not None:  # no batch of its peers waits for it
                self._arrived.add(member.step_id)
                self._cond.notify_all()
        if reserved is not None:
            result = self._follow(*reserved, member)
        else:
            result = self._batch(member, followers)
        if result is not None:
            return result
        return job.run(planned)

    def _batch(self, member: Member, followers: Followers) -> StepResult | None:
        key = member.key
        with self._cond:
            batch = self._open.get(key)
            if batch is None or not member.agrees(batch.members):
                batch = self._open[key] = Batch()
            batch.members.append(member)
            lead = batch.members[0] is member
            self._arrived.add(member.step_id)
            self._cond.notify_all()
        if lead:
            try:
                self._gather(key, batch)
                batch.pipeline = self._start(batch.members, followers)
            finally:
                batch.started.set()
        batch.started.wait()
        if batch.pipeline is None:
            return None  # alone: the lead, with no one to share a process with
        result = batch.pipeline.outcome(batch.pipeline.slot_of(member))
        if result is None:
            member.job.reset(
                "batch: the shared ansible-playbook did not finish this step: alone now\n"
            )
        return result

    def _follow(self, pipeline: Pipeline, slot: Slot, member: Member) -> StepResult | None:
        """Take the place prepared for this step, if its play is still the one prepared."""
        prepared = slot.member
        same = (member.key, member.shared, member.job.playbook)
        if same != (prepared.key, prepared.shared, prepared.job.playbook):
            pipeline.decide(slot, go=False)
            member.job.output.append("batch: the play prepared for this step changed: alone\n")
            return None
        before = slot.member.job.output  # the marker's lines, if it came already
        slot.member = member
        member.job.output[:0] = before
        pipeline.decide(slot, go=True)
        result = pipeline.outcome(slot)
        if result is None:
            member.job.reset(
                "batch: the shared ansible-playbook did not run this step: alone now\n"
            )
        return result

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

    def _start(self, members: Sequence[Member], followers: Followers) -> Pipeline | None:
        """The process for ``members`` and the followers that fit with them, started; None
        when the lead is alone."""
        slots = [Slot(i, m) for i, m in enumerate(members)]
        session = members[0].job.session  # the same for all: it is in their key
        prepared = self._prepared(members, followers) if _gate_safe(session) else []
        gates = None
        if session is not None and prepared:
            gates = Path(tempfile.mkdtemp(prefix="gates-", dir=session.path))
            first = len(slots)
            slots += [Slot(first + i, f, gates / str(first + i)) for i, f in enumerate(prepared)]
        if len(slots) == 1:
            return None
        pipeline = Pipeline(slots, gates, self._release)
        with self._cond:
            for slot in slots[len(members) :]:
                self._reserved[slot.member.step_id] = (pipeline, slot)
            self._pipelines.append(pipeline)
        pipeline.thread.start()
        return pipeline

    def _prepared(self, members: Sequence[Member], followers: Followers) -> list[Member]:
        """The lead's followers, as prepared, that can share its process."""
        found: list[Member] = []
        for job in followers():
            follower = Member(job)
            if follower.key == members[0].key and follower.agrees([*members, *found]):
                found.append(follower)
        return found

    def _release(self, pipeline: Pipeline) -> None:
        with self._cond:
            for step_id, (theirs, _) in list(self._reserved.items()):
                if theirs is pipeline:
                    del self._reserved[step_id]

    def close(self) -> None:
        """The run ended: gates not decided close; wait for the processes (briefly)."""
        with self._cond:
            pipelines, self._pipelines = self._pipelines, []
            self._reserved.clear()
        for pipeline in pipelines:
            pipeline.close(timeout=GATHER_MAX + 30)


def _gate_safe(session: AnsibleSession | None) -> bool:
    """Gates live in the session; a gate's path is a play variable: Ansible must find no
    template in it."""
    return session is not None and not any(c in str(session.path) for c in "{}%#")


def batch_key(job: AnsibleJob, passwords: Mapping[str, str]) -> str:
    """Steps with the same key may share a process: the same hosts (and their connection
    variables), check mode, strategy and session."""
    from infra_automation.departments.ansible import build_inventory

    session = str(job.session.path) if job.session else ""
    hosts = build_inventory(job.hosts, set(passwords))
    return json.dumps([hosts, job.check, job.strategy.name, session], sort_keys=True)


def marker(i: int, member: Member) -> str:
    return f"{MARKER}{i + 1} {member.step_id}"


def gate_command(gate: Path) -> str:
    """Shell for Ansible's ``pipe`` lookup: the gate file's text once it is written, at
    most ``GATHER_MAX`` from now (then nothing: the gate stays closed)."""
    path = shlex.quote(str(gate))
    tries = int(GATHER_MAX / GATE_POLL)
    return (
        f"i=0; until [ -s {path} ] || [ $i -ge {tries} ]; do sleep {GATE_POLL}; i=$((i+1));"
        f" done; cat {path} 2>/dev/null || true"
    )


def wrapper_playbook(slots: Sequence[Slot]) -> str:
    plays: list[dict[str, Any]] = []
    for slot in slots:
        job = slot.member.job
        tasks: list[dict[str, Any]] = [{"ansible.builtin.meta": "clear_host_errors"}]
        play: dict[str, Any] = {"name": slot.marker, "hosts": "all", "gather_facts": False}
        if slot.gate is not None:
            play["vars"] = {"infra_gate": gate_command(slot.gate)}
            gate = {
                "name": "Wait until the step starts (its gate)",
                "ansible.builtin.fail": {"msg": "the step did not start: its gate closed"},
                "when": "lookup('ansible.builtin.pipe', infra_gate) != 'go'",
            }
            tasks.insert(0, gate)
        plays.append(play | {"tasks": tasks})
        plays.append(
            {
                "ansible.builtin.import_playbook": str(job.playbook),
                "vars": {
                    "infra_step_id": slot.member.step_id,
                    "infra_department": job.ctx.department,
                },
            }
        )
    return yaml.safe_dump(plays, sort_keys=False)


class Router:
    """Hands each event to the step whose marker play came last before it, and ends a
    step's part when the next marker starts or the recap comes."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        self.slots = list(slots)
        self.index = {s.marker: s.index for s in slots}
        self.current: int | None = None
        self.in_marker = False  # a marker's own events count for no step

    def __call__(self, event: Mapping[str, Any]) -> bool:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self._play(str(data.get("play")))
        if self.current is None:
            return False
        job = self.slots[self.current].member.job
        if kind == "playbook_on_stats" or self.in_marker:
            job.output.append(str(event.get("stdout") or "") + "\n")
            if kind == "playbook_on_stats":  # the whole process's recap: no step's own
                self._end()
            return False
        return job.on_event(event)

    def _play(self, name: str) -> None:
        self.in_marker = name in self.index
        if self.in_marker:
            self._end()
            self.current = self.index[name]
        elif self.current is not None:
            self.slots[self.current].started = True

    def _end(self) -> None:
        """The current step's part is over: it ran to its end if its play began."""
        if self.current is not None:
            slot = self.slots[self.current]
            if slot.started:
                slot.finished = True
                slot.ended.set()


def _launch(slots: Sequence[Slot]) -> tuple[str, int | None] | StepResult:
    members = [s.member for s in slots]
    lead = members[0].job
    steps = ", ".join(m.step_id for m in members)
    extravars: dict[str, Any] = {}
    for member in members:
        extravars |= member.shared
        member.job.output.append(f"batch: one ansible-playbook for the steps {steps}\n")
    strategy = lead.strategy
    for member in members[1:]:  # the lead's own line comes from its launch
        member.job.output.append(f"strategy: {strategy.name} ({strategy.note})\n")
    return lead.launch(
        extravars,
        Router(slots),
        timeout=sum(m.job.params.timeout for m in members),
        forks=max(m.job.params.forks for m in members),
        wrapper=wrapper_playbook(slots),
    )
