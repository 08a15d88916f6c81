"""Bodies of the API's requests and responses (pydantic; they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from infra_automation.catalog import Service
from infra_automation.identity import Role
from infra_automation.request import params_model


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldProblem(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)


class Login(_In):
    name: str = Field(max_length=64)
    password: str = Field(max_length=1000)


class UserOut(BaseModel):
    name: str
    role: Role
    projects: list[str]


class UserIn(_In):
    name: str = Field(max_length=64)
    role: Role
    password: str = Field(max_length=1000)
    projects: list[str] = Field(default_factory=list, max_length=100)


class ServiceSummary(BaseModel):
    name: str
    description: str
    owner: str


class ServiceStep(BaseModel):
    id: str
    department: str
    executor: str
    needs: list[str]
    description: str


class ServiceOut(ServiceSummary):
    params_schema: dict[str, Any]
    steps: list[ServiceStep]
    outputs: list[str]


class RequestIn(_In):
    """A service request. The requester is the authenticated user: there is no field for it."""

    service: str = Field(max_length=100)
    project: str = Field(max_length=100)
    params: dict[str, Any] = Field(default_factory=dict)
    inventory: str | None = Field(default=None, max_length=200)


Parallel = Annotated[
    int | None,
    Field(ge=1, le=256, strict=True, description="steps at once (default: the project's)"),
]


class CheckIn(RequestIn):
    """A request to dry-run, with the option of ``infra apply --check``."""

    parallel: Parallel = None


class Validated(BaseModel):
    valid: bool
    request: dict[str, Any]


class RunAccepted(BaseModel):
    run_id: str
    check: bool
    run_url: str
    stream_url: str


class RunSummary(BaseModel):
    """``status``: queued (accepted, waiting for a worker), running, success, failed or
    interrupted; ``request``: the request it ran (known secret values masked)."""

    id: str
    service: str
    project: str
    requester: str | None
    check: bool
    status: str
    resumed_from: str | None
    changed: bool
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    request: dict[str, Any]


class RunPageOut(BaseModel):
    runs: list[RunSummary]
    next_cursor: str | None


class StepOut(BaseModel):
    step_id: str
    position: int
    department: str
    executor: str
    needs: list[str]
    status: str
    changed: bool
    reused: bool
    error: str | None
    error_kind: str | None
    diff: str
    outputs: dict[str, Any]
    targets: list[dict[str, Any]]
    artifacts: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    duration: float | None


class RunDetail(RunSummary):
    """``outputs``: the service's outputs (the catalog's expressions over the steps' outputs,
    as ``infra apply`` prints them; None for one whose steps did not succeed)."""

    parallel: int
    plan: list[dict[str, Any]]
    steps: list[StepOut]
    outputs: dict[str, Any]


class EventOut(BaseModel):
    seq: int
    run_id: str
    step_id: str | None
    kind: str
    at: datetime
    data: dict[str, Any]


class EventsOut(BaseModel):
    events: list[EventOut]
    last_seq: int


class ProjectOut(BaseModel):
    name: str
    has_docs: bool


class DocsPages(BaseModel):
    project: str
    pages: list[str]


class TokenIn(_In):
    label: str = Field(default="", max_length=100, pattern=r"^[A-Za-z0-9 ._:@()+=-]*$")


class TokenOut(BaseModel):
    id: str
    user: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class TokenCreated(BaseModel):
    """``value`` is shown here once; the server keeps only its hash."""

    info: TokenOut
    value: str


def params_schema(service: Service) -> dict[str, Any]:
    """The JSON Schema of a service's params, with the ``enum`` and ``pattern`` of each
    parameter definition (the pydantic model checks them in validators the generated schema
    does not show)."""
    schema = params_model(service).model_json_schema()
    for name, spec in service.params.items():
        prop = schema.get("properties", {}).get(name)
        if prop is None:
            continue
        if spec.enum is not None:
            prop.setdefault("enum", list(spec.enum))
        if spec.pattern is not None and spec.type == "string":
            prop.setdefault("pattern", spec.pattern)
    return schema
