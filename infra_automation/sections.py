"""Inventory sections: the part of the inventory a department brings with it.

A department plugs in whole: its executors (``infra_automation.executors``) and its
inventory section, a top-level key of ``inventory.yml`` validated by the department's own
pydantic model, registered in the entry-point group ``infra_automation.inventory_sections``::

    [project.entry-points."infra_automation.inventory_sections"]
    vcenter = "infra_automation.departments.vmware:VCENTER_SECTION"

The entry point's name is the key; its object is an :class:`InventorySection` (a
:class:`Section`) carrying the same name and the model. The core inventory
(:mod:`infra_automation.inventory`) knows no department by name: it validates every key
that is not its own against this registry (an unknown key is refused, naming the key and
the known sections; a section's errors name ``section.field``) and hands the validated
models out through :meth:`Inventory.section(name, Model) <infra_automation.inventory.
Inventory.section>`. Only the sections present in an inventory are imported.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError

from infra_automation.exceptions import ConfigurationError
from infra_automation.registry import EntryPointRegistry

ENTRY_POINT_GROUP = "infra_automation.inventory_sections"
NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


@runtime_checkable
class InventorySection(Protocol):
    """A department's inventory section: its top-level key and the model validating it."""

    @property
    def name(self) -> str: ...

    @property
    def model(self) -> type[BaseModel]: ...


@dataclass(frozen=True)
class Section:
    """The plain :class:`InventorySection`: what a department's entry point points to."""

    name: str
    model: type[BaseModel]


class SectionRegistry:
    """Inventory sections by key, fed by :meth:`register` and the entry-point group.

    Each registry owns its own dict; entry points are read once (their names only) and a
    section's module is imported when an inventory holding that key is validated
    (:class:`~infra_automation.registry.EntryPointRegistry`).
    """

    def __init__(self, *, use_entry_points: bool = True) -> None:
        self._sections = EntryPointRegistry[InventorySection](
            ENTRY_POINT_GROUP,
            "inventory section",
            load=_load_target,
            use_entry_points=use_entry_points,
        )

    def register(self, section: InventorySection, *, replace: bool = False) -> None:
        _check_section(section)
        self._sections.register(section.name, section, replace=replace)

    def unregister(self, name: str) -> None:
        self._sections.unregister(name)

    def names(self) -> list[str]:
        return self._sections.names()

    def __contains__(self, name: object) -> bool:
        return name in self._sections

    def get(self, name: str) -> InventorySection:
        """The section registered as ``name`` (its module imported now)."""
        return self._sections.get(name)

    def validate(self, data: Mapping[str, Any], *, core: Iterable[str] = ()) -> dict[str, Any]:
        """Each key of ``data`` validated by its section's model.

        Raises a pydantic ``ValidationError`` whose locations start with the section's key:
        unknown keys first (naming the known sections and the ``core`` keys), then the
        sections' own errors.
        """
        unknown = [key for key in data if not isinstance(key, str) or key not in self]
        if unknown:
            raise _unknown_keys(unknown, data, self.names(), sorted(core))
        models = tuple(sorted((key, self.get(key).model) for key in data))
        validated = _sections_model(models).model_validate(dict(data))
        return {key: getattr(validated, f"s{i}") for i, (key, _) in enumerate(models)}


def _check_section(section: object) -> None:
    if not isinstance(section, InventorySection):
        raise ValueError(f"{section!r} is not an inventory section (a name and a model)")
    if not isinstance(section.name, str) or not NAME_RE.fullmatch(section.name):
        raise ValueError(f"inventory section name {section.name!r} must match {NAME_RE.pattern}")
    if not (isinstance(section.model, type) and issubclass(section.model, BaseModel)):
        raise ValueError(f"inventory section {section.name!r}: its model is not a pydantic model")


def _load_target(name: str, target: str) -> InventorySection:
    """The object an entry point names, checked to be the section it is registered as."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"inventory section {name!r}: cannot import {module_name!r} ({exc})"
        ) from exc
    section = getattr(module, attr, None)
    try:
        _check_section(section)
    except ValueError as exc:
        raise ConfigurationError(f"inventory section {name!r} ({target}): {exc}") from exc
    assert isinstance(section, InventorySection)  # checked above; narrows for mypy
    if section.name != name:
        raise ConfigurationError(
            f"inventory section {name!r} ({target}) calls itself {section.name!r}"
        )
    return section


@lru_cache(maxsize=64)
def _sections_model(models: tuple[tuple[str, type[BaseModel]], ...]) -> type[BaseModel]:
    """One model whose fields are the given sections (aliased: a key need not be a Python
    name): its errors are located by section key."""
    fields: dict[str, Any] = {
        f"s{i}": (model, Field(alias=key)) for i, (key, model) in enumerate(models)
    }
    return create_model("InventorySections", __config__=ConfigDict(extra="forbid"), **fields)


def _unknown_keys(
    unknown: list[Any], data: Mapping[str, Any], known: list[str], core: list[str]
) -> ValidationError:
    listed = ", ".join(known) or "none"
    also = f"; core keys: {', '.join(core)}" if core else ""
    errors: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(
                "unknown_section",
                "unknown inventory section (known sections: {known}{also})",
                {"known": listed, "also": also},
            ),
            "loc": (key if isinstance(key, str | int) else repr(key),),
            "input": data[key],
        }
        for key in unknown
    ]
    return ValidationError.from_exception_data("InventoryFile", errors)


SECTIONS = SectionRegistry()


def register(section: InventorySection, *, replace: bool = False) -> None:
    """Register an inventory section in the default registry."""
    SECTIONS.register(section, replace=replace)
