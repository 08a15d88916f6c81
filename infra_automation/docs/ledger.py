"""The as-built ledger: one document per project, folded from run events, kept in the run
database (``infra_project_state``, :class:`DatabaseLedgerStore`) so that the server, the
workers and every checkout sharing the database render the same state.

The ledger holds what the docs are rendered from:

- ``state``: the current landscape, i.e. the latest successful outputs of each step of applied
  (not check-mode) runs. A resumed run that reuses a result keeps it; a removal step (any step
  of a ``*-decommission`` service, or an executor whose action is ``decommission``,
  ``unconfigure``, ``release``...) moves what it removed from ``state`` to ``removed``.
- ``plan``: the steps of the latest applied run with each step's last status.
- ``runs``: the history (dry runs included), keyed by run id, so that re-processing the events
  of a run replaces its entry instead of duplicating it.
- ``verification``: the latest ``infra verify`` of the project (``verify.finished``: when, the
  overall state, counts, the resources not in sync with their diffs) and ``verifications``,
  the short history of earlier ones (newest last, at most :data:`VERIFICATIONS_KEPT`).

Everything is scrubbed (:func:`~infra_automation.docs.safety.scrub`) on the way in, so the
ledger never holds a secret either. Without a database (a library caller folding events by
hand) ledgers are files, ``<root>/.infra/docs/<project>.json``, written atomically
(:class:`LedgerStore`); a database store still reads a project's file until it writes that
project (ledgers written before they moved to the database are kept).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.dialects import postgresql, sqlite

from infra_automation.docs.safety import scrub, scrub_text, slug
from infra_automation.events import Event, utcnow
from infra_automation.exceptions import ConfigurationError
from infra_automation.files import write_atomic
from infra_automation.record import describe_failure, project_states, runs

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

LEDGER_VERSION = 1
DECOMMISSION_SUFFIX = "-decommission"
VERIFICATIONS_KEPT = 20
REMOVAL_ACTIONS = frozenset({"decommission", "unconfigure", "release", "remove", "delete"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TargetRecord(_Model):
    target: str
    status: str = ""
    changed: bool = False
    diff: str = ""
    error: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    diff_run: str | None = None  # the run whose change the diff shows (kept when unchanged)


class StepRecord(_Model):
    """One step of one run, as the history shows it."""

    step_id: str
    executor: str = ""
    department: str = ""
    status: str = "pending"
    changed: bool = False
    reused: bool = False
    error: str | None = None
    diff: str = ""
    targets: list[TargetRecord] = Field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    duration: float | None = None


class RunRecord(_Model):
    run_id: str
    service: str = ""
    requester: str = ""
    check: bool = False
    status: str = "running"
    resumed_from: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    changed: bool = False
    params: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, StepRecord] = Field(default_factory=dict)
    failed_steps: list[str] = Field(default_factory=list)
    skipped_steps: list[str] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("success", "failed")


class PlanStep(_Model):
    id: str
    department: str = ""
    executor: str = ""
    needs: list[str] = Field(default_factory=list)
    description: str = ""
    status: str = "pending"
    reused: bool = False
    error: str | None = None


class Resource(_Model):
    """What one step built and read back, as it stands now."""

    step_id: str
    executor: str = ""
    department: str = ""
    outputs: dict[str, Any] = Field(default_factory=dict)
    targets: list[TargetRecord] = Field(default_factory=list)
    run_id: str = ""
    updated_at: str | None = None


class Removed(_Model):
    step_id: str
    executor: str = ""
    department: str = ""
    outputs: dict[str, Any] = Field(default_factory=dict)
    removed_by: str = ""
    removed_at: str | None = None


class DriftRecord(_Model):
    """A resource that was not in sync when the project was last verified."""

    step_id: str = ""
    department: str = ""
    resource: str = ""
    target: str = ""
    state: str = ""
    reason: str = ""
    diff: str = ""


class VerificationRecord(_Model):
    verify_id: str
    state: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    duration: float | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    based_on: list[str] = Field(default_factory=list)
    steps: dict[str, str] = Field(default_factory=dict)  # step id -> state
    open: list[DriftRecord] = Field(default_factory=list)
    note: str = ""
    error: str | None = None


class ProjectLedger(_Model):
    version: int = LEDGER_VERSION
    project: str
    service: str = ""
    requester: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    decommissioned: bool = False
    plan_run_id: str | None = None
    plan: list[PlanStep] = Field(default_factory=list)
    state: dict[str, Resource] = Field(default_factory=dict)
    removed: list[Removed] = Field(default_factory=list)
    runs: list[RunRecord] = Field(default_factory=list)
    verification: VerificationRecord | None = None
    verifications: list[VerificationRecord] = Field(default_factory=list)

    def run(self, run_id: str) -> RunRecord | None:
        return next((r for r in self.runs if r.run_id == run_id), None)

    def latest_applied(self) -> RunRecord | None:
        applied = [r for r in self.runs if not r.check]
        return applied[-1] if applied else None

    def latest(self) -> RunRecord | None:
        return self.runs[-1] if self.runs else None

    @property
    def departments(self) -> list[str]:
        seen = {s.department for s in self.plan if s.department}
        seen |= {r.department for r in self.state.values() if r.department}
        return sorted(seen)


# --------------------------------------------------------------------------- folding events


def apply_event(ledger: ProjectLedger, event: Event) -> bool:
    """Fold one event into the ledger; returns True if the ledger changed."""
    handler = _HANDLERS.get(event.kind)
    if handler is None:
        return False
    data = scrub(dict(event.data))
    handler(ledger, event, data)
    return True


def _on_run_started(ledger: ProjectLedger, event: Event, data: dict[str, Any]) -> None:
    request = data.get("request") or {}
    run = ledger.run(event.run_id)
    if run is None:
        run = RunRecord(run_id=event.run_id)
        ledger.runs.append(run)
    run.service = str(data.get("service") or request.get("service") or "")
    run.requester = str(data.get("requester") or request.get("requester") or "")
    run.check = bool(data.get("check", False))
    run.resumed_from = data.get("resumed_from")
    run.started_at = run.started_at or event.at.isoformat()
    run.status = "running"
    run.params = dict(request.get("params") or {})
    plan = [_plan_step(item) for item in data.get("plan") or []]
    run.steps = {
        p.id: StepRecord(step_id=p.id, executor=p.executor, department=p.department) for p in plan
    }
    ledger.runs.sort(key=lambda r: r.started_at or "")
    latest = not run.check and _is_latest_applied(ledger, run)
    modifies = data.get("modifies") or {}
    if latest and ledger.service and modifies.get("service") == ledger.service:
        # an operational change (scale, resize): the project stays the build, with the
        # values of the params the change sets; its plan stays the build's
        names = [str(n) for n in modifies.get("params") or []]
        ledger.params = {**ledger.params, **{n: run.params[n] for n in names if n in run.params}}
        return
    if (latest and not is_decommission(run.service)) or not ledger.service:
        ledger.service = run.service
        ledger.requester = run.requester
        ledger.params = run.params
    if latest:
        ledger.plan = plan
        ledger.plan_run_id = run.run_id
        if not is_decommission(run.service):
            ledger.decommissioned = False


def _plan_step(item: Mapping[str, Any]) -> PlanStep:
    return PlanStep(
        id=str(item.get("id", "")),
        department=str(item.get("department") or ""),
        executor=str(item.get("executor") or ""),
        needs=[str(n) for n in item.get("needs") or []],
        description=str(item.get("description") or ""),
    )


def _on_step_finished(ledger: ProjectLedger, event: Event, data: dict[str, Any]) -> None:
    run = _run_for(ledger, event)
    step_id = event.step_id or str(data.get("step_id") or "")
    if not step_id:
        return
    record = _step_record(step_id, data)
    run.steps[step_id] = record
    if run.check or not _is_latest_applied(ledger, run):
        return
    _update_plan(ledger, record)
    if record.status != "success":
        return
    if is_decommission(run.service) or is_removal(record.executor):
        _remove(ledger, record, dict(data.get("outputs") or {}), run, event)
    elif not (record.reused and step_id in ledger.state):  # reused: keep what was read back
        ledger.state[step_id] = Resource(
            step_id=step_id,
            executor=record.executor,
            department=record.department,
            outputs=dict(data.get("outputs") or {}),
            targets=_carry_diffs(
                [_target(t, details=True) for t in data.get("targets") or []],
                ledger.state.get(step_id),
                run.run_id,
            ),
            run_id=(run.resumed_from if record.reused else None) or run.run_id,
            updated_at=record.finished_at or event.at.isoformat(),
        )


def _step_record(step_id: str, data: Mapping[str, Any]) -> StepRecord:
    return StepRecord(
        step_id=step_id,
        executor=str(data.get("executor") or ""),
        department=str(data.get("department") or ""),
        status=str(data.get("status") or "failed"),
        changed=bool(data.get("changed", False)),
        reused=bool(data.get("reused", False)),
        error=scrub_text(data.get("error")) or None,
        diff=scrub_text(data.get("diff")),
        targets=[_target(t, details=False) for t in data.get("targets") or []],
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        duration=data.get("duration"),
    )


def _target(item: Mapping[str, Any], *, details: bool) -> TargetRecord:
    return TargetRecord(
        target=str(item.get("target", "")),
        status=str(item.get("status") or ""),
        changed=bool(item.get("changed", False)),
        diff=scrub_text(item.get("diff")),
        error=scrub_text(item.get("error")) or None,
        details=dict(item.get("details") or {}) if details else {},
    )


def _carry_diffs(
    targets: list[TargetRecord], previous: Resource | None, run_id: str
) -> list[TargetRecord]:
    """A target left unchanged keeps the diff of the run that last changed it."""
    before = {t.target: t for t in previous.targets} if previous else {}
    for target in targets:
        old = before.get(target.target)
        if target.diff:
            target.diff_run = run_id
        elif old is not None and old.diff:
            target.diff, target.diff_run = old.diff, old.diff_run
    return targets


def _update_plan(ledger: ProjectLedger, record: StepRecord) -> None:
    for step in ledger.plan:
        if step.id == record.step_id:
            step.status = record.status
            step.reused = record.reused
            step.error = record.error


def _remove(
    ledger: ProjectLedger,
    record: StepRecord,
    outputs: dict[str, Any],
    run: RunRecord,
    event: Event,
) -> None:
    """A removal step succeeded: what its executor family built is gone."""
    family = record.executor.partition(".")[0]
    gone = [k for k, r in ledger.state.items() if r.executor.partition(".")[0] == family]
    for key in gone:
        _forget(ledger, key, run.run_id, event.at.isoformat())
    ledger.removed.append(
        Removed(
            step_id=record.step_id,
            executor=record.executor,
            department=record.department,
            outputs=outputs,
            removed_by=run.run_id,
            removed_at=event.at.isoformat(),
        )
    )


def _forget(ledger: ProjectLedger, key: str, run_id: str, at: str) -> None:
    resource = ledger.state.pop(key)
    ledger.removed.append(
        Removed(
            step_id=resource.step_id,
            executor=resource.executor,
            department=resource.department,
            outputs=resource.outputs,
            removed_by=run_id,
            removed_at=at,
        )
    )


def _on_run_finished(ledger: ProjectLedger, event: Event, data: dict[str, Any]) -> None:
    run = _run_for(ledger, event)
    run.status = str(data.get("status") or "failed")
    run.finished_at = data.get("finished_at") or event.at.isoformat()
    run.started_at = run.started_at or data.get("started_at")
    run.changed = bool(data.get("changed", any(s.changed for s in run.steps.values())))
    run.failed_steps = [str(s) for s in data.get("failed_steps") or []]
    run.skipped_steps = [str(s) for s in data.get("skipped_steps") or []]
    for step_id in run.skipped_steps:
        step = run.steps.setdefault(step_id, StepRecord(step_id=step_id))
        if step.status == "pending":
            step.status = "skipped"
    if run.check or not _is_latest_applied(ledger, run):
        return
    for planned in ledger.plan:
        if planned.id in run.skipped_steps and planned.status == "pending":
            planned.status = "skipped"
    if is_decommission(run.service) and run.status == "success":
        for key in list(ledger.state):
            _forget(ledger, key, run.run_id, run.finished_at)
        ledger.decommissioned = True


def _run_for(ledger: ProjectLedger, event: Event) -> RunRecord:
    """The run an event belongs to (created if its run.started was never seen)."""
    run = ledger.run(event.run_id)
    if run is None:
        run = RunRecord(run_id=event.run_id, started_at=event.at.isoformat())
        ledger.runs.append(run)
        ledger.runs.sort(key=lambda r: r.started_at or "")
    return run


def _is_latest_applied(ledger: ProjectLedger, run: RunRecord) -> bool:
    latest = ledger.latest_applied()
    return latest is not None and latest.run_id == run.run_id


def is_decommission(service: str) -> bool:
    return service.endswith(DECOMMISSION_SUFFIX)


def is_removal(executor: str) -> bool:
    return executor.partition(".")[2] in REMOVAL_ACTIONS


def _on_verify_finished(ledger: ProjectLedger, event: Event, data: dict[str, Any]) -> None:
    record = VerificationRecord(
        verify_id=event.run_id,
        state=str(data.get("state") or ""),
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at") or event.at.isoformat(),
        duration=data.get("duration"),
        counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
        based_on=[str(r) for r in data.get("based_on") or []],
        steps={str(k): str(v) for k, v in (data.get("steps") or {}).items()},
        open=[_drift(item) for item in data.get("open") or []],
        note=str(data.get("note") or ""),
        error=scrub_text(data.get("error")) or None,
    )
    kept = [v for v in ledger.verifications if v.verify_id != record.verify_id]
    ledger.verifications = [*kept, record][-VERIFICATIONS_KEPT:]
    ledger.verification = ledger.verifications[-1]


def _drift(item: Mapping[str, Any]) -> DriftRecord:
    return DriftRecord(
        step_id=str(item.get("step_id") or ""),
        department=str(item.get("department") or ""),
        resource=scrub_text(item.get("resource")),
        target=scrub_text(item.get("target")),
        state=str(item.get("state") or ""),
        reason=scrub_text(item.get("reason")),
        diff=scrub_text(item.get("diff")),
    )


_HANDLERS = {
    "run.started": _on_run_started,
    "step.finished": _on_step_finished,
    "run.finished": _on_run_finished,
    "verify.finished": _on_verify_finished,
}


# --------------------------------------------------------------------------- storage


class Ledgers(Protocol):
    """Where ledgers are kept: the database (:class:`DatabaseLedgerStore`) or files."""

    def load(self, project: str) -> ProjectLedger: ...

    def save(self, ledger: ProjectLedger) -> object: ...

    def has(self, project: str) -> bool: ...

    def projects(self) -> list[str]: ...

    def all(self) -> Iterator[ProjectLedger]: ...

    def stamps(self) -> dict[str, object]:
        """Each project's version stamp (changes whenever its ledger is saved), without
        reading the ledgers: what lets a reader keep rows of unchanged projects."""
        ...

    def broken(self) -> list[tuple[object, str]]: ...

    def find_run(self, run_id: str) -> str | None: ...


def ledger_store(root: Path, db: Engine | None) -> Ledgers:
    """The ledgers of the project root ``root``: in ``db`` when there is one, else files."""
    files = LedgerStore.for_root(root)
    return files if db is None else DatabaseLedgerStore(db, files=files)


class LedgerStore:
    """Ledgers as ``<folder>/<project>.json`` (default ``<root>/.infra/docs``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._names: dict[Path, tuple[tuple[int, int], str]] = {}

    @classmethod
    def for_root(cls, root: Path) -> LedgerStore:
        return cls(root / ".infra" / "docs")

    def path(self, project: str) -> Path:
        return self.folder / f"{slug(project)}.json"

    def load(self, project: str) -> ProjectLedger:
        path = self.path(project)
        if not path.is_file():
            return ProjectLedger(project=project)
        return self._read(path)

    def save(self, ledger: ProjectLedger) -> Path:
        path = self.path(ledger.project)
        write_atomic(path, ledger.model_dump_json(indent=2) + "\n")
        return path

    def has(self, project: str) -> bool:
        return self.path(project).is_file()

    def projects(self) -> list[str]:
        return sorted(ledger.project for ledger in self.all())

    def all(self) -> Iterator[ProjectLedger]:
        """Every readable ledger; a corrupt one is left out (see :meth:`broken`) and logged,
        so that one bad file never hides the other projects."""
        for path in self._paths():
            try:
                yield self._read(path)
            except ConfigurationError as exc:
                log.warning("%s", exc)

    def stamps(self) -> dict[str, object]:
        """Project -> (mtime, size) of its file; the project name is read only from files
        not seen before (``_names``), as a file's name is the project's slug."""
        found: dict[str, object] = {}
        for path in self._paths():
            try:
                info = path.stat()
                project = self._name(path, (info.st_mtime_ns, info.st_size))
            except (OSError, ConfigurationError):
                continue
            if project is not None:
                found[project] = (info.st_mtime_ns, info.st_size)
        return found

    def _name(self, path: Path, stamp: tuple[int, int]) -> str | None:
        cached = self._names.get(path)
        if cached is None or cached[0] != stamp:
            cached = (stamp, self._read(path).project)
            self._names[path] = cached
        return cached[1]

    def broken(self) -> list[tuple[object, str]]:
        """The ledgers that cannot be read, with the reason."""
        found: list[tuple[object, str]] = []
        for path in self._paths():
            try:
                self._read(path)
            except ConfigurationError as exc:
                found.append((path, str(exc)))
        return found

    def _paths(self) -> list[Path]:
        return sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []

    def find_run(self, run_id: str) -> str | None:
        """The project a run belongs to, by looking through the ledgers."""
        for ledger in self.all():
            if ledger.run(run_id) is not None:
                return ledger.project
        return None

    @staticmethod
    def _read(path: Path) -> ProjectLedger:
        try:
            return ProjectLedger.model_validate_json(path.read_bytes())
        except ValidationError as exc:
            reasons = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()
            )  # without the input: the file's content is not repeated
            raise ConfigurationError(f"{path}: not a readable docs ledger: {reasons}") from exc
        except OSError as exc:
            raise ConfigurationError(f"{path}: not a readable docs ledger: {exc}") from exc


class DatabaseLedgerStore:
    """Ledgers as rows of ``infra_project_state`` (project, ledger document, updated_at).

    ``files``: the ledger files of the root, read for a project the database does not hold
    yet (written before ledgers moved to the database); the next save moves it over."""

    def __init__(self, db: Engine, *, files: LedgerStore | None = None) -> None:
        self.db = db
        self.files = files

    def load(self, project: str) -> ProjectLedger:
        row = self._row(project)
        if row is not None:
            return _parse(project, row)
        if self.files is not None and self.files.has(project):
            return self.files.load(project)
        return ProjectLedger(project=project)

    def save(self, ledger: ProjectLedger) -> str:
        values = {
            "project": ledger.project,
            "ledger": ledger.model_dump(mode="json"),
            "updated_at": utcnow(),
        }
        try:
            with self.db.begin() as conn:  # one statement: two writers never collide
                insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
                statement = insert(project_states).values(**values)
                conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[project_states.c.project],
                        set_={c: statement.excluded[c] for c in ("ledger", "updated_at")},
                    )
                )
        except sa.exc.SQLAlchemyError as exc:
            message = describe_failure(exc, self.db, "save the docs ledger")
            raise ConfigurationError(message) from None
        return ledger.project

    def has(self, project: str) -> bool:
        return self._row(project) is not None or bool(self.files and self.files.has(project))

    def projects(self) -> list[str]:
        return sorted(ledger.project for ledger in self.all())

    def all(self) -> Iterator[ProjectLedger]:
        """Every readable ledger (a broken one is logged and left out, see :meth:`broken`)."""
        stored = self._rows()
        for project, document in stored.items():
            try:
                yield _parse(project, document)
            except ConfigurationError as exc:
                log.warning("%s", exc)
        if self.files is not None:
            yield from (x for x in self.files.all() if x.project not in stored)

    def stamps(self) -> dict[str, object]:
        """Project -> ``updated_at`` of its row (files of projects not moved over yet too)."""
        query = sa.select(project_states.c.project, project_states.c.updated_at)
        with self.db.connect() as conn:
            stored: dict[str, object] = {str(p): at for p, at in conn.execute(query)}
        files = self.files.stamps() if self.files is not None else {}
        return {**{p: ("file", s) for p, s in files.items()}, **stored}

    def broken(self) -> list[tuple[object, str]]:
        found: list[tuple[object, str]] = []
        for project, document in self._rows().items():
            try:
                _parse(project, document)
            except ConfigurationError as exc:
                found.append((project, str(exc)))
        return found + (self.files.broken() if self.files is not None else [])

    def find_run(self, run_id: str) -> str | None:
        """The project of a run: from the run record, else from the ledgers' histories."""
        with self.db.connect() as conn:
            project = conn.execute(sa.select(runs.c.project).where(runs.c.id == run_id)).scalar()
        if project:
            return str(project)
        return next((x.project for x in self.all() if x.run(run_id) is not None), None)

    def _row(self, project: str) -> Any:
        query = sa.select(project_states.c.ledger).where(project_states.c.project == project)
        with self.db.connect() as conn:
            return conn.execute(query).scalar()

    def _rows(self) -> dict[str, Any]:
        query = sa.select(project_states.c.project, project_states.c.ledger).order_by(
            project_states.c.project
        )
        with self.db.connect() as conn:
            return {str(p): doc for p, doc in conn.execute(query)}


def _parse(project: str, document: Any) -> ProjectLedger:
    try:
        return ProjectLedger.model_validate(document)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(
            f"the docs ledger of project {project!r} is not readable: {reasons}"
        ) from exc
