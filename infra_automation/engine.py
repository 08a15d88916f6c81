"""The engine: request -> plan -> locked, recorded, observed run -> RunResult.

::

    engine = Engine(load_settings(root), load_observers=False)
    request = engine.load_request("requests/demo-chain.yml")   # RequestValidationError
    plan = engine.plan(request)                                # PlanningError
    result = engine.apply(request, check=False, parallel=4)    # RunLocked
    result = engine.resume(result.run_id)                      # redo failed/skipped only

Every event is redacted (:func:`infra_automation.secrets.redact`) and handed, in order, to
the run record, then to the observers given to the engine (e.g. the progress view), then to
the observers of the ``infra_automation.observers`` entry-point group (``factory(root, db)``;
the docs writer). An observer that raises is logged, reported as an ``observer.error`` event
in the record and detached (it gets no further events); the run goes on.

One run per project at a time, across checkouts sharing the database: the run holds the
lease ``project:<name>`` (:class:`~infra_automation.scheduler.ProjectLock`). If the run record
cannot be written (database locked past ``database_timeout``, disk full) the run stops
starting steps and ends ``failed``, the error named on the step and on the run; the final
state is written by :meth:`RunRecorder.salvage` in a fresh connection. If even that fails the
run is left ``running`` in the record, and reads ``interrupted`` once its lease expires.

With workers (:mod:`infra_automation.workers`): :meth:`Engine.submit` records a run as
``queued`` (nothing runs), a worker's scheduler takes it with :meth:`Engine.run_submitted`
(the same run as above, holding the project lease, its steps handed to a
:class:`StepDispatcher`) and each step runs on a worker of its department's queue through
:meth:`Engine.run_step`. The server's own worker threads (:mod:`infra_automation.server.runner`)
take queued runs the same way. The project lease and the ``queued`` status read under it are
the claim: whatever the number of schedulers, a queued run runs once. A run submitted with
the ``change`` it implements claims that change once it holds the lease (approved ->
implementing; one rejected or voided since the gate never runs: the run is recorded failed,
nothing started) and records the change's outcome after the run.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import Engine as SqlEngine

from infra_automation import pinning
from infra_automation.catalog import Catalog, Modifies, load_catalog
from infra_automation.config import Settings
from infra_automation.events import Event, Observer, utcnow
from infra_automation.exceptions import (
    CatalogError,
    ConfigurationError,
    InfraError,
    RecordError,
    RunLocked,
)
from infra_automation.executors.base import RunResources
from infra_automation.executors.registry import REGISTRY, ExecutorRegistry
from infra_automation.inventory import GENERATED_DIR, HAND_WRITTEN, Inventory, load_inventory
from infra_automation.leases import holder_of
from infra_automation.metrics.capacity import check_capacity
from infra_automation.planner import Plan, build_plan
from infra_automation.record import (
    IMMEDIATE,
    QUEUED,
    RunRecord,
    RunRecorder,
    RunStore,
    open_database,
    recorded_result,
)
from infra_automation.request import Request, load_request, validate_request
from infra_automation.results import RunResult, StepResult
from infra_automation.scheduler import (
    ProjectLock,
    RunEnvironment,
    Scheduler,
    StepRunner,
    finished_payload,
)
from infra_automation.secrets import redact

OBSERVER_GROUP = "infra_automation.observers"
DIAGNOSTIC_KINDS = frozenset({"observer.error", "run.warning"})
log = logging.getLogger(__name__)


def new_run_id() -> str:
    """Sortable and unique: ``20250101T120000-1a2b3c4d``."""
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class _NamedObserver:
    name: str
    observer: Observer


@dataclass
class EventBus:
    """Redacts each event and delivers it to the record, then to every observer, in order.

    An observer that raises is logged and detached. A record that cannot be written still
    lets the observers see the event, then raises :class:`RecordError`."""

    recorder: RunRecorder
    observers: list[_NamedObserver] = field(default_factory=list)
    local: list[Observer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, event: Event) -> None:
        data = redact(dict(event.data))
        if "request" in event.data:  # validated SafeText values: mask by value, never by key
            data["request"] = redact(event.data["request"], keys=False)
        clean = Event(
            run_id=event.run_id, kind=event.kind, step_id=event.step_id, data=data, at=event.at
        )
        with self._lock:  # the record and the progress view see one global order
            number = self.recorder.submit(clean)
            for obs in tuple(self.local):
                self._deliver(type(obs).__name__, obs, clean)
        failure: RecordError | None = None
        if clean.kind in IMMEDIATE:  # outside the lock: parallel steps share a commit
            try:
                self.recorder.wait_written(number)
            except RecordError as exc:
                failure = exc
        if clean.kind not in DIAGNOSTIC_KINDS:
            # Entry-point observers (the docs writer rewrites pages here) run outside the bus
            # lock so a slow one never holds up the other steps' events; each step's events
            # come from one thread, so they still arrive in order per step.
            for named in tuple(self.observers):
                self._deliver(named.name, named.observer, clean)
        if failure is not None:
            raise failure

    def _deliver(self, name: str, observer: Observer, event: Event) -> None:
        try:
            observer.on_event(event)
        except Exception as exc:  # an observer never aborts a run
            self._detach(observer)
            log.error(
                "observer %s raised on %s (%s: %s); it gets no further events",
                name,
                event.kind,
                type(exc).__name__,
                exc,
            )
            error = Event(
                run_id=event.run_id,
                kind="observer.error",
                step_id=event.step_id,
                data=redact({"observer": name, "event": event.kind, "error": str(exc)}),
            )
            with suppress(RecordError):  # the next step boundary reports a failed record
                self.recorder.on_event(error)
            for obs in tuple(self.local):
                if obs is not observer:
                    with suppress(Exception):
                        obs.on_event(error)

    def replay(self, event: Event) -> None:
        """Show observers an event already in the record (a worker wrote it)."""
        with self._lock:
            for obs in tuple(self.local):
                self._deliver(type(obs).__name__, obs, event)
        if event.kind not in DIAGNOSTIC_KINDS:
            for named in tuple(self.observers):
                self._deliver(named.name, named.observer, event)

    def _detach(self, observer: Observer) -> None:
        self.local = [o for o in self.local if o is not observer]
        self.observers = [n for n in self.observers if n.observer is not observer]


class StepDispatcher(Protocol):
    """Where the steps of a run go: :meth:`runner` gives the scheduler of that run a function
    that runs one step elsewhere and returns its recorded result (the workers' queues)."""

    def runner(self, plan: Plan, env: RunEnvironment, bus: EventBus) -> StepRunner: ...


@dataclass(frozen=True)
class Submission:
    """How a queued run is to be run (from its ``run.queued`` event)."""

    run: RunRecord
    changed: Literal["rerun", "refuse"] = "rerun"
    docs: bool = True
    change: str | None = None  # the id of the approved change this run implements


class RunClaim(Protocol):
    """What a queued run does around its start: :meth:`starting` once the run is this
    scheduler's (its project lease held, still queued), before anything is recorded of it
    starting; an exception it raises stops the run (recorded failed, nothing ran).
    :meth:`finished` after the run, :meth:`stopped` if it raised without a result."""

    def starting(self) -> None: ...

    def finished(self, result: RunResult) -> None: ...

    def stopped(self, error: BaseException) -> None: ...


@dataclass
class _ChangeClaim:
    """The claim of the approved change a submitted run implements (its change record)."""

    engine: Engine
    change_id: str

    def _service(self) -> Any:
        from infra_automation.changes import ChangeService  # changes build on the engine

        return ChangeService(self.engine)

    def starting(self) -> None:
        self._service().claim(self.change_id)  # ChangeRefused: rejected or voided meanwhile

    def finished(self, result: RunResult) -> None:
        self._service().finish(self.change_id, result)

    def stopped(self, error: BaseException) -> None:
        reason = f"its run stopped without a result: {type(error).__name__}"
        self._service().abandon(self.change_id, reason)


class Engine:
    """Plans and runs requests of one project root.

    ``dispatcher``: where steps run (default: here, in threads)."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ExecutorRegistry | None = None,
        observers: Iterable[Observer] = (),
        load_observers: bool = True,
        dispatcher: StepDispatcher | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else REGISTRY
        self.observers = list(observers)
        self.load_observers = load_observers
        self.dispatcher = dispatcher
        self._db: SqlEngine | None = None
        self._catalog: Catalog | None = None
        self._plans: dict[str, tuple[Plan, bool]] = {}  # run id -> plan, check (workers)
        self._plans_lock = threading.Lock()
        self._queuer: RunRecorder | None = None  # writes run.queued: one commit for many
        self._inventories: dict[Path, tuple[tuple[object, ...], Inventory]] = {}
        self._queuer_lock = threading.Lock()

    # --- reading --------------------------------------------------------------------------

    @property
    def db(self) -> SqlEngine:
        if self._db is None:
            self._db = open_database(
                self.settings.database_url, timeout=self.settings.database_timeout
            )
        return self._db

    @property
    def store(self) -> RunStore:
        return RunStore(self.db)

    def catalog(self) -> Catalog:
        """The catalog, read once per engine (:meth:`reload` reads it again)."""
        if self._catalog is None:
            self._catalog = load_catalog(self.settings.catalog_dir)
        return self._catalog

    def reload(self) -> None:
        self._catalog = None

    def load_request(self, path: str | Path) -> Request:
        return load_request(path, self.catalog())

    def validate(self, data: Mapping[str, Any], source: str = "request") -> Request:
        return validate_request(data, self.catalog(), source)

    def plan(self, request: Request) -> Plan:
        service = self.catalog().get(request.service)
        return build_plan(service, request, self.registry, root=self.settings.root)

    def inventory(self, request: Request) -> Inventory:
        inventory = load_inventory(self._inventory_folder(request))
        inventory.db = self.db  # host bindings kept in the database (host_binding.store)
        return inventory

    def _inventory_folder(self, request: Request) -> Path:
        folder = self.settings.inventory
        if request.inventory:
            folder = (self.settings.root / request.inventory).resolve()
            if not folder.is_relative_to(self.settings.root.resolve()):
                raise ConfigurationError(
                    f"inventory: {request.inventory!r} is outside the project root"
                )
        return folder

    def _checked_inventory(self, request: Request) -> Inventory:
        """The inventory a submission is checked against (read-only): read again only when
        one of its files changed (a burst of submissions parses it once)."""
        folder = self._inventory_folder(request)
        signature = _files_signature(folder)
        with self._plans_lock:
            known = self._inventories.get(folder)
        if known is not None and known[0] == signature:
            return known[1]
        inventory = self.inventory(request)
        with self._plans_lock:
            self._inventories[folder] = (signature, inventory)
        return inventory

    # --- running --------------------------------------------------------------------------

    def apply(
        self, request: Request, *, check: bool = False, parallel: int | None = None
    ) -> RunResult:
        """Plan and run ``request``; nothing is recorded if it cannot be planned."""
        return self.run(self.plan(request), check=check, parallel=parallel)

    def run(self, plan: Plan, *, check: bool = False, parallel: int | None = None) -> RunResult:
        """Run an already built plan (e.g. one built with :func:`build_plan` directly)."""
        return self._run(plan, check=check, parallel=parallel)

    def resume_plan(self, run_id: str) -> Plan:
        """The plan a resume of ``run_id`` runs: its recorded request, planned again."""
        old = self.store.get_run(run_id)
        return self.plan(self.validate(old.request, source=f"run {run_id}"))

    def resume(
        self,
        run_id: str,
        *,
        parallel: int | None = None,
        plan: Plan | None = None,
        changed: Literal["rerun", "refuse"] = "rerun",
    ) -> RunResult:
        """A new run of ``run_id``'s request that reuses its successful, unchanged steps.

        A finished step whose definition changed since (executor, params, models, content
        files: :mod:`infra_automation.pinning`) is re-run with its dependents, or, with
        ``changed="refuse"``, the resume is refused listing them (nothing runs).
        """
        old = self.store.get_run(run_id)
        plan = plan or self.resume_plan(run_id)
        reuse = pinning.reusable_results(old, plan)
        if changed == "refuse":
            reuse.refuse_changed(run_id)
        return self._run(
            plan,
            check=old.check,
            parallel=parallel,
            reused=reuse.results,
            resumed=old.id,
            changes=reuse.changed,
        )

    # --- workers (infra_automation.workers) -----------------------------------------------

    def submit(
        self,
        plan: Plan,
        *,
        check: bool = False,
        parallel: int | None = None,
        docs: bool = True,
        change: str | None = None,
    ) -> str:
        """Record ``plan`` as a ``queued`` run for the schedulers; its id. ``change``: the
        approved change it implements, claimed when the run starts.

        Refused (RunLocked) while the project has an active run, as :meth:`run` is."""
        return self._submit(plan, check=check, parallel=parallel, docs=docs, change=change)

    def submit_resume(
        self,
        run_id: str,
        *,
        parallel: int | None = None,
        plan: Plan | None = None,
        changed: Literal["rerun", "refuse"] = "rerun",
        docs: bool = True,
    ) -> str:
        """Queue a resume of ``run_id`` (see :meth:`resume`); ``refuse`` is checked now."""
        old = self.store.get_run(run_id)
        plan = plan or self.resume_plan(run_id)
        if changed == "refuse":
            pinning.reusable_results(old, plan).refuse_changed(run_id)
        return self._submit(
            plan, check=old.check, parallel=parallel, docs=docs, resumed=old.id, changed=changed
        )

    def _submit(
        self,
        plan: Plan,
        *,
        check: bool,
        parallel: int | None,
        docs: bool,
        resumed: str | None = None,
        changed: str = "rerun",
        change: str | None = None,
    ) -> str:
        inventory = self._checked_inventory(plan.request)  # a bad one is refused now
        check_capacity(plan, inventory, self.db, self.settings.root)  # CapacityExceeded
        holder = holder_of(self.db, f"project:{plan.project}")
        if holder is not None:
            raise RunLocked(
                f"project {plan.project!r} has an active run ({holder.describe()}); "
                "wait for it to finish, or for its lease to expire if its process died"
            )
        run_id = new_run_id()
        data = {
            "service": plan.service,
            "project": plan.project,
            "requester": plan.request.requester,
            "check": check,
            "parallel": parallel or self.settings.parallel,
            "resumed_from": resumed,
            "request": plan.request.to_dict(),
            "plan": plan.summary(),
            "modifies": (m := self.modifies(plan.service)) and m.model_dump(),
            "changed": changed,
            "docs": docs,
            "change": change,
        }
        self._record_queued(Event(run_id, "run.queued", data=data))
        return run_id

    def _record_queued(self, event: Event) -> None:
        """Write a ``run.queued`` event through the engine's one queueing recorder:
        submissions that arrive together share a commit. After a failed write the next
        submission starts a fresh recorder (RecordError here)."""
        with self._queuer_lock:
            if self._queuer is None:
                self._queuer = RunRecorder(self.db)
            recorder = self._queuer
        try:
            EventBus(recorder=recorder).emit(event)
        except RecordError:
            with self._queuer_lock:
                if self._queuer is recorder:
                    self._queuer = None
            recorder.close()
            raise

    def submission(self, run_id: str) -> Submission:
        """The queued run ``run_id`` and how it was submitted."""
        run = self.store.get_run(run_id)
        queued = self.store.events(run_id, kind="run.queued")
        data = queued[0].data if queued else {}
        changed: Literal["rerun", "refuse"] = (
            "refuse" if data.get("changed") == "refuse" else "rerun"
        )
        change = data.get("change")
        return Submission(
            run=run,
            changed=changed,
            docs=bool(data.get("docs", True)),
            change=str(change) if change else None,
        )

    def run_submitted(self, run_id: str) -> RunResult:
        """Run the queued run ``run_id`` here (its steps go to :attr:`dispatcher`).

        RunLocked if its project is busy or another scheduler took it first; the claim's
        error (ChangeRefused) if the change it implements may no longer run (the run is
        then recorded failed)."""
        sub = self.submission(run_id)
        if sub.run.status != QUEUED:
            raise RunLocked(f"run {run_id} is {sub.run.status}, not queued")
        plan = self.plan(self.validate(sub.run.request, source=f"run {run_id}"))
        claim = _ChangeClaim(self, sub.change) if sub.change else None
        if sub.run.resumed_from is None:
            return self._run(
                plan,
                check=sub.run.check,
                parallel=sub.run.parallel,
                submitted=run_id,
                claim=claim,
            )
        old = self.store.get_run(sub.run.resumed_from)
        reuse = pinning.reusable_results(old, plan)
        return self._run(
            plan,
            check=sub.run.check,
            parallel=sub.run.parallel,
            reused=reuse.results,
            resumed=old.id,
            changes=reuse.changed,
            submitted=run_id,
            claim=claim,
        )

    def fail_submitted(self, run_id: str, error: str) -> None:
        """Record the queued run ``run_id`` failed before it started (nothing ran)."""
        data = {"status": "failed", "error": error, "failed_steps": [], "changed": False}
        data["finished_at"] = utcnow().isoformat()
        recorder = RunRecorder(self.db)
        try:
            EventBus(recorder=recorder).emit(Event(run_id, "run.finished", data=data))
        finally:
            recorder.close()

    def run_step(
        self,
        run_id: str,
        step_id: str,
        where: Mapping[str, Any] | None = None,
        *,
        only_if: Iterable[str] = ("pending",),
    ) -> StepResult | None:
        """Run step ``step_id`` of the recorded run ``run_id`` here (a worker), with the
        outputs its dependencies recorded; its events go to the record. None (nothing
        runs) when the step's recorded status is not one of ``only_if``."""
        rows = self.store.steps_of(run_id)
        if not any(s.step_id == step_id and s.status in set(only_if) for s in rows):
            return None
        plan, check = self._plan_of(run_id)
        done = {s.step_id: recorded_result(s) for s in rows if s.status == "success"}
        recorder = RunRecorder(self.db)
        resources = RunResources()
        try:
            env = RunEnvironment(
                run_id=run_id,
                inventory=(inventory := self.inventory(plan.request)),
                root=self.settings.root,
                resources=resources,
                secrets=inventory.secrets,
                db=self.db,
                check=check,
            )
            bus = self._bus(recorder)
            scheduler = Scheduler(plan, env, self.registry, bus.emit, reused=done)
            return scheduler.execute_step(plan.step(step_id), where)
        finally:
            resources.close()
            recorder.close()

    def _plan_of(self, run_id: str) -> tuple[Plan, bool]:
        """The plan of a recorded run and its check mode (read once per run)."""
        with self._plans_lock:
            known = self._plans.get(run_id)
        if known is None:
            run = self.store.get_run(run_id)
            known = (self.plan(self.validate(run.request, source=f"run {run_id}")), run.check)
            with self._plans_lock:
                if len(self._plans) > 256:
                    self._plans.clear()
                self._plans[run_id] = known
        return known

    def close(self) -> None:
        with self._queuer_lock:
            queuer, self._queuer = self._queuer, None
        if queuer is not None:
            queuer.close()
        if self._db is not None:
            self._db.dispose()
            self._db = None

    def _run(
        self,
        plan: Plan,
        *,
        check: bool,
        parallel: int | None,
        reused: Mapping[str, StepResult] | None = None,
        resumed: str | None = None,
        changes: Sequence[pinning.Change] = (),
        submitted: str | None = None,
        claim: RunClaim | None = None,
    ) -> RunResult:
        inventory = self.inventory(plan.request)
        if submitted is None:  # a submitted run was checked when it was queued
            check_capacity(plan, inventory, self.db, self.settings.root)  # CapacityExceeded
        run_id = submitted or new_run_id()
        workers = parallel or self.settings.parallel
        ttl = self.settings.lease_ttl
        with ProjectLock(self.db, plan.project, run_id, ttl=ttl):
            if submitted and self.store.get_run(run_id).status != QUEUED:
                raise RunLocked(f"run {run_id} was already started by another scheduler")
            args = (plan, run_id, inventory, check, workers, reused, resumed, changes)
            if claim is None:
                return self._locked_run(*args)
            self._claim(run_id, claim)
            try:
                result = self._locked_run(*args)
            except BaseException as exc:
                claim.stopped(exc)
                raise
            claim.finished(result)
            return result

    def _claim(self, run_id: str, claim: RunClaim) -> None:
        """Start ``claim``; if it refuses, the queued run is recorded failed and its error
        raised."""
        try:
            claim.starting()
        except InfraError as exc:
            self.fail_submitted(run_id, f"{type(exc).__name__}: {exc}")
            raise

    def _locked_run(
        self,
        plan: Plan,
        run_id: str,
        inventory: Inventory,
        check: bool,
        workers: int,
        reused: Mapping[str, StepResult] | None,
        resumed: str | None,
        changes: Sequence[pinning.Change],
    ) -> RunResult:
        """The run, its project lease held."""
        recorder = RunRecorder(self.db)
        try:
            bus = self._bus(recorder)
            env = RunEnvironment(
                run_id=run_id,
                inventory=inventory,
                root=self.settings.root,
                resources=RunResources(),
                secrets=inventory.secrets,
                db=self.db,
                check=check,
            )
            started = self._started_event(plan, env, workers, resumed, changes)
            return self._execute(plan, env, bus, started, reused or {}, workers)
        finally:
            recorder.close()

    def _bus(self, recorder: RunRecorder) -> EventBus:
        return EventBus(recorder=recorder, local=list(self.observers))

    def _started_event(
        self,
        plan: Plan,
        env: RunEnvironment,
        parallel: int,
        resumed: str | None,
        changes: Sequence[pinning.Change],
    ) -> Event:
        data = {
            "service": plan.service,
            "project": plan.project,
            "requester": plan.request.requester,
            "check": env.check,
            "parallel": parallel,
            "resumed_from": resumed,
            "request": plan.request.to_dict(),
            "plan": plan.summary(),
            "modifies": (m := self.modifies(plan.service)) and m.model_dump(),
            "revision": pinning.content_revision(
                plan, env.root, catalog_file=self._catalog_file(plan.service)
            ),
            "rerun": [{"step": c.step_id, "kind": c.kind, "reason": c.reason} for c in changes],
        }
        return Event(run_id=env.run_id, kind="run.started", data=data)

    def modifies(self, service: str) -> Modifies | None:
        """What the operational change ``service`` modifies (catalog ``modifies``); None for
        a build, or a service no longer in the catalog."""
        try:
            return self.catalog().get(service).modifies
        except CatalogError:
            return None

    def _catalog_file(self, service: str) -> Path | None:
        """The catalog file of ``service``; None for a plan built without the catalog (a
        library caller's :func:`build_plan`), whose folder may not even exist."""
        try:
            return self.catalog().sources.get(service)
        except CatalogError:
            return None

    def _execute(
        self,
        plan: Plan,
        env: RunEnvironment,
        bus: EventBus,
        started_event: Event,
        reused: Mapping[str, StepResult],
        parallel: int,
    ) -> RunResult:
        started = started_event.at
        load_errors = self._attach_observers(bus)
        bus.emit(started_event)  # RecordError: nothing ran
        for name, error in load_errors:
            data = {"observer": name, "event": "load", "error": error}
            _emit_quietly(bus, Event(env.run_id, "observer.error", data=data))
        for sid, done in reused.items():
            payload = finished_payload(plan.step(sid), done, reused=True)
            _emit_quietly(bus, Event(env.run_id, "step.finished", step_id=sid, data=payload))
        results: dict[str, StepResult] = {}
        try:
            scheduler = Scheduler(
                plan,
                env,
                self.registry,
                bus.emit,
                parallel=parallel,
                reused=reused,
                run_step=self.dispatcher.runner(plan, env, bus) if self.dispatcher else None,
            )
            results = scheduler.run()
        finally:
            for error in env.resources.close():
                message = {"message": f"closing {error}"}
                _emit_quietly(bus, Event(env.run_id, "run.warning", data=message))
            outcome = RunResult(
                run_id=env.run_id, project=plan.project, check=env.check, steps=results
            )
            self._finish(bus, outcome, plan, started, reused)
        return outcome

    def _finish(
        self,
        bus: EventBus,
        outcome: RunResult,
        plan: Plan,
        started: datetime,
        reused: Mapping[str, StepResult],
    ) -> None:
        """Record the end of the run; after a failed write, salvage the record."""
        finished = _run_finished(outcome, plan, started)
        if bus.recorder.error is None:
            with suppress(RecordError):
                bus.emit(finished)
        error = bus.recorder.error
        if error is None:
            return
        payloads = {
            sid: finished_payload(plan.step(sid), r, reused=sid in reused)
            for sid, r in outcome.steps.items()
        }
        final = {**finished.data, "status": "failed", "error": error}
        patience = max(2.0, self.settings.database_timeout)
        if not bus.recorder.salvage(outcome.run_id, payloads, final, patience=patience):
            log.error(
                "%s; run %s stays 'running' in the record and reads 'interrupted' once its "
                "lease expires (resume it with `infra resume %s`)",
                error,
                outcome.run_id,
                outcome.run_id,
            )

    def _attach_observers(self, bus: EventBus) -> list[tuple[str, str]]:
        """Entry-point observers join the bus; returns (name, error) of those that failed."""
        errors: list[tuple[str, str]] = []
        if not self.load_observers:
            return errors
        for name, observer, error in load_entry_point_observers(self.settings.root, self.db):
            if observer is None:
                errors.append((name, error))
            else:
                bus.observers.append(_NamedObserver(name, observer))
        return errors


def _files_signature(folder: Path) -> tuple[object, ...]:
    """What changes when an inventory folder's YAML files do (names, sizes, mtimes)."""
    found: list[object] = []
    for path in sorted([folder / HAND_WRITTEN, *(folder / GENERATED_DIR).glob("*.yml")]):
        with suppress(OSError):
            info = path.stat()
            found.append((path.name, info.st_size, info.st_mtime_ns))
    return tuple(found)


def _emit_quietly(bus: EventBus, event: Event) -> None:
    """Emit an event whose loss does not change the run (a failed record is sticky: the
    next step boundary reports it)."""
    with suppress(RecordError):
        bus.emit(event)


def load_entry_point_observers(root: Path, db: SqlEngine) -> list[tuple[str, Observer | None, str]]:
    """``(name, observer or None, error)`` for each ``infra_automation.observers`` entry
    (``factory(root, db)``: the project root and the run database)."""
    out: list[tuple[str, Observer | None, str]] = []
    for ep in entry_points(group=OBSERVER_GROUP):
        try:
            out.append((ep.name, ep.load()(root, db), ""))
        except Exception as exc:  # a broken plugin must not stop runs
            out.append((ep.name, None, f"{type(exc).__name__}: {exc}"))
    return out


def _run_finished(result: RunResult, plan: Plan, started: datetime) -> Event:
    data = {
        "status": "failed" if result.failed or len(result.steps) < len(plan.steps) else "success",
        "failed_steps": list(result.failed_steps),
        "skipped_steps": list(result.skipped_steps),
        "changed": result.changed,
        "started_at": started.isoformat(),
        "finished_at": utcnow().isoformat(),
    }
    return Event(run_id=result.run_id, kind="run.finished", data=data)
