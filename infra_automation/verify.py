"""Verify: does the live landscape still match what the project's record says exists?

``infra verify`` reads, for every step the record says built something, the live state
**read-only** through that step's :class:`Verifier` and compares it with what the step
recorded. Each resource comes back as one :class:`ResourceCheck`:

- ``in-sync``: found as recorded;
- ``drifted``: found, but different (``expected`` vs ``found``, :attr:`ResourceCheck.diff`);
- ``unverifiable``: it could not be checked (target unreachable, no verifier for the
  executor, params that no longer render) — never counted as in sync.

Where the verifier of a step comes from, first match wins: a ``verify(ctx)`` method of the
executor itself (next to ``preview`` and ``apply``); a verifier registered for the executor
key in :data:`VERIFIERS` (``register()`` or the ``infra_automation.verifiers`` entry-point
group, ``"<executor key>" = "module:Factory"``); otherwise the step is ``unverifiable``.

*Recorded state*: the project's latest applied (not check-mode) run defines the plan; each
step's outputs are those of the newest applied run in which it succeeded, since the last
successful decommission. Params and targets are rendered from those outputs exactly as a run
would render them, so a verifier sees the same typed params as ``apply`` did.

*Recording*: a verification is a sequence of events in the run record (through
:class:`~infra_automation.record.RunRecorder`), under its own id (``verify-…``), which never
appears in the runs table: ``verify.started`` (project, based_on: run ids, steps),
``verify.resource`` per check (step id set; department, executor, resource, target, state,
expected, found, diff, reason, error_kind) and ``verify.finished`` (project, state, counts,
the checks that are not in sync, started_at, finished_at, duration). Observers (the docs)
see the same events. :func:`latest_verifications` reads them back.

*Drift webhook*: with ``drift_webhook`` in ``infra.toml``, a recorded verification posts
drift that appears or changes, and the return to in sync
(:mod:`infra_automation.verify_webhook`). *On a schedule*: ``verify_every`` and
``infra worker --beat`` (:mod:`infra_automation.workers.beat`).

*Exit codes* (:meth:`VerifyReport.exit_code`): 0 every resource in sync, 3 something drifted
(even if other resources are unverifiable: a known difference comes first), 1 nothing drifted
but something could not be verified (or the verification itself failed); the CLI uses 2 for
invalid input (unknown project, bad option) as everywhere else.
"""

from __future__ import annotations

import difflib
import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from infra_automation.catalog import Modifies, TargetSelection
from infra_automation.events import Event, Observer, utcnow
from infra_automation.exceptions import ConfigurationError, InfraError
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.executors.built import since_decommission, with_changes
from infra_automation.executors.registry import REGISTRY, ExecutorRegistry
from infra_automation.planner import Plan, PlannedStep
from infra_automation.record import RunRecord, RunRecorder, RunStore
from infra_automation.record import StepRecord as RecordedRun
from infra_automation.record import events as events_table
from infra_automation.record import runs as runs_table
from infra_automation.registry import EntryPointRegistry
from infra_automation.render import render_value
from infra_automation.results import ErrorKind, error_kind_of
from infra_automation.scheduler import base_variables
from infra_automation.validation import check_safe_text

if TYPE_CHECKING:
    from infra_automation.engine import Engine
    from infra_automation.inventory import Inventory

log = logging.getLogger(__name__)
ENTRY_POINT_GROUP = "infra_automation.verifiers"
HISTORY_LIMIT = 200  # runs of a project looked at for its recorded state
EXIT_IN_SYNC, EXIT_ERROR, EXIT_DRIFTED = 0, 1, 3


class SyncState(enum.StrEnum):
    IN_SYNC = "in-sync"
    DRIFTED = "drifted"
    UNVERIFIABLE = "unverifiable"


@dataclass(frozen=True)
class ResourceCheck:
    """One resource compared with the record. ``expected``/``found`` are text (one fact per
    line) so that :attr:`diff` can show what differs; ``reason`` says why in one line."""

    resource: str
    state: SyncState
    target: str = ""
    expected: str = ""
    found: str = ""
    reason: str = ""
    error_kind: ErrorKind | None = None
    # filled in by the orchestrator
    step_id: str = ""
    department: str = ""
    executor: str = ""

    @classmethod
    def in_sync(cls, resource: str, *, target: str = "", expected: str = "") -> ResourceCheck:
        return cls(resource, SyncState.IN_SYNC, target, expected, expected)

    @classmethod
    def drifted(
        cls, resource: str, *, expected: str, found: str, target: str = "", reason: str = ""
    ) -> ResourceCheck:
        return cls(resource, SyncState.DRIFTED, target, expected, found, reason)

    @classmethod
    def unverifiable(
        cls,
        resource: str,
        reason: str,
        *,
        target: str = "",
        kind: ErrorKind | None = None,
    ) -> ResourceCheck:
        return cls(resource, SyncState.UNVERIFIABLE, target, reason=reason, error_kind=kind)

    @classmethod
    def compare(
        cls, resource: str, expected: str, found: str, *, target: str = "", reason: str = ""
    ) -> ResourceCheck:
        """``in-sync`` if the texts are equal, else ``drifted``."""
        if expected == found:
            return cls.in_sync(resource, target=target, expected=expected)
        return cls.drifted(resource, expected=expected, found=found, target=target, reason=reason)

    @property
    def diff(self) -> str:
        """``expected`` vs ``found`` as a unified diff (empty unless drifted)."""
        if self.state is not SyncState.DRIFTED:
            return ""
        lines = difflib.unified_diff(
            self.expected.splitlines(),
            self.found.splitlines(),
            fromfile="expected",
            tofile="found",
            lineterm="",
            n=2,
        )
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_id": self.step_id,
            "department": self.department,
            "executor": self.executor,
            "resource": self.resource,
            "target": self.target,
            "state": self.state.value,
            "expected": self.expected,
            "found": self.found,
            "diff": self.diff,
            "reason": self.reason,
            "error_kind": self.error_kind.value if self.error_kind else None,
        }


def worst(states: Iterable[SyncState]) -> SyncState:
    """Drifted beats unverifiable beats in-sync; nothing checked is unverifiable."""
    seen = set(states)
    if not seen:
        return SyncState.UNVERIFIABLE
    for state in (SyncState.DRIFTED, SyncState.UNVERIFIABLE):
        if state in seen:
            return state
    return SyncState.IN_SYNC


@dataclass(frozen=True)
class VerifyResult:
    """What one step's verifier found: one check per resource."""

    checks: tuple[ResourceCheck, ...] = ()

    @classmethod
    def of(cls, *checks: ResourceCheck) -> VerifyResult:
        return cls(tuple(checks))

    @classmethod
    def unverifiable(
        cls, resource: str, reason: str, kind: ErrorKind | None = None
    ) -> VerifyResult:
        return cls((ResourceCheck.unverifiable(resource, reason, kind=kind),))

    @property
    def state(self) -> SyncState:
        return worst(c.state for c in self.checks)


@dataclass(frozen=True)
class VerifyContext:
    """What a verifier gets: the step's context (params rendered from the record, targets,
    inventory, secrets, shared connections), and what the step recorded."""

    step: StepContext
    executor: str
    recorded: Mapping[str, Any]  # the step's outputs in the run that built it
    recorded_targets: tuple[Mapping[str, Any], ...] = ()
    built_by: str = ""  # that run's id

    def typed_params(self, model: type[Any]) -> Any:
        return self.step.typed_params(model)


@runtime_checkable
class Verifier(Protocol):
    """Reads the live state of what a step built, read-only, and compares it."""

    def verify(self, ctx: VerifyContext) -> VerifyResult: ...


# --------------------------------------------------------------------------- registry


# The verifiers of the package's own executors ("module:factory", imported only when used);
# third parties add theirs through the entry-point group, which may also replace these.
BUILTIN = {
    "ipam.allocate": "infra_automation.verify_network:ipam",
    "network.configure": "infra_automation.verify_network:routers",
    "vmware.folder": "infra_automation.verify_vmware:folder",
    "vmware.portgroup": "infra_automation.verify_vmware:portgroup",
    "vmware.vms": "infra_automation.verify_vmware:vms",
    "os.playbook": "infra_automation.verify_os:playbook",
}


class VerifierRegistry:
    """Verifiers by executor key, fed by :meth:`register`, :data:`BUILTIN` and the
    entry-point group (:class:`~infra_automation.registry.EntryPointRegistry`)."""

    def __init__(self, *, use_entry_points: bool = True) -> None:
        self._factories = EntryPointRegistry[Callable[[], Verifier]](
            ENTRY_POINT_GROUP, "verifier", defaults=BUILTIN, use_entry_points=use_entry_points
        )

    def register(self, key: str, factory: Callable[[], Verifier], *, replace: bool = False) -> None:
        self._factories.register(key, factory, replace=replace)

    def unregister(self, key: str) -> None:
        self._factories.unregister(key)

    def get(self, key: str) -> Verifier | None:
        """A verifier for executor ``key``, or None when nobody ships one."""
        factory = self._factories.find(key)
        return factory() if factory is not None else None


VERIFIERS = VerifierRegistry()


def register(key: str, factory: Callable[[], Verifier], *, replace: bool = False) -> None:
    VERIFIERS.register(key, factory, replace=replace)


# --------------------------------------------------------------------------- recorded state


@dataclass(frozen=True)
class RecordedStep:
    """A planned step and the recorded success that says what it built."""

    step: PlannedStep
    record: RecordedRun
    run_id: str


@dataclass(frozen=True)
class RecordedState:
    project: str
    plan: Plan | None
    steps: tuple[RecordedStep, ...]
    based_on: tuple[str, ...]  # the runs whose outputs are verified
    not_built: tuple[str, ...] = ()  # planned steps with no recorded success
    note: str = ""


def recorded_state(engine: Engine, project: str) -> RecordedState:
    """What the record says exists for ``project`` (ConfigurationError: no applied run)."""
    store = engine.store
    listed = [r for r in store.list_runs(project, limit=HISTORY_LIMIT) if not r.check]
    if not listed:
        raise ConfigurationError(f"--project: no applied run of {project!r} in the record")
    since = since_decommission(listed)
    if not since:
        return RecordedState(project, None, (), (listed[0].id,), note="decommissioned")
    build, request = built_request(engine, since)
    plan = engine.plan(engine.validate(request, source=f"run {build.id}"))
    done = _successes(store, since)
    steps = tuple(RecordedStep(s, done[s.id][1], done[s.id][0]) for s in plan.steps if s.id in done)
    based_on = tuple(dict.fromkeys(r.run_id for r in steps))
    missing = tuple(s.id for s in plan.steps if s.id not in done)
    return RecordedState(project, plan, steps, based_on, missing)


def built_request(engine: Engine, runs: Sequence[RunRecord]) -> tuple[RunRecord, Mapping[str, Any]]:
    """The run that built the project (newest first in ``runs``: the newest run of a service
    that is no operational change) and its request with the params that the successful
    changes since (a service with ``modifies`` naming it: scale, resize) set since.

    Without such a build among ``runs``, the newest run and its request as they are."""
    changes: list[tuple[RunRecord, Modifies]] = []
    for run in runs:
        modifies = engine.modifies(run.service)  # None: a build
        if modifies is None:
            return run, _with_changes(run, changes)
        if run.status == "success":
            changes.append((run, modifies))
    return runs[0], runs[0].request


def _with_changes(
    build: RunRecord, changes: Sequence[tuple[RunRecord, Modifies]]
) -> Mapping[str, Any]:
    params, _ = with_changes(build, changes)
    return {**build.request, "params": params}


def has_recorded_state(engine: Engine, project: str) -> bool:
    """Whether the record says ``project`` has something to verify: an applied run since
    its last successful decommission (the scheduled verify passes over the others)."""
    listed = [r for r in engine.store.list_runs(project, limit=HISTORY_LIMIT) if not r.check]
    return bool(since_decommission(listed))


def _successes(store: RunStore, runs: Sequence[RunRecord]) -> dict[str, tuple[str, RecordedRun]]:
    """Step id -> (run id, record) of the newest successful execution of that step."""
    found: dict[str, tuple[str, RecordedRun]] = {}
    for listed in runs:
        run = store.get_run(listed.id)
        for step in run.steps:
            if step.status == "success" and step.step_id not in found:
                found[step.step_id] = (run.id, step)
    return found


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class StepVerification:
    step_id: str
    department: str
    executor: str
    checks: tuple[ResourceCheck, ...]
    duration: float = 0.0

    @property
    def state(self) -> SyncState:
        return worst(c.state for c in self.checks)


@dataclass(frozen=True)
class VerifyReport:
    verify_id: str
    project: str
    started_at: datetime
    finished_at: datetime
    steps: tuple[StepVerification, ...] = ()
    based_on: tuple[str, ...] = ()
    not_built: tuple[str, ...] = ()
    note: str = ""
    error: str | None = None  # the verification itself failed (e.g. the record)

    @property
    def checks(self) -> tuple[ResourceCheck, ...]:
        return tuple(c for s in self.steps for c in s.checks)

    @property
    def state(self) -> SyncState:
        if self.error:
            return worst([SyncState.UNVERIFIABLE, *(c.state for c in self.checks)])
        if not self.steps and self.note == "decommissioned":
            return SyncState.IN_SYNC
        return worst(c.state for c in self.checks)

    def counts(self) -> dict[str, int]:
        counted = {state.value: 0 for state in SyncState}
        for check in self.checks:
            counted[check.state.value] += 1
        return counted

    @property
    def duration(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def exit_code(self) -> int:
        return {SyncState.IN_SYNC: EXIT_IN_SYNC, SyncState.DRIFTED: EXIT_DRIFTED}.get(
            self.state, EXIT_ERROR
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "verify_id": self.verify_id,
            "project": self.project,
            "state": self.state.value,
            "counts": self.counts(),
            "based_on": list(self.based_on),
            "not_built": list(self.not_built),
            "note": self.note,
            "error": self.error,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration": round(self.duration, 3),
            "steps": [
                {
                    "step_id": s.step_id,
                    "department": s.department,
                    "executor": s.executor,
                    "state": s.state.value,
                    "duration": round(s.duration, 3),
                    "checks": [c.to_dict() for c in s.checks],
                }
                for s in self.steps
            ],
        }


# --------------------------------------------------------------------------- the orchestrator


@dataclass
class Verification:
    """Verifies one project: reads its recorded state, runs each step's verifier (in
    parallel, read-only) and records the outcome as ``verify.*`` events."""

    engine: Engine
    registry: ExecutorRegistry = REGISTRY
    verifiers: VerifierRegistry = VERIFIERS
    observers: Sequence[Observer] = ()
    parallel: int = 8
    record: bool = True
    webhook: bool = True  # post drift to ``drift_webhook`` (recorded verifications only)
    _resources: RunResources = field(default_factory=RunResources)

    def run(self, project: str) -> VerifyReport:
        """Verify ``project`` (ConfigurationError before anything is recorded if the record
        holds no applied run of it)."""
        state = recorded_state(self.engine, project)
        verify_id = new_verify_id()
        recorder = RunRecorder(self.engine.db) if self.record else None
        emit = _Emitter(verify_id, recorder, self._observers())
        started = utcnow()
        emit("verify.started", _started_payload(state))
        results: tuple[StepVerification, ...] = ()
        error: str | None = None
        try:
            results = self._verify_all(state, verify_id, emit)
        except InfraError as exc:
            error = str(exc)
        finally:
            self._resources.close()
        report = VerifyReport(
            verify_id, project, started, utcnow(), results, state.based_on,
            state.not_built, state.note, error or emit.error,
        )  # fmt: skip
        emit("verify.finished", _finished_payload(report))
        if recorder is not None:
            recorder.close()
        return report if emit.error is None else replace(report, error=emit.error)

    def _observers(self) -> list[Observer]:
        """The caller's observers, then the drift webhook when one is configured."""
        settings = self.engine.settings
        if not (self.webhook and self.record and settings.drift_webhook):
            return list(self.observers)
        from infra_automation.verify_webhook import observers_for  # httpx only when used

        return [*self.observers, *observers_for(settings, self.engine.db)]

    def _verify_all(
        self, state: RecordedState, verify_id: str, emit: _Emitter
    ) -> tuple[StepVerification, ...]:
        if state.plan is None or not state.steps:
            return ()
        outputs = {r.step.id: r.record.outputs for r in state.steps}
        scope = _Scope(
            plan=state.plan,
            inventory=self.engine.inventory(state.plan.request),
            outputs=outputs,
            variables=base_variables(state.plan, outputs),
            verify_id=verify_id,
        )
        workers = max(1, min(self.parallel, len(state.steps)))

        def one(recorded: RecordedStep) -> StepVerification:
            done = self._verify_step(recorded, scope)
            for check in done.checks:
                emit("verify.resource", check.to_dict(), step_id=done.step_id)
            return done

        with ThreadPoolExecutor(workers, thread_name_prefix="infra-verify") as pool:
            return tuple(pool.map(one, state.steps))

    def _verify_step(self, recorded: RecordedStep, scope: _Scope) -> StepVerification:
        step = recorded.step
        begun = time.monotonic()
        try:
            result = self._call(recorded, scope)
        except Exception as exc:  # the step boundary: a verifier never aborts the others
            reason = f"{type(exc).__name__}: {exc}"
            result = VerifyResult.unverifiable(step.id, reason, error_kind_of(exc))
        if not isinstance(result, VerifyResult):
            name = type(result).__name__
            result = VerifyResult.unverifiable(step.id, f"verifier returned {name}")
        if not result.checks:
            result = VerifyResult.unverifiable(step.id, "the verifier checked nothing")
        checks = tuple(
            replace(c, step_id=step.id, department=step.department, executor=step.executor)
            for c in result.checks
        )
        return StepVerification(
            step.id, step.department, step.executor, checks, time.monotonic() - begun
        )

    def _call(self, recorded: RecordedStep, scope: _Scope) -> VerifyResult:
        step = recorded.step
        verifier = self._verifier(step.executor)
        if verifier is None:
            reason = f"{step.executor} has no verify (the executor cannot check its resources)"
            return VerifyResult.unverifiable(step.id, reason)
        try:
            info = self.registry.info(step.executor)
            rendered = render_value(step.params, scope.variables, f"steps.{step.id}.params")
            params = info.params.model_validate(rendered)
            targets = step_targets(step, scope.variables, scope.inventory)
        except ValidationError as exc:
            reason = f"params from the record no longer validate ({exc.error_count()} errors)"
            return VerifyResult.unverifiable(step.id, reason, ErrorKind.INVALID)
        except (InfraError, ValueError) as exc:
            return VerifyResult.unverifiable(step.id, str(exc), ErrorKind.INVALID)
        ctx = VerifyContext(
            step=self._context(step, scope, params, targets),
            executor=step.executor,
            recorded=dict(recorded.record.outputs),
            recorded_targets=tuple(recorded.record.targets),
            built_by=recorded.run_id,
        )
        return verifier.verify(ctx)

    def _verifier(self, key: str) -> Verifier | None:
        try:
            executor: Any = self.registry.get(key)
        except InfraError:
            executor = None
        if executor is not None and callable(getattr(executor, "verify", None)):
            return executor  # type: ignore[no-any-return]  # has verify(ctx): duck-typed
        return self.verifiers.get(key)

    def _context(
        self, step: PlannedStep, scope: _Scope, params: BaseModel, targets: tuple[str, ...]
    ) -> StepContext:
        inventory = scope.inventory
        return StepContext(
            run_id=scope.verify_id,
            project=scope.plan.project,
            step_id=step.id,
            department=step.department,
            params=params,
            inventory=inventory,
            check=True,  # read-only: an executor helper that looks at ctx.check changes nothing
            targets=targets,
            secrets=inventory.secrets,
            resources=self._resources,
            db=self.engine.db,
            root=self.engine.settings.root,
            upstream={n: scope.outputs[n] for n in step.needs if n in scope.outputs},
        )


@dataclass(frozen=True)
class _Scope:
    """What every step of one verification shares."""

    plan: Plan
    inventory: Inventory
    outputs: Mapping[str, Mapping[str, Any]]
    variables: Mapping[str, Any]
    verify_id: str


def step_targets(
    step: PlannedStep, variables: Mapping[str, Any], inventory: Inventory
) -> tuple[str, ...]:
    """The step's targets rendered as a run renders them (see the scheduler)."""
    spec = step.targets
    if spec is None:
        return ()
    if isinstance(spec, TargetSelection):
        group = render_value(spec.group, variables, f"steps.{step.id}.targets.group")
        hosts = render_value(spec.hosts, variables, f"steps.{step.id}.targets.hosts")
        names = inventory.select(group=group, hosts=_as_list(hosts))
    else:
        names = _as_list(render_value(spec, variables, f"steps.{step.id}.targets")) or []
    return tuple(check_safe_text(str(n)) for n in names)


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def new_verify_id() -> str:
    return f"verify-{utcnow():%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


class _Emitter:
    """Sends ``verify.*`` events to the record and the observers; a record that fails
    is remembered (the report says so) and does not stop the verification."""

    def __init__(
        self, verify_id: str, recorder: RunRecorder | None, observers: Sequence[Observer]
    ) -> None:
        from infra_automation.engine import EventBus  # the engine imports this module's users

        self.verify_id = verify_id
        self.error: str | None = None
        self._bus = EventBus(recorder=recorder, local=list(observers)) if recorder else None
        self._observers = observers
        self._lock = threading.Lock()

    def __call__(self, kind: str, data: Mapping[str, Any], step_id: str | None = None) -> None:
        event = Event(self.verify_id, kind, step_id=step_id, data=data)
        with self._lock:
            if self._bus is None:
                self._deliver(event)
                return
            try:
                self._bus.emit(event)
                if kind == "verify.finished":
                    self._bus.recorder.flush()
            except InfraError as exc:
                self.error = self.error or f"the verification could not be recorded: {exc}"

    def _deliver(self, event: Event) -> None:
        from infra_automation.secrets import redact

        clean = replace(event, data=redact(dict(event.data)))
        for observer in self._observers:
            try:
                observer.on_event(clean)
            except Exception as exc:  # an observer never aborts a verification
                log.error("observer %s raised on %s: %s", type(observer).__name__, event.kind, exc)


def _started_payload(state: RecordedState) -> dict[str, Any]:
    return {
        "project": state.project,
        "based_on": list(state.based_on),
        "steps": [r.step.id for r in state.steps],
        "not_built": list(state.not_built),
        "note": state.note,
    }


def _finished_payload(report: VerifyReport) -> dict[str, Any]:
    return {
        "project": report.project,
        "state": report.state.value,
        "counts": report.counts(),
        "based_on": list(report.based_on),
        "note": report.note,
        "error": report.error,
        "open": [c.to_dict() for c in report.checks if c.state is not SyncState.IN_SYNC],
        "steps": {s.step_id: s.state.value for s in report.steps},
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat(),
        "duration": round(report.duration, 3),
    }


def latest_verifications(
    engine: Engine, project: str | None = None, limit: int = 20
) -> list[dict[str, Any]]:
    """``verify.finished`` payloads (plus ``verify_id``), newest first."""
    query = (
        sa.select(events_table.c.run_id, events_table.c.data)
        .where(events_table.c.kind == "verify.finished")
        .order_by(events_table.c.seq.desc())
    )
    found: list[dict[str, Any]] = []
    with engine.db.connect() as conn:
        for row in conn.execute(query):
            data = dict(row.data)
            if project is None or data.get("project") == project:
                found.append({"verify_id": row.run_id, **data})
            if len(found) >= limit:
                break
    return found


def recorded_projects(engine: Engine) -> list[str]:
    """Every project with at least one applied run in the record."""
    query = (
        sa.select(runs_table.c.project)
        .where(runs_table.c.check_mode.is_(False))
        .distinct()
        .order_by(runs_table.c.project)
    )
    with engine.db.connect() as conn:
        return [str(p) for p in conn.execute(query).scalars()]
