"""Planner: a validated request and its catalog service become a DAG of steps, in waves.

Refused at plan time, before anything runs:

- dependency cycles (:class:`CycleError` names the loop) and unknown dependencies
  (:class:`UnknownStepError`);
- executor keys nobody registered (:class:`ExecutorNotFound`);
- expressions reading ``steps.<id>.outputs.<field>`` of a step that is not a transitive
  dependency, that is left out by ``when``, or whose executor's outputs model has no
  ``<field>`` (:class:`ReferenceError_`); unknown ``params.<name>``;
- static (expression-free) step params that the executor's params model rejects.

A step whose ``when`` is false is left out; its dependents inherit its own dependencies
in place of the edge to it, so order is kept.

Planning needs only what executors declare (``registry.info``), never their SDKs. Each
planned step is pinned (:mod:`infra_automation.pinning`): its fingerprint goes into
:meth:`Plan.summary`, the plan a run records.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ValidationError

from infra_automation.catalog import Service, StepDef, TargetSelection
from infra_automation.exceptions import (
    CycleError,
    ExecutorNotFound,
    PlanningError,
    ReferenceError_,
    RenderError,
    UnknownStepError,
)
from infra_automation.executors.base import ExecutorInfo
from infra_automation.executors.registry import ExecutorRegistry
from infra_automation.pinning import StepPin, pin_step
from infra_automation.render import render_value
from infra_automation.request import Request

_PARSER = ImmutableSandboxedEnvironment()


@dataclass(frozen=True)
class PlannedStep:
    """One step of a plan: who owns it, what it needs, its raw params and targets."""

    id: str
    department: str
    executor: str
    needs: tuple[str, ...]
    wave: int
    params: Mapping[str, Any]
    targets: TargetSelection | str | None = None
    description: str = ""
    when: bool | str | None = None
    pin: StepPin | None = None

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the step's definition (see :mod:`infra_automation.pinning`)."""
        return self.pin.fingerprint if self.pin is not None else ""

    def to_dict(self) -> dict[str, Any]:
        targets: Any = self.targets
        if isinstance(targets, TargetSelection):
            targets = targets.model_dump(exclude_none=True)
        return {
            "id": self.id,
            "department": self.department,
            "executor": self.executor,
            "needs": list(self.needs),
            "wave": self.wave,
            "description": self.description,
            "params": dict(self.params),
            "targets": targets,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Plan:
    """Steps in topological order (wave by wave) for one request."""

    request: Request
    steps: tuple[PlannedStep, ...]
    left_out: tuple[str, ...] = ()

    @property
    def service(self) -> str:
        return self.request.service

    @property
    def project(self) -> str:
        return self.request.project

    @property
    def waves(self) -> list[list[str]]:
        out: list[list[str]] = []
        for step in self.steps:
            while len(out) <= step.wave:
                out.append([])
            out[step.wave].append(step.id)
        return out

    @cached_property
    def _index(self) -> dict[str, PlannedStep]:
        return {s.id: s for s in self.steps}

    def step(self, step_id: str) -> PlannedStep:
        try:
            return self._index[step_id]
        except KeyError:
            raise UnknownStepError(f"plan has no step {step_id!r}") from None

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {s.id: [] for s in self.steps}
        for s in self.steps:
            for need in s.needs:
                out[need].append(s.id)
        return out

    def summary(self) -> list[dict[str, Any]]:
        """The ``plan`` of the ``run.started`` event (the record keeps it as the run's plan)."""
        return [
            {
                "id": s.id,
                "department": s.department,
                "executor": s.executor,
                "needs": list(s.needs),
                "description": s.description,
                "fingerprint": s.fingerprint,
                "pin": s.pin.to_dict() if s.pin is not None else None,
            }
            for s in self.steps
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "project": self.project,
            "request": self.request.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
            "waves": self.waves,
            "left_out": list(self.left_out),
        }

    def to_mermaid(self) -> str:
        lines = ["flowchart LR"]
        by_dept: dict[str, list[PlannedStep]] = {}
        for s in self.steps:
            by_dept.setdefault(s.department, []).append(s)
        for dept, steps in by_dept.items():
            lines.append(f'  subgraph dept_{dept.replace("-", "_")}["{dept}"]')
            lines += [f'    step_{s.id}["{s.id}<br/>{s.executor}"]' for s in steps]
            lines.append("  end")
        lines += [f"  step_{need} --> step_{s.id}" for s in self.steps for need in s.needs]
        return "\n".join(lines) + "\n"


def build_plan(
    service: Service, request: Request, registry: ExecutorRegistry, *, root: Path | None = None
) -> Plan:
    """Plan ``request`` for ``service``; raises a :class:`PlanningError` subclass if refused.

    ``root`` is the project root whose content files (templates, playbooks) the steps' pins
    digest; without it the pins leave content out.
    """
    _check_needs(service)
    _check_cycles({s.id: list(s.needs) for s in service.steps})
    infos = _executor_infos(service, registry)
    included = _included(service, request)
    needs = _effective_needs(service, included)
    waves = _waves(needs)
    ordered = sorted(needs, key=lambda sid: waves[sid])
    checker = _ReferenceChecker(service, request, needs, infos, included)
    index = {s.id: s for s in service.steps}
    steps: list[PlannedStep] = []
    for sid in ordered:
        step = index[sid]
        checker.check(step)
        _check_static_params(step, infos[step.executor].params)
        pin = pin_step(step, infos[step.executor], root)
        steps.append(_planned(step, tuple(needs[sid]), waves[sid], pin))
    left_out = tuple(s.id for s in service.steps if s.id not in included)
    return Plan(request=request, steps=tuple(steps), left_out=left_out)


def _planned(step: StepDef, needs: tuple[str, ...], wave: int, pin: StepPin) -> PlannedStep:
    return PlannedStep(
        id=step.id,
        department=step.department,
        executor=step.executor,
        needs=needs,
        wave=wave,
        params=step.params,
        targets=step.targets,
        description=step.description,
        when=step.when,
        pin=pin,
    )


# --- structure ---------------------------------------------------------------------------------


def _check_needs(service: Service) -> None:
    ids = {s.id for s in service.steps}
    for step in service.steps:
        for need in step.needs:
            if need not in ids:
                raise UnknownStepError(f"step {step.id!r} needs unknown step {need!r}")
            if need == step.id:
                raise CycleError([step.id, step.id])


def _check_cycles(graph: Mapping[str, Sequence[str]]) -> None:
    """Iterative DFS; raises CycleError with the loop, e.g. ``a -> b -> a``."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in graph:
        if state.get(start):
            continue
        path: list[str] = [start]
        iters: list[Iterator[str]] = [iter(graph[start])]
        state[start] = 1
        while iters:
            nxt = next(iters[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                iters.pop()
            elif state.get(nxt) == 1:
                raise CycleError([*path[path.index(nxt) :], nxt])
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                iters.append(iter(graph[nxt]))


def _waves(needs: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Topological level of each step (0 = no dependencies). Needs an acyclic graph."""
    wave: dict[str, int] = {}
    for start in needs:
        stack = [start]
        while stack:
            sid = stack[-1]
            pending = [n for n in needs[sid] if n not in wave]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            wave[sid] = 1 + max((wave[n] for n in needs[sid]), default=-1)
    return wave


def _executor_infos(service: Service, registry: ExecutorRegistry) -> dict[str, ExecutorInfo]:
    infos: dict[str, ExecutorInfo] = {}
    for step in service.steps:
        if step.executor in infos:
            continue
        if step.executor not in registry:
            known = ", ".join(registry.keys()) or "none"
            raise ExecutorNotFound(
                f"step {step.id!r}: no executor {step.executor!r} (known: {known})"
            )
        infos[step.executor] = registry.info(step.executor)
    return infos


# --- when: ------------------------------------------------------------------------------------


def _included(service: Service, request: Request) -> set[str]:
    variables = {
        "project": request.project,
        "service": request.service,
        "requester": request.requester,
        "params": dict(request.params),
    }
    return {s.id for s in service.steps if _when(s, variables)}


def _when(step: StepDef, variables: Mapping[str, Any]) -> bool:
    if step.when is None or isinstance(step.when, bool):
        return step.when is not False
    expr = step.when if "{{" in step.when else "{{ " + step.when + " }}"
    try:
        value = render_value(expr, variables, f"steps.{step.id}.when")
    except RenderError as exc:
        raise PlanningError(f"step {step.id!r}: cannot evaluate 'when': {exc}") from exc
    if not isinstance(value, bool):
        raise PlanningError(f"step {step.id!r}: 'when' must be true or false, got {value!r}")
    return value


def _effective_needs(service: Service, included: set[str]) -> dict[str, list[str]]:
    """Needs among included steps; an edge to a left-out step becomes that step's needs."""
    raw = {s.id: list(s.needs) for s in service.steps}
    memo: dict[str, list[str]] = {}

    def resolve(sid: str) -> list[str]:
        if sid not in memo:
            out: list[str] = []
            for need in raw[sid]:
                for n in [need] if need in included else resolve(need):
                    if n not in out:
                        out.append(n)
            memo[sid] = out
        return memo[sid]

    return {sid: resolve(sid) for sid in raw if sid in included}


# --- references -------------------------------------------------------------------------------


class _ReferenceChecker:
    """Checks every expression of a step against the plan (upstream, fields, params)."""

    def __init__(
        self,
        service: Service,
        request: Request,
        needs: Mapping[str, Sequence[str]],
        infos: Mapping[str, ExecutorInfo],
        included: set[str],
    ) -> None:
        self.executors = {s.id: s.executor for s in service.steps}
        self.params = set(request.params)
        self.needs = needs
        self.infos = infos
        self.included = included
        self._upstream: dict[str, set[str]] = {}

    def check(self, step: StepDef) -> None:
        for where, text in _expressions(step):
            for chain in _chains(text, f"steps.{step.id}.{where}"):
                self._check_chain(step.id, where, chain)

    def _check_chain(self, sid: str, where: str, chain: list[str]) -> None:
        root, rest = chain[0], chain[1:]
        if root == "params" and rest and rest[0] not in self.params:
            raise PlanningError(f"step {sid!r} {where}: unknown parameter 'params.{rest[0]}'")
        if root != "steps":
            return
        if not rest:
            raise ReferenceError_(
                f"step {sid!r} {where}: 'steps' must be read as steps.<id>.outputs.<field>"
            )
        self._check_step_ref(sid, where, rest)

    def _check_step_ref(self, sid: str, where: str, rest: list[str]) -> None:
        ref = rest[0]
        if ref not in self.executors:
            raise UnknownStepError(f"step {sid!r} {where}: reads outputs of unknown step {ref!r}")
        if ref not in self.included:
            raise ReferenceError_(
                f"step {sid!r} {where}: reads outputs of step {ref!r}, which is left out (when)"
            )
        if ref not in self.upstream(sid):
            raise ReferenceError_(
                f"step {sid!r} {where}: reads outputs of step {ref!r}, which is not upstream "
                f"(add it to 'needs')"
            )
        if len(rest) > 1 and rest[1] != "outputs":
            raise ReferenceError_(
                f"step {sid!r} {where}: only steps.{ref}.outputs.<field> can be read"
            )
        if len(rest) > 2:
            self._check_field(sid, where, ref, rest[2])

    def _check_field(self, sid: str, where: str, ref: str, name: str) -> None:
        model = self.infos[self.executors[ref]].outputs
        if model.model_config.get("extra") == "allow" or name in model.model_fields:
            return
        known = ", ".join(model.model_fields) or "none"
        raise ReferenceError_(
            f"step {sid!r} {where}: step {ref!r} ({self.executors[ref]}) has no output "
            f"{name!r} (outputs: {known})"
        )

    def upstream(self, sid: str) -> set[str]:
        if sid not in self._upstream:
            seen: set[str] = set()
            stack = list(self.needs[sid])
            while stack:
                n = stack.pop()
                if n not in seen:
                    seen.add(n)
                    stack.extend(self.needs[n])
            self._upstream[sid] = seen
        return self._upstream[sid]


def _expressions(step: StepDef) -> Iterator[tuple[str, str]]:
    yield from _strings(step.params, "params")
    targets: Any = step.targets
    if isinstance(targets, TargetSelection):
        targets = targets.model_dump(exclude_none=True)
    yield from _strings(targets, "targets")


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            yield where, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{where}[{i}]")


def _chains(text: str, where: str) -> list[list[str]]:
    """Variable access chains of an expression: ``steps.a.outputs.x`` -> [steps, a, outputs, x].

    A ``steps`` or ``params`` name read in a way that cannot be checked (``steps[var]``) is
    reported as the bare chain ``[name]``.
    """
    try:
        tree = _PARSER.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise PlanningError(f"{where}: invalid expression (line {exc.lineno}): {exc}") from exc
    chains: list[list[str]] = []
    based: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain, base = _chain(node)
        if chain is not None and base is not None and len(chain) > 1:
            chains.append(chain)
            based.add(id(base))
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in ("steps", "params") and id(name) not in based:
            chains.append([name.name])
    return chains


def _chain(node: nodes.Node) -> tuple[list[str] | None, nodes.Name | None]:
    parts: list[str] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            parts.append(node.arg.value)
        else:
            return None, None
        node = node.node
    if not isinstance(node, nodes.Name):
        return None, None
    return [node.name, *reversed(parts)], node


# --- static params ----------------------------------------------------------------------------


def _check_static_params(step: StepDef, model: type[BaseModel]) -> None:
    templated = {k for k, _ in _strings(step.params, "")}
    dynamic = {k.lstrip(".").split(".")[0].split("[")[0] for k in templated}
    try:
        model.model_validate(_placeholders(step.params, dynamic))
    except ValidationError as exc:
        errors = [
            f"params.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
            if not e["loc"] or str(e["loc"][0]) not in dynamic
        ]
        if errors:
            raise PlanningError(
                f"step {step.id!r} ({step.executor}): invalid params: " + "; ".join(errors)
            ) from exc


def _placeholders(params: Mapping[str, Any], dynamic: set[str]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k not in dynamic}
