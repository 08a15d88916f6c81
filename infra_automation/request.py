"""Service requests: ``requests/*.yml``, validated against the catalog before anything runs.

::

    service: landscape              # a catalog service
    project: shop                   # validation.Name: lower-case, 2-40 chars
    requester: Jane Doe             # optional, SafeText
    inventory: inventories/lab      # optional folder (default: settings.inventory)
    params: {vm_count: 2}           # checked against the service's typed parameters

Invalid requests raise :class:`~infra_automation.exceptions.RequestValidationError`
naming every bad field (``params.vm_count: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from infra_automation import yamlio
from infra_automation.catalog import Catalog, Service
from infra_automation.exceptions import FieldError, InputFileError, RequestValidationError
from infra_automation.validation import Name, SafeText

PATH_PATTERN = r"^[A-Za-z0-9._/-]+$"


class RequestFile(BaseModel):
    """The envelope of a request; ``params`` are checked by the service's own model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: Name
    project: Name
    requester: SafeText | None = None
    inventory: str | None = Field(default=None, pattern=PATH_PATTERN, max_length=200)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("inventory")
    @classmethod
    def _inside_the_root(cls, value: str | None) -> str | None:
        """A folder of the project: a request must not point a run at another site's
        inventory and secrets elsewhere on the machine."""
        if value is not None and (value.startswith("/") or ".." in value.split("/")):
            raise ValueError("must be a folder inside the project root (relative, no '..')")
        return value


@dataclass(frozen=True)
class Request:
    """A validated request: params are typed, with the service's defaults filled in."""

    service: str
    project: str
    params: Mapping[str, Any]
    requester: str | None = None
    inventory: str | None = None
    source: str = "request"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (the ``request`` of the ``run.started`` event, and the record)."""
        return {
            "service": self.service,
            "project": self.project,
            "requester": self.requester,
            "params": dict(self.params),
            "inventory": self.inventory,
        }


def params_model(service: Service) -> type[BaseModel]:
    """The pydantic model of a service's parameters (unknown parameters are refused)."""
    fields: dict[str, Any] = {}
    for name, spec in service.params.items():
        default = ... if spec.is_required else spec.default
        fields[name] = (spec.annotation(), Field(default=default, description=spec.description))
    return create_model(
        f"{service.name.replace('-', '_')}_params",
        __config__=ConfigDict(extra="forbid", frozen=True),
        **fields,
    )


def read_request(path: str | Path) -> dict[str, Any]:
    """The raw mapping of a request file (see :mod:`infra_automation.yamlio` for the checks:
    a regular UTF-8 file of at most 1 MiB, no duplicate key, no alias, limited nesting)."""
    file = Path(path)
    try:
        data = yamlio.load(file, aliases=False, max_bytes=yamlio.REQUEST_MAX_BYTES)
    except InputFileError as exc:
        where = f"line {exc.line}, column {exc.column}: " if exc.line is not None else ""
        raise RequestValidationError([FieldError("file", where + exc.problem)], str(file)) from exc
    if not isinstance(data, dict):
        raise RequestValidationError([FieldError("(top)", "expected a mapping")], str(file))
    return data


def validate_request(data: Mapping[str, Any], catalog: Catalog, source: str = "request") -> Request:
    """Check the envelope and the params against the service; all errors at once."""
    errors: list[FieldError] = []
    envelope: RequestFile | None = None
    try:
        envelope = RequestFile.model_validate(data)
    except ValidationError as exc:
        errors += field_errors(exc)
    params, param_errors = _validate_params(data, catalog)
    errors += param_errors
    if errors or envelope is None or params is None:
        raise RequestValidationError(errors, source)
    return Request(
        service=envelope.service,
        project=envelope.project,
        params=params,
        requester=envelope.requester,
        inventory=envelope.inventory,
        source=source,
    )


def _validate_params(
    data: Mapping[str, Any], catalog: Catalog
) -> tuple[dict[str, Any] | None, list[FieldError]]:
    name = data.get("service")
    if not isinstance(name, str) or name not in catalog.services:
        known = ", ".join(catalog.names()) or "none"
        return None, [FieldError("service", f"no service {name!r} in the catalog (known: {known})")]
    raw = data.get("params") or {}
    if not isinstance(raw, Mapping):
        return None, []  # the envelope already reports it
    try:
        params = params_model(catalog.get(name)).model_validate(raw)
    except ValidationError as exc:
        return None, field_errors(exc, "params")
    return params.model_dump(mode="json"), []


def load_request(path: str | Path, catalog: Catalog) -> Request:
    """Read and validate a request file."""
    return validate_request(read_request(path), catalog, source=str(path))


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """pydantic errors as field errors: dotted location and message."""
    out: list[FieldError] = []
    for error in exc.errors():
        parts = [prefix] if prefix else []
        parts += [str(p) for p in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        out.append(FieldError(".".join(parts) or "(top)", message))
    return out
