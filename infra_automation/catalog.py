"""The service catalog: ``catalog/*.yml``, one service per file.

::

    name: landscape                 # lower-case name (validation.Name)
    description: Network, VMs, OS and web stack for a new project
    owner: platform-team
    params:                         # typed inputs of a request
      vm_count: {type: integer, default: 2, minimum: 1, maximum: 10}
      os: {type: string, enum: [debian12], default: debian12}
      backup: {type: boolean, default: false}
      vm_names: {type: list, items: {type: string, pattern: "[a-z][a-z0-9-]*"}, max_length: 10}
    steps:
      - id: vms                     # identifier: [a-z][a-z0-9_]*
        department: vmware          # owner (default: the executor key's prefix)
        executor: vmware.vms        # "<department>.<action>", from the executor registry
        needs: [network]
        when: "params.backup"       # optional, evaluated at plan time over the request
        params:                     # Jinja over project, service, requester, params, steps
          count: "{{ params.vm_count }}"
          portgroup: "{{ steps.network.outputs.portgroup }}"
        targets: {group: routers}   # or {hosts: [core]} or "{{ steps.vms.outputs.names }}"
    outputs:                        # what the service hands back (printed after a run)
      vm_names: "{{ steps.vms.outputs.names }}"

Parameter types: string, integer, number, boolean, list (with ``items``, a parameter
definition of the elements). Constraints: ``pattern`` (whole value), ``minimum``/``maximum``,
``enum``, ``min_length``/``max_length`` (characters, or items of a list). Every string is also
checked by :data:`infra_automation.validation.SafeText` (no newline, control character or
template syntax can pass), with or without a pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from infra_automation import yamlio
from infra_automation.exceptions import CatalogError, InputFileError
from infra_automation.validation import NAME_RE, check_safe_text

STEP_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
PARAM_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
EXECUTOR_RE = re.compile(r"^[a-z][a-z0-9_-]*\.[a-z][a-z0-9_-]*$")
DEFAULT_MAX_LENGTH = 200

ParamType = Literal["string", "integer", "number", "boolean", "list"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamDef(_Model):
    """One typed input parameter of a service."""

    type: ParamType = "string"
    description: str = ""
    default: Any = None
    required: bool | None = None
    pattern: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    enum: list[str | int | float | bool] | None = None
    min_length: int | None = Field(default=None, ge=0)
    max_length: int | None = Field(default=None, ge=0)
    items: ParamDef | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ParamDef:
        if self.items is not None and self.type != "list":
            raise ValueError("'items' is only allowed for type 'list'")
        if self.items is not None and self.items.type == "list":
            raise ValueError("lists of lists are not supported")
        if self.default is not None:
            try:
                TypeAdapter(self.annotation()).validate_python(self.default)
            except ValidationError as exc:
                raise ValueError(f"default {self.default!r} is invalid: {_first(exc)}") from exc
        return self

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None

    def annotation(self) -> Any:
        """The pydantic type of this parameter, with its constraints."""
        builders: dict[str, Callable[[], Any]] = {
            "string": self._string,
            "integer": lambda: self._numeric(StrictInt),
            "number": lambda: self._numeric(StrictFloat),
            "boolean": lambda: StrictBool,
            "list": self._list,
        }
        base = builders[self.type]()
        if self.enum is not None:
            base = Annotated[base, AfterValidator(_one_of(tuple(self.enum)))]
        return base

    def _string(self) -> Any:
        checks: list[Any] = [
            StringConstraints(
                min_length=self.min_length, max_length=self.max_length or DEFAULT_MAX_LENGTH
            ),
            AfterValidator(check_safe_text),
        ]
        if self.pattern is not None:
            checks.append(AfterValidator(_full_match(self.pattern)))
        return Annotated[str, *checks]

    def _numeric(self, base: Any) -> Any:
        return Annotated[base, Field(ge=self.minimum, le=self.maximum)]

    def _list(self) -> Any:
        item = (self.items or ParamDef()).annotation()
        return Annotated[list[item], Field(min_length=self.min_length, max_length=self.max_length)]  # type: ignore[valid-type]


def _one_of(allowed: tuple[Any, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in allowed:
            raise ValueError("must be one of " + ", ".join(repr(a) for a in allowed))
        return value

    return check


def _full_match(pattern: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"must match the pattern {pattern!r}")
        return value

    return check


class TargetSelection(_Model):
    """An inventory selection: a group and/or host names (may hold Jinja expressions)."""

    group: str | None = None
    hosts: list[str] | str | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> TargetSelection:
        if self.group is None and self.hosts is None:
            raise ValueError("give 'group' or 'hosts'")
        return self


# In Jinja, `params.items` is the dict's method, not the value: such names cannot be read.
RESERVED_NAMES = frozenset(
    {"items", "keys", "values", "get", "pop", "popitem", "update", "copy", "clear", "setdefault"}
)


def _not_reserved(names: Iterable[str], what: str) -> None:
    taken = sorted(set(names) & RESERVED_NAMES)
    if taken:
        raise ValueError(
            f"{what} names {', '.join(taken)} cannot be read in expressions (dict methods)"
        )


class StepDef(_Model):
    """One step of a service: what a department does, after what, on which targets."""

    id: str = Field(pattern=STEP_ID_RE.pattern)
    executor: str = Field(pattern=EXECUTOR_RE.pattern)
    department: str = ""
    description: str = ""
    needs: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    targets: TargetSelection | str | None = None
    when: bool | str | None = None

    @model_validator(mode="after")
    def _default_department(self) -> StepDef:
        if not self.department:
            object.__setattr__(self, "department", self.executor.partition(".")[0])
        if len(set(self.needs)) != len(self.needs):
            raise ValueError(f"step {self.id!r} lists a dependency twice")
        return self


class Modifies(_Model):
    """What an operational change (scale, resize...) changes of a project built by another
    service: ``params`` of that service take this change's values from then on, and its steps
    whose ids the build also has record the new state of those steps."""

    service: str = Field(pattern=NAME_RE.pattern)
    params: list[str] = Field(default_factory=list)


class Service(_Model):
    """A catalog service: typed parameters and the steps that deliver it."""

    name: str = Field(pattern=NAME_RE.pattern)
    description: str = ""
    owner: str = ""
    params: dict[str, ParamDef] = Field(default_factory=dict)
    steps: list[StepDef] = Field(min_length=1)
    outputs: dict[str, str] = Field(default_factory=dict)  # Jinja over steps' outputs
    # The service's change policy (type, risk, history): read by infra_automation.changes.
    change: dict[str, Any] | None = None
    # An operational change of a project another service built (verify and docs read it).
    modifies: Modifies | None = None

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, ParamDef]) -> dict[str, ParamDef]:
        bad = [k for k in value if not PARAM_RE.fullmatch(k)]
        if bad:
            raise ValueError(f"parameter names must match {PARAM_RE.pattern}: {', '.join(bad)}")
        _not_reserved(value, "parameter")
        return value

    @model_validator(mode="after")
    def _unique_steps(self) -> Service:
        _not_reserved([s.id for s in self.steps], "step id")
        seen: set[str] = set()
        for step in self.steps:
            if step.id in seen:
                raise ValueError(f"step id {step.id!r} is used twice")
            seen.add(step.id)
        unknown = [
            p for p in (self.modifies.params if self.modifies else []) if p not in self.params
        ]
        if unknown:
            raise ValueError(f"modifies.params names parameters the service lacks: {unknown}")
        return self

    def step(self, step_id: str) -> StepDef:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise CatalogError(f"service {self.name!r} has no step {step_id!r}")


@dataclass(frozen=True)
class Catalog:
    """All services of a catalog folder, by name."""

    services: dict[str, Service]
    sources: dict[str, Path]

    def get(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise CatalogError(f"no service {name!r} in the catalog (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self.services)


def load_service(path: Path) -> Service:
    """Read and validate one service file; errors name the file and the fields."""
    try:
        data = yamlio.load(path)
    except InputFileError as exc:
        raise CatalogError(f"cannot read service: {exc}") from exc
    try:
        return Service.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(_describe(e) for e in exc.errors())
        raise CatalogError(f"{path}: invalid service: {errors}") from exc


def load_catalog(folder: str | Path) -> Catalog:
    """Load every ``*.yml``/``*.yaml`` service of ``folder``; names must be unique."""
    base = Path(folder)
    if not base.is_dir():
        raise CatalogError(f"no catalog folder at {base}")
    services: dict[str, Service] = {}
    sources: dict[str, Path] = {}
    for path in sorted([*base.glob("*.yml"), *base.glob("*.yaml")]):
        service = load_service(path)
        if service.name in services:
            raise CatalogError(
                f"{path}: service {service.name!r} is also in {sources[service.name]}"
            )
        services[service.name] = service
        sources[service.name] = path
    return Catalog(services, sources)


def _describe(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "(top)"
    return f"{where}: {error['msg']}"


def _first(exc: ValidationError) -> str:
    return _describe(exc.errors()[0])
