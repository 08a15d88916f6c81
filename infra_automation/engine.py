"""The engine: request -> plan -> locked, recorded, observed run -> RunResult.

::

    engine = Engine(load_settings(root), load_observers=False)
    request = engine.load_request("requests/demo-chain.yml")   # RequestValidationError
    plan = engine.plan(request)                                # PlanningError
    result = engine.apply(request, check=False, parallel=4)    # RunLocked
    result = engine.resume(result.run_id)                      # redo failed/skipped only

Every event is redacted (:func:`infra_automation.secrets.redact`) and handed, in order, to
the run record, then to the observers given to the engine (e.g. the progress view), then to
the observers of the ``infra_automation.observers`` entry-point group (``factory(root)``;
the docs writer). An observer that raises is reported as an ``observer.error`` event in the
record; the run goes on.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from sqlalchemy import Engine as SqlEngine

from infra_automation.catalog import Catalog, load_catalog
from infra_automation.config import Settings
from infra_automation.events import Event, Observer, utcnow
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import RunResources
from infra_automation.executors.registry import REGISTRY, ExecutorRegistry
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.planner import Plan, build_plan
from infra_automation.record import RunRecord, RunRecorder, RunStore, open_database
from infra_automation.request import Request, load_request, validate_request
from infra_automation.results import RunResult, Status, StepResult, TargetResult
from infra_automation.scheduler import (
    ProjectLock,
    RunEnvironment,
    Scheduler,
    finished_payload,
)
from infra_automation.secrets import MASK, redact

OBSERVER_GROUP = "infra_automation.observers"
DIAGNOSTIC_KINDS = frozenset({"observer.error", "run.warning"})


def new_run_id() -> str:
    """Sortable and unique: ``20250101T120000-1a2b3c4d``."""
    return f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"


@dataclass
class _NamedObserver:
    name: str
    observer: Observer


@dataclass
class EventBus:
    """Redacts each event and delivers it to the record, then to every observer, in order."""

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
            self.recorder.on_event(clean)
            for obs in self.local:
                self._deliver(type(obs).__name__, obs, clean)
        if clean.kind in DIAGNOSTIC_KINDS:
            return
        # Entry-point observers (the docs writer rewrites pages here) run outside the bus
        # lock so a slow one never holds up the other steps' events; each step's events come
        # from one thread, so they still arrive in order per step. Observers lock themselves.
        for named in self.observers:
            self._deliver(named.name, named.observer, clean)

    def _deliver(self, name: str, observer: Observer, event: Event) -> None:
        try:
            observer.on_event(event)
        except Exception as exc:  # an observer never aborts a run
            error = Event(
                run_id=event.run_id,
                kind="observer.error",
                step_id=event.step_id,
                data=redact({"observer": name, "event": event.kind, "error": str(exc)}),
            )
            self.recorder.on_event(error)
            for obs in self.local:
                obs.on_event(error)


class Engine:
    """Plans and runs requests of one project root."""

    def __init__(
        self,
        settings: Settings,
        *,
        registry: ExecutorRegistry | None = None,
        observers: Iterable[Observer] = (),
        load_observers: bool = True,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else REGISTRY
        self.observers = list(observers)
        self.load_observers = load_observers
        self._db: SqlEngine | None = None
        self._catalog: Catalog | None = None

    # --- reading --------------------------------------------------------------------------

    @property
    def db(self) -> SqlEngine:
        if self._db is None:
            self._db = open_database(self.settings.database_url)
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
        return build_plan(self.catalog().get(request.service), request, self.registry)

    def inventory(self, request: Request) -> Inventory:
        folder = self.settings.inventory
        if request.inventory:
            folder = (self.settings.root / request.inventory).resolve()
            if not folder.is_relative_to(self.settings.root.resolve()):
                raise ConfigurationError(
                    f"inventory: {request.inventory!r} is outside the project root"
                )
        return load_inventory(folder)

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
        self, run_id: str, *, parallel: int | None = None, plan: Plan | None = None
    ) -> RunResult:
        """A new run of ``run_id``'s request that reuses its successful steps."""
        old = self.store.get_run(run_id)
        plan = plan or self.resume_plan(run_id)
        reused = reusable_results(old, plan)
        return self._run(plan, check=old.check, parallel=parallel, reused=reused, resumed=old.id)

    def close(self) -> None:
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
    ) -> RunResult:
        inventory = self.inventory(plan.request)
        run_id = new_run_id()
        workers = parallel or self.settings.parallel
        with ProjectLock(self.settings.lock_dir, plan.project, run_id):
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
                return self._execute(plan, env, bus, workers, reused or {}, resumed)
            finally:
                recorder.close()

    def _bus(self, recorder: RunRecorder) -> EventBus:
        return EventBus(recorder=recorder, local=list(self.observers))

    def _execute(
        self,
        plan: Plan,
        env: RunEnvironment,
        bus: EventBus,
        parallel: int,
        reused: Mapping[str, StepResult],
        resumed: str | None,
    ) -> RunResult:
        started = utcnow()
        load_errors = self._attach_observers(bus)
        bus.emit(_run_started(plan, env, parallel, resumed, started))
        for name, error in load_errors:
            data = {"observer": name, "event": "load", "error": error}
            bus.emit(Event(env.run_id, "observer.error", data=data))
        for sid, done in reused.items():
            payload = finished_payload(plan.step(sid), done, reused=True)
            bus.emit(Event(run_id=env.run_id, kind="step.finished", step_id=sid, data=payload))
        results: dict[str, StepResult] = {}
        try:
            scheduler = Scheduler(
                plan, env, self.registry, bus.emit, parallel=parallel, reused=reused
            )
            results = scheduler.run()
        finally:
            for error in env.resources.close():
                bus.emit(Event(env.run_id, "run.warning", data={"message": f"closing {error}"}))
            outcome = RunResult(
                run_id=env.run_id, project=plan.project, check=env.check, steps=results
            )
            bus.emit(_run_finished(outcome, plan, started))
        return outcome

    def _attach_observers(self, bus: EventBus) -> list[tuple[str, str]]:
        """Entry-point observers join the bus; returns (name, error) of those that failed."""
        errors: list[tuple[str, str]] = []
        if not self.load_observers:
            return errors
        for name, observer, error in load_entry_point_observers(self.settings.root):
            if observer is None:
                errors.append((name, error))
            else:
                bus.observers.append(_NamedObserver(name, observer))
        return errors


def load_entry_point_observers(root: Path) -> list[tuple[str, Observer | None, str]]:
    """``(name, observer or None, error)`` for each ``infra_automation.observers`` entry."""
    out: list[tuple[str, Observer | None, str]] = []
    for ep in entry_points(group=OBSERVER_GROUP):
        try:
            out.append((ep.name, ep.load()(root), ""))
        except Exception as exc:  # a broken plugin must not stop runs
            out.append((ep.name, None, f"{type(exc).__name__}: {exc}"))
    return out


def _run_started(
    plan: Plan, env: RunEnvironment, parallel: int, resumed: str | None, at: datetime
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
    }
    return Event(run_id=env.run_id, kind="run.started", data=data, at=at)


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


def reusable_results(old: RunRecord, plan: Plan) -> dict[str, StepResult]:
    """Successful steps of ``old`` that are still in ``plan``, as results to reuse."""
    planned = {s.id for s in plan.steps}
    reused: dict[str, StepResult] = {}
    for step in old.steps:
        if MASK in json.dumps(step.outputs, default=str):
            continue  # an output was masked in the record: run the step again for its value
        if step.status == Status.SUCCESS.value and step.step_id in planned:
            reused[step.step_id] = StepResult(
                status=Status.SUCCESS,
                changed=step.changed,
                diff=step.diff,
                outputs=dict(step.outputs),
                targets=_targets(step.targets),
                artifacts=dict(step.artifacts),
                started_at=step.started_at,
                finished_at=step.finished_at,
            )
    return reused


def _targets(rows: Sequence[Mapping[str, Any]]) -> tuple[TargetResult, ...]:
    return tuple(
        TargetResult(
            target=str(r.get("target", "")),
            status=Status(r.get("status", "success")),
            changed=bool(r.get("changed", False)),
            diff=str(r.get("diff") or ""),
            error=r.get("error"),
            details=dict(r.get("details") or {}),
        )
        for r in rows
    )
