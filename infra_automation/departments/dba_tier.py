"""``dba.postgresql_tier``: ``dba.postgresql`` where an operational change may find no database.

A scale of the web tier decides at run time whether the project has a database tier (the db
VM that ``vmware.tier`` reads from the project folder, the build's params that ``core.built``
reads from the record): with one, the database is opened to the tier as it is now (``pg_hba``
admits the added web VMs, no longer the removed ones; each client gets the connection file
its landing page reads), exactly as ``dba.postgresql`` does it, same params, same outputs, so
that ``infra verify`` reads the new state as the build's; without one (``server`` none),
the step succeeds unchanged with nothing run, as ``os.playbook_hosts`` does without hosts.
"""

from __future__ import annotations

import dataclasses

from pydantic import Field

from infra_automation.departments.ansible import HostAddress
from infra_automation.departments.dba import PostgresExecutor, PostgresOutputs, PostgresParams
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.results import StepResult


class TierParams(PostgresParams):
    server: HostAddress | None = Field(  # type: ignore[assignment]  # None: no database tier
        default=None, description="the database VM; none: the project has no database tier"
    )
    clients: list[HostAddress] = Field(default_factory=list, max_length=50)


class PostgresTierExecutor(PostgresExecutor):
    info: ExecutorInfo = dataclasses.replace(
        PostgresExecutor.info,
        key="dba.postgresql_tier",
        description="dba.postgresql for the web tier as it is now; no database VM: nothing to do.",
        params=TierParams,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self._tier(ctx, check=True)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._tier(ctx, check=ctx.check)

    def _tier(self, ctx: StepContext, *, check: bool) -> StepResult:
        params = ctx.typed_params(TierParams)
        if params.server is None:
            outputs = PostgresOutputs(database=params.db, owner=params.role, server="", check=check)
            return StepResult.success(outputs=outputs.model_dump())
        built = PostgresParams.model_validate(params.model_dump())
        return self._run(dataclasses.replace(ctx, params=built), check=check)
