"""``core.built``: the params a project was built with, read from the run record.

An operational change (a service with ``modifies: {service, params}``: scale, resize) acts on
a project another service built, and some of its steps depend on how it was built (the
firewall, the database tier). This executor reads that from the record, the way ``infra
verify`` and the docs read the project as built:

- the runs of the project since its last successful decommission, applied (not check mode),
  started (not queued), the asking run left out;
- the newest of them that is no operational change is the build: its request holds every
  param of its service (defaults filled in when it was validated);
- the successful operational changes since, oldest first, set the params their
  ``modifies`` names for that service (the newest value wins).

Which runs are changes comes from each run's own ``run.started`` event (``modifies`` as it
was when the run ran), so a catalog edited since reads the past as it happened. Read-only:
the dry run reads the same as the apply. No build in the record fails the step (``invalid``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from infra_automation.catalog import Modifies
from infra_automation.exceptions import ConfigurationError, InfraError
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.record import RunRecord, RunStore
from infra_automation.results import StepResult, error_kind_of
from infra_automation.validation import Name

HISTORY_LIMIT = 200  # runs of the project looked at, newest first (as infra verify)
DECOMMISSION_SUFFIX = "-decommission"


class BuiltParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Name | None = Field(default=None, description="refuse a project built by another")


class BuiltOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str  # the service that built the project
    run_id: str  # the build's run
    changes: list[str]  # the operational changes applied on top, oldest first
    params: dict[str, Any]  # the params as built, with those changes


class BuiltExecutor:
    info = ExecutorInfo(
        key="core.built",
        department="core",
        description="The params the project was built with (and changed since), from the record.",
        params=BuiltParams,
        outputs=BuiltOutputs,
        rerun_safe=True,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self.apply(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        try:
            outputs = built(ctx)
        except InfraError as exc:
            return StepResult.failure(str(exc), kind=error_kind_of(exc))
        return StepResult.success(outputs=outputs.model_dump(mode="json"))


def built(ctx: StepContext) -> BuiltOutputs:
    """The project as built (ConfigurationError: no build, or another service's)."""
    if ctx.db is None:
        raise ConfigurationError("core.built: no database: the run record's engine is required")
    params = ctx.typed_params(BuiltParams)
    store = RunStore(ctx.db)
    runs = since_decommission(
        r
        for r in store.list_runs(ctx.project, limit=HISTORY_LIMIT)
        if not r.check and r.status != "queued" and r.id != ctx.run_id
    )
    changes: list[tuple[RunRecord, Modifies]] = []
    for run in runs:
        modifies = modifies_of(store, run)
        if modifies is None:
            return _outputs(ctx.project, run, changes, params.service)
        if run.status == "success":
            changes.append((run, modifies))
    raise ConfigurationError(
        f"project {ctx.project!r} has no build in the record (an applied run of a service "
        "that is no operational change, since its last decommission)"
    )


def since_decommission(runs: Iterable[RunRecord]) -> list[RunRecord]:
    """The runs (newest first) after the last successful decommission (``infra verify``
    reads the project from these too)."""
    kept: list[RunRecord] = []
    for run in runs:
        if run.service.endswith(DECOMMISSION_SUFFIX):
            if run.status == "success":
                break
            continue
        kept.append(run)
    return kept


def modifies_of(store: RunStore, run: RunRecord) -> Modifies | None:
    """What ``run`` modified as its ``run.started`` event recorded it (None: a build)."""
    started = store.events(run.id, kind="run.started")
    data = started[0].data.get("modifies") if started else None
    return Modifies.model_validate(data) if isinstance(data, Mapping) else None


def with_changes(
    build: RunRecord, changes: Sequence[tuple[RunRecord, Modifies]]
) -> tuple[dict[str, Any], list[str]]:
    """The build's params with those the successful ``changes`` (newest first) of its
    service set, and the ids of the changes applied (oldest first: the newest value wins)."""
    params = dict(build.request.get("params") or {})
    applied: list[str] = []
    for run, modifies in reversed(changes):
        if modifies.service != build.service:
            continue
        given = run.request.get("params") or {}
        params.update({name: given[name] for name in modifies.params if name in given})
        applied.append(run.id)
    return params, applied


def _outputs(
    project: str,
    build: RunRecord,
    changes: Sequence[tuple[RunRecord, Modifies]],
    service: str | None,
) -> BuiltOutputs:
    if service is not None and build.service != service:
        raise ConfigurationError(
            f"service: project {project!r} was built by {build.service!r}, not {service!r}"
        )
    params, applied = with_changes(build, changes)
    return BuiltOutputs(service=build.service, run_id=build.id, changes=applied, params=params)
