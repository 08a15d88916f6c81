"""``os.playbook_hosts``: ``os.playbook`` on the hosts a step is given, where none is fine.

An operational change decides at run time which VMs it touches (``vmware.tier``: the VMs a
scale-up adds, the ones a scale-down removes), and one direction leaves the other's list
empty. ``os.playbook`` refuses a step without hosts (a catalog mistake for a build); this
executor runs the same playbook the same way when there are hosts, and otherwise succeeds,
unchanged, with nothing run.
"""

from __future__ import annotations

import dataclasses

from infra_automation.departments.ansible import PlaybookExecutor, PlaybookOutputs, PlaybookParams
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.results import StepResult


class HostsPlaybookExecutor(PlaybookExecutor):
    info: ExecutorInfo = dataclasses.replace(
        PlaybookExecutor.info,
        key="os.playbook_hosts",
        description="Run an Ansible playbook on the hosts given; none given: nothing to do.",
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self._nothing(ctx) or super().preview(ctx)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._nothing(ctx) or super().apply(ctx)

    @staticmethod
    def _nothing(ctx: StepContext) -> StepResult | None:
        params = ctx.typed_params(PlaybookParams)
        if params.hosts or ctx.targets:
            return None
        outputs = PlaybookOutputs(playbook=params.playbook, check=ctx.check)
        return StepResult.success(outputs=outputs.model_dump())
