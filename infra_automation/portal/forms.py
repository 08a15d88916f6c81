"""A request form generated from a service's JSON Schema, and the form's values back.

:func:`form_fields` reads the schema the API publishes (``GET /api/v1/services/{name}``):
``enum`` → a select, ``boolean`` → a switch, ``integer``/``number`` → a number input with
its ``minimum``/``maximum``, ``array`` → a text input of comma-separated items, the rest →
a text input with its ``maxLength``. :func:`form_params` turns the posted strings into the
typed values the request's validation expects (an integer field's ``"3"`` becomes ``3``; a
value that is not a number is passed on as it is, so the validation names the field).
Validation itself is not done here: the portal calls the very validation the API does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra_automation.server.schemas import params_schema

__all__ = ["FormField", "field_errors", "form_fields", "form_params", "params_schema"]

PREFIX = "params."  # the name of a parameter's input: params.<name>


@dataclass(frozen=True)
class FormField:
    """One input of the form."""

    name: str
    widget: str  # select | switch | number | list | text
    label: str
    description: str
    required: bool
    default: Any = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    step: str = "any"
    max_length: int | None = None

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    def shown(self, value: Any) -> str:
        """A value as the input shows it."""
        if value is None:
            return ""
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return str(value)


def form_fields(schema: Mapping[str, Any]) -> list[FormField]:
    required = set(schema.get("required", ()))
    return [
        _field(name, prop, name in required) for name, prop in schema.get("properties", {}).items()
    ]


def _field(name: str, prop: Mapping[str, Any], required: bool) -> FormField:
    kind = prop.get("type", "string")
    common: dict[str, Any] = {
        "name": name,
        "label": str(prop.get("title") or name),
        "description": str(prop.get("description", "")),
        "required": required,
        "default": prop.get("default"),
    }
    if "enum" in prop:
        return FormField(widget="select", choices=tuple(prop["enum"]), **common)
    if kind == "boolean":
        return FormField(widget="switch", **common)
    if kind in ("integer", "number"):
        return FormField(
            widget="number",
            minimum=prop.get("minimum"),
            maximum=prop.get("maximum"),
            step="1" if kind == "integer" else "any",
            **common,
        )
    if kind == "array":
        return FormField(widget="list", **common)
    return FormField(widget="text", max_length=prop.get("maxLength"), **common)


def form_params(
    fields: list[FormField], form: Mapping[str, str], schema: Mapping[str, Any]
) -> dict[str, Any]:
    """The params of a posted form: empty optional inputs are left out (their defaults
    apply); a switch that is not posted is ``False``."""
    props = schema.get("properties", {})
    params: dict[str, Any] = {}
    for field in fields:
        raw = form.get(field.input_name)
        if field.widget == "switch":
            params[field.name] = raw is not None
            continue
        if raw is None or (raw.strip() == "" and not field.required):
            continue
        params[field.name] = _typed(raw.strip(), props.get(field.name, {}))
    return params


def _typed(raw: str, prop: Mapping[str, Any]) -> Any:
    kind = prop.get("type")
    if kind == "array":
        item = prop.get("items", {})
        return [_typed(part.strip(), item) for part in raw.split(",") if part.strip()]
    if "enum" in prop:
        return next((c for c in prop["enum"] if str(c) == raw), raw)
    converters = {"integer": int, "number": float}
    convert = converters.get(str(kind))
    if convert is None:
        return raw
    try:
        return convert(raw)
    except ValueError:
        return raw  # the validation names the field


def field_errors(errors: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Validation errors (dotted location, message) by input name: ``params.x`` and the
    envelope's ``project`` keep their names; anything else is shown above the form."""
    out: dict[str, list[str]] = {}
    for location, message in errors:
        key = location if location.startswith(PREFIX) or location == "project" else ""
        if location.startswith(PREFIX):
            key = PREFIX + location[len(PREFIX) :].split(".")[0]
        out.setdefault(key, []).append(message if key else f"{location}: {message}")
    return out
