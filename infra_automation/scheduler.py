"""Scheduler: runs a plan's steps once their dependencies succeeded, up to N at once.

- A failed (or skipped) step marks its transitive dependents ``skipped``; independent
  branches go on.
- Params are rendered right before the step runs (variables: ``project``, ``service``,
  ``requester``, ``params``, ``steps.<id>.outputs``) and validated against the executor's
  params model; outputs are validated against its outputs model. Either failing fails
  the step with the field errors.
- Any exception escaping an executor becomes a failed :class:`StepResult` (step boundary).
- Check mode calls ``preview``; executors without check support are skipped with a reason.
- The run record failing (:class:`RecordError` from ``emit``) fails the step whose event could
  not be written, with the error; no further step starts, the ones waiting are ``skipped``
  with the error, and :attr:`Scheduler.record_error` tells the engine to salvage the record.
- Where a step runs is the caller's choice (``run_step``): by default here, in a thread of the
  pool (:meth:`Scheduler.execute_step`); the workers (:mod:`infra_automation.workers`) hand it
  to the department's queue and wait for its result in the record, while a worker runs the
  same :meth:`Scheduler.execute_step` on its side.
- :class:`ProjectLock`: one active run per project, a database lease ``project:<name>``
  (:mod:`infra_automation.leases`): it holds across checkouts sharing the database, and a run
  whose process died loses it once it expires.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from pydantic import BaseModel, ValidationError

from infra_automation.catalog import TargetSelection
from infra_automation.events import Event, utcnow
from infra_automation.exceptions import InfraError, RecordError, RunLocked
from infra_automation.executors.base import Executor, RunResources, StepContext
from infra_automation.executors.registry import ExecutorRegistry
from infra_automation.leases import DEFAULT_TTL, Leases
from infra_automation.planner import Plan, PlannedStep
from infra_automation.record import QUEUED, RUNNING
from infra_automation.record import runs as runs_table
from infra_automation.render import render_value
from infra_automation.results import ErrorKind, Status, StepResult, error_kind_of
from infra_automation.validation import check_safe_text

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from infra_automation.inventory import Inventory
    from infra_automation.secrets import Secrets

Emit = Callable[[Event], None]
StepRunner = Callable[[PlannedStep], StepResult]
INVALID = ErrorKind.INVALID
INTERNAL = ErrorKind.INTERNAL


@dataclass(frozen=True)
class RunEnvironment:
    """What every step of one run shares."""

    run_id: str
    inventory: Inventory
    root: Path
    resources: RunResources
    secrets: Secrets | None = None
    db: Engine | None = None
    check: bool = False


class Scheduler:
    """Runs one plan. ``reused`` holds results of steps a resumed run does not redo."""

    def __init__(
        self,
        plan: Plan,
        env: RunEnvironment,
        registry: ExecutorRegistry,
        emit: Emit,
        *,
        parallel: int = 4,
        reused: Mapping[str, StepResult] | None = None,
        run_step: StepRunner | None = None,
    ) -> None:
        self.plan = plan
        self.env = env
        self.registry = registry
        self.emit = emit
        self.parallel = max(1, parallel)
        self.results: dict[str, StepResult] = dict(reused or {})
        self.outputs: dict[str, Mapping[str, Any]] = {
            k: r.outputs for k, r in self.results.items() if r.status is Status.SUCCESS
        }
        self._steps = {s.id: s for s in plan.steps}
        self._dependents = plan.dependents()
        self._variables = base_variables(plan, self.outputs)
        self.record_error: str | None = None
        self._record_lock = threading.Lock()
        self._run_step_at = run_step or self.execute_step
        self._peers: dict[str, tuple[str, ...]] = {}  # steps started together, same executor
        self._waiting: dict[str, set[str]] = {}  # step -> the needs it still waits for
        self._followers: dict[str, tuple[str, ...]] = {}  # StepContext.followers, by id

    def run(self) -> dict[str, StepResult]:
        """Run every step not already in ``results``; returns results in plan order."""
        waiting, ready = self._initial_state()
        self._waiting = waiting
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="infra-step") as pool:
            running: dict[Future[StepResult], str] = {}
            while (ready and self.record_error is None) or running:
                started = self._start_round(ready, self.parallel - len(running))
                for sid in started:
                    running[pool.submit(self._run_step_at, self._steps[sid])] = sid
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    sid = running.pop(future)
                    self._finish(sid, future.result(), waiting, ready)
        if self.record_error is not None:
            self._abandon(self.record_error)
        return {s.id: self.results[s.id] for s in self.plan.steps if s.id in self.results}

    def _start_round(self, ready: deque[str], room: int) -> list[str]:
        """The ready steps that start now; each learns its peers (``StepContext.peers``)."""
        if self.record_error is not None:
            return []
        started = [ready.popleft() for _ in range(min(room, len(ready)))]
        for sid in started:
            executor = self._steps[sid].executor
            self._peers[sid] = tuple(
                o for o in started if o != sid and self._steps[o].executor == executor
            )
            self._followers[sid] = self._follower_ids(sid)
        return started

    def _follower_ids(self, sid: str) -> tuple[str, ...]:
        """The steps waiting for ``sid`` only, with its executor, whose params and targets
        do not name it (see ``StepContext.followers``)."""
        executor = self._steps[sid].executor
        named = re.compile(rf"(?<![\w-]){re.escape(sid)}(?![\w-])")
        return tuple(
            dep
            for dep in self._dependents[sid]
            if self._waiting.get(dep) == {sid}
            and dep not in self.results
            and self._steps[dep].executor == executor
            and not named.search(repr((self._steps[dep].params, self._steps[dep].targets)))
        )

    def _send(self, event: Event) -> str | None:
        """Emit ``event``; the run record's error if it could not be written."""
        try:
            self.emit(event)
        except RecordError as exc:
            with self._record_lock:
                self.record_error = self.record_error or str(exc)
            return str(exc)
        return None

    def _abandon(self, error: str) -> None:
        """After the record failed: the steps that did not start are skipped, naming it."""
        for step in self.plan.steps:
            if step.id not in self.results:
                result = StepResult(
                    status=Status.SKIPPED, error=f"not run: {error}", error_kind=INTERNAL
                )
                self.results[step.id] = result
                self._send(self._event("step.finished", step.id, finished_payload(step, result)))

    def _initial_state(self) -> tuple[dict[str, set[str]], deque[str]]:
        waiting: dict[str, set[str]] = {}
        ready: deque[str] = deque()
        for step in self.plan.steps:
            if step.id in self.results:
                continue
            blocked = [n for n in step.needs if n in self.results and n not in self.outputs]
            if blocked:
                self._skip(step.id, blocked[0])
                continue
            waiting[step.id] = {n for n in step.needs if n not in self.outputs}
            if not waiting[step.id]:
                ready.append(step.id)
        return waiting, ready

    def _finish(
        self, sid: str, result: StepResult, waiting: dict[str, set[str]], ready: deque[str]
    ) -> None:
        self.results[sid] = result
        if result.status is not Status.SUCCESS:
            self._skip_dependents(sid)
            return
        self.outputs[sid] = result.outputs
        for dep in self._dependents[sid]:
            pending = waiting.get(dep)
            if pending is not None and dep not in self.results:
                pending.discard(sid)
                if not pending:
                    ready.append(dep)

    def _skip_dependents(self, sid: str) -> None:
        queue = deque((dep, sid) for dep in self._dependents[sid])
        while queue:
            dep, because = queue.popleft()
            if dep not in self.results:
                self._skip(dep, because)
                queue.extend((d, dep) for d in self._dependents[dep])

    def _skip(self, sid: str, because: str) -> None:
        cause = self.results[because].status.value
        result = StepResult(status=Status.SKIPPED, error=f"dependency {because!r} {cause}")
        self.results[sid] = result
        self._send(self._event("step.finished", sid, finished_payload(self._steps[sid], result)))

    # --- one step (runs in a worker thread) -----------------------------------------------

    def execute_step(self, step: PlannedStep, where: Mapping[str, Any] | None = None) -> StepResult:
        """Run one step here and record it (``where``: e.g. worker and queue, in its
        ``step.started`` event); never raises."""
        started = utcnow()
        payload = {"department": step.department, "executor": step.executor, **(where or {})}
        error = self._send(self._event("step.started", step.id, payload, at=started))
        if error is not None:  # not run: what it did could not be recorded
            result = StepResult.failure(f"not run: {error}", kind=INTERNAL)
        else:
            try:
                result = self._run_step(step)
            except Exception as exc:  # the step boundary: nothing escapes a step
                kind = error_kind_of(exc)
                result = StepResult.failure(f"{type(exc).__name__}: {exc}", kind=kind)
        result = result.with_timings(started, utcnow())
        error = self._send(self._event("step.finished", step.id, finished_payload(step, result)))
        if error is not None and result.status is not Status.FAILED:
            done = result.status.value
            message = f"{error} (the step itself finished {done}; its result is not recorded)"
            result = replace(result, status=Status.FAILED, error=message, error_kind=INTERNAL)
            self._send(self._event("step.finished", step.id, finished_payload(step, result)))
        return result

    def _run_step(self, step: PlannedStep) -> StepResult:
        executor = self.registry.get(step.executor)
        info = executor.info
        if self.env.check and not info.supports_check:
            return StepResult(
                status=Status.SKIPPED, error=f"{step.executor} does not support check mode"
            )
        try:
            params, targets = self._rendered(step)
        except ValidationError as exc:
            return StepResult.failure("invalid params: " + _field_errors(exc), kind=INVALID)
        except InfraError as exc:
            return StepResult.failure(str(exc), kind=error_kind_of(exc))
        except ValueError as exc:
            return StepResult.failure(str(exc), kind=INVALID)
        result = self._call(executor, self._context(step, params, targets))
        return self._checked_outputs(result, info.outputs)

    def _rendered(self, step: PlannedStep) -> tuple[BaseModel, tuple[str, ...]]:
        """The step's validated params and its targets, from the outputs known now."""
        info = self.registry.get(step.executor).info
        params = info.params.model_validate(self._render(step.params, step.id, "params"))
        return params, self._targets(step)

    def _prepared(self, ids: tuple[str, ...]) -> tuple[StepContext, ...]:
        """``StepContext.followers``: the contexts of ``ids`` that render now."""
        contexts = []
        for sid in ids:
            step = self._steps[sid]
            if self.env.check and not self.registry.get(step.executor).info.supports_check:
                continue
            try:
                params, targets = self._rendered(step)
            except (ValidationError, InfraError, ValueError):
                continue  # it renders when it starts, or fails then, on its own
            contexts.append(self._context(step, params, targets))
        return tuple(contexts)

    def _call(self, executor: Executor, ctx: StepContext) -> StepResult:
        result = executor.preview(ctx) if self.env.check else executor.apply(ctx)
        if not isinstance(result, StepResult):
            name = type(result).__name__
            return StepResult.failure(f"executor returned {name}, not StepResult")
        return result

    def _checked_outputs(self, result: StepResult, model: type[BaseModel]) -> StepResult:
        if result.status is not Status.SUCCESS:
            return result
        try:
            outputs = model.model_validate(dict(result.outputs)).model_dump(mode="json")
        except ValidationError as exc:
            error = "invalid outputs: " + _field_errors(exc)
            return replace(result, status=Status.FAILED, error=error, error_kind=INVALID)
        return replace(result, outputs=outputs)

    def _render(self, value: Any, sid: str, where: str) -> Any:
        return render_value(value, self._variables, f"steps.{sid}.{where}")

    def _targets(self, step: PlannedStep) -> tuple[str, ...]:
        spec = step.targets
        if spec is None:
            return ()
        if isinstance(spec, TargetSelection):
            group = self._render(spec.group, step.id, "targets.group")
            hosts = self._render(spec.hosts, step.id, "targets.hosts")
            names = self.env.inventory.select(group=group, hosts=_as_list(hosts))
        else:
            names = _as_list(self._render(spec, step.id, "targets")) or []
        return tuple(check_safe_text(str(n)) for n in names)

    def _context(
        self, step: PlannedStep, params: BaseModel, targets: tuple[str, ...]
    ) -> StepContext:
        def emit(kind: str, data: Mapping[str, Any]) -> None:
            self.emit(self._event("step.log", step.id, {"kind": kind, **data}))

        return StepContext(
            run_id=self.env.run_id,
            project=self.plan.project,
            step_id=step.id,
            department=step.department,
            params=params,
            inventory=self.env.inventory,
            check=self.env.check,
            targets=targets,
            secrets=self.env.secrets,
            resources=self.env.resources,
            emit=emit,
            db=self.env.db,
            root=self.env.root,
            upstream={n: self.outputs[n] for n in step.needs if n in self.outputs},
            peers=self._peers.get(step.id, ()),
            followers=functools.partial(self._prepared, self._followers.get(step.id, ())),
        )

    def _event(self, kind: str, sid: str, data: Mapping[str, Any], at: Any = None) -> Event:
        if at is None:
            return Event(run_id=self.env.run_id, kind=kind, step_id=sid, data=data)
        return Event(run_id=self.env.run_id, kind=kind, step_id=sid, data=data, at=at)


class _StepsView(Mapping[str, Mapping[str, Any]]):
    """``steps.<id>.outputs`` over the live outputs dict (no copy per step)."""

    def __init__(self, outputs: Mapping[str, Mapping[str, Any]]) -> None:
        self._outputs = outputs

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        return {"outputs": self._outputs[key]}

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._outputs))

    def __len__(self) -> int:
        return len(self._outputs)


def base_variables(plan: Plan, outputs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What expressions see: project, service, requester, params, steps.<id>.outputs."""
    return {
        "project": plan.project,
        "service": plan.service,
        "requester": plan.request.requester,
        "params": dict(plan.request.params),
        "steps": _StepsView(outputs),
    }


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise ValueError(f"targets must be a name or a list of names, got {type(value).__name__}")


def _field_errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
    )


def finished_payload(
    step: PlannedStep, result: StepResult, *, reused: bool = False
) -> dict[str, Any]:
    """The ``step.finished`` event payload (see :mod:`infra_automation.events`)."""
    return {
        "department": step.department,
        "executor": step.executor,
        "status": result.status.value,
        "changed": result.changed,
        "error": result.error,
        "error_kind": result.error_kind.value if result.error_kind else None,
        "diff": result.diff,
        "outputs": dict(result.outputs),
        "targets": [
            {
                "target": t.target,
                "status": t.status.value,
                "changed": t.changed,
                "diff": t.diff,
                "error": t.error,
                "error_kind": t.error_kind.value if t.error_kind else None,
                "details": dict(t.details),
            }
            for t in result.targets
        ],
        "artifacts": dict(result.artifacts),
        "started_at": result.started_at.isoformat() if result.started_at else None,
        "finished_at": result.finished_at.isoformat() if result.finished_at else None,
        "duration": result.duration,
        "reused": reused,
    }


# --- one run per project ----------------------------------------------------------------------


FINISHING_GRACE = 30.0  # seconds a new run waits for a lease whose run the record says ended
ACTIVE_STATUSES = frozenset({QUEUED, RUNNING})


class ProjectLock:
    """The lease ``project:<name>`` of a run, renewed while it runs (RunLocked if taken).

    A holder whose run the record already says ended (``run.finished`` written; its observers,
    the docs, still at work) is waiting to let go: a new run waits for it, up to
    ``FINISHING_GRACE``, instead of being refused (a pipeline that starts the next run of the
    project as soon as the last one reported its end is not refused)."""

    def __init__(self, db: Engine, project: str, run_id: str, *, ttl: float = DEFAULT_TTL) -> None:
        self.project = project
        self.key = f"project:{project}"
        self.db = db
        self.leases = Leases(db, run_id=run_id, ttl=ttl)

    def acquire(self) -> None:
        deadline = time.monotonic() + FINISHING_GRACE
        holder = self.leases.try_acquire(self.key)
        while holder is not None and self._ended(holder.run_id) and time.monotonic() < deadline:
            time.sleep(0.1)
            holder = self.leases.try_acquire(self.key)
        if holder is not None:
            raise RunLocked(
                f"project {self.project!r} has an active run ({holder.describe()}); "
                "wait for it to finish, or for its lease to expire if its process died"
            )

    def _ended(self, run_id: str | None) -> bool:
        """Whether the record says the holder's run ended (no record of it: still active)."""
        if run_id is None:
            return False
        query = sa.select(runs_table.c.status).where(runs_table.c.id == run_id)
        try:
            with self.db.connect() as conn:
                status = conn.execute(query).scalar()
        except sa.exc.SQLAlchemyError:
            return False
        return status is not None and status not in ACTIVE_STATUSES

    def release(self) -> None:
        self.leases.close()

    def __enter__(self) -> ProjectLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
