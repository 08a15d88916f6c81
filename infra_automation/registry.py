"""The one mechanism behind the package's plug-in registries: things of one kind by name,
registered in code or named by an entry point, imported once when first asked for.

::

    kinds = EntryPointRegistry[Factory]("infra_automation.host_binders", "host_binding kind")
    kinds.register("static", StaticBinder)
    kinds.get("lab-guests")    # imported from its entry point now, then kept
    kinds.find("nope")         # None; get() raises, naming the name, the known and the group

Used by the executors (:mod:`infra_automation.executors.registry`), the inventory sections
(:mod:`infra_automation.sections`), the verifiers (:mod:`infra_automation.verify`) and the
host binding kinds (:mod:`infra_automation.inventory`), each with a registry of its own.

- Each registry owns its dict (nornir's registries share a class-level one by mistake).
- The entry points of its group are read once, names and targets only, under its lock:
  threads asking at the same moment all wait for that one read. ``defaults`` are targets
  the package ships (``"module:attr"``) that an entry point of the same name replaces.
- A target is imported when its name is first asked for and the object kept, so every
  caller gets the same one; ``load`` turns a target into the thing (checks, error mapping)
  and its :class:`InfraError` passes through; any other failure to load becomes a
  :class:`ConfigurationError` naming the thing, the target and the group.
- What :meth:`register` put in wins over an entry point of the same name.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from functools import reduce
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from infra_automation.exceptions import ConfigurationError, InfraError

T = TypeVar("T")


class EntryPointRegistry(Generic[T]):
    """``T`` by name: registered, or loaded lazily from the entry-point group ``group``.

    ``what`` names the kind in messages ("executor", "inventory section"); ``not_found`` is
    the error :meth:`get` raises for an unknown name; ``items`` (tests, or a public dict that
    predates the registry) is the dict it keeps the registered and loaded things in.
    """

    def __init__(
        self,
        group: str,
        what: str,
        *,
        load: Callable[[str, str], T] | None = None,
        defaults: Mapping[str, str] | None = None,
        not_found: type[InfraError] = ConfigurationError,
        use_entry_points: bool = True,
        items: dict[str, T] | None = None,
    ) -> None:
        self.group = group
        self.what = what
        self._load = load or _import_target
        self._defaults = dict(defaults or {})
        self._not_found = not_found
        self._items: dict[str, T] = {} if items is None else items
        self._targets: dict[str, str] = {}
        self._discovered = not use_entry_points
        self._lock = threading.Lock()

    def register(self, name: str, item: T, *, replace: bool = False) -> None:
        with self._lock:
            if name in self._items and not replace:
                raise ValueError(f"{self.what} {name!r} is already registered")
            self._items[name] = item

    def unregister(self, name: str) -> None:
        """Forget what was registered (or loaded) as ``name``; an entry point of that name
        is loaded again when next asked for."""
        with self._lock:
            self._items.pop(name, None)

    def names(self) -> list[str]:
        self._discover()
        with self._lock:
            return sorted({*self._items, *self._targets})

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._items or name in self._targets

    def get(self, name: str) -> T:
        """The thing registered as ``name`` (its target imported now): ``not_found`` naming
        the known names and the entry-point group if nobody registers it."""
        found = self.find(name)
        if found is None:
            raise self._not_found(self.missing(name))
        return found

    def find(self, name: str) -> T | None:
        """As :meth:`get`, but None when nobody registers ``name``."""
        self._discover()
        try:
            return self._items[name]
        except KeyError:
            pass
        target = self._targets.get(name)
        if target is None:
            return None
        loaded = self._loaded(name, target)
        with self._lock:
            return self._items.setdefault(name, loaded)

    def missing(self, name: str) -> str:
        """The message of an unknown ``name``."""
        known = ", ".join(self.names()) or "none"
        return (
            f"no {self.what} {name!r} (known: {known}); plug-ins add theirs in the "
            f"entry-point group {self.group!r}"
        )

    def _loaded(self, name: str, target: str) -> T:
        try:
            return self._load(name, target)
        except InfraError:
            raise
        except Exception as exc:  # an entry point's module may raise anything when imported
            raise ConfigurationError(
                f"{self.what} {name!r}: {target} (entry-point group {self.group!r}) fails to "
                f"load: {exc!r}"
            ) from exc

    def _discover(self) -> None:
        if self._discovered:
            return
        with self._lock:  # held until every name is known: parallel lookups wait for it
            if self._discovered:
                return
            found = dict(self._defaults)
            found.update((ep.name, ep.value) for ep in entry_points(group=self.group))
            for name, target in found.items():
                self._targets.setdefault(name, target)
            self._discovered = True


def _import_target(name: str, target: str) -> Any:
    """The object ``"module:attr"`` (``attr`` may be dotted) names."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    return reduce(getattr, attr.split("."), module) if attr else module
