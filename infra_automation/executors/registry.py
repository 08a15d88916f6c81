"""One registry of executors, keyed "<department>.<action>", fed by entry points.

Planning needs only what an executor declares (:meth:`ExecutorRegistry.info`): its params
and outputs models, the content files it uses. Running needs the executor itself
(:meth:`ExecutorRegistry.get`), and only then are the SDKs it ``requires`` checked, so a
process without pyVmomi (an API server, say) can still plan a landscape with VMware steps.
"""

from __future__ import annotations

import importlib
import importlib.util
import threading
from collections.abc import Callable
from importlib.metadata import entry_points

from infra_automation.exceptions import ExecutorNotFound, ExecutorUnavailable
from infra_automation.executors.base import Executor, ExecutorInfo

ENTRY_POINT_GROUP = "infra_automation.executors"
# Which pip extra brings a missing SDK (top-level module name -> extra).
EXTRAS = {
    "nornir": "network",
    "nornir_netmiko": "network",
    "netmiko": "network",
    "pyVmomi": "vmware",
    "pyVim": "vmware",
    "ansible_runner": "ansible",
    "mkdocs": "docs",
}
Factory = Callable[[], Executor]


class ExecutorRegistry:
    """Maps executor keys to factories. Each registry owns its own dict."""

    def __init__(self, *, use_entry_points: bool = True) -> None:
        self._factories: dict[str, Factory] = {}
        self._entry_points: dict[str, str] = {}
        self._loaded = not use_entry_points
        self._lock = threading.Lock()

    def register(self, key: str, factory: Factory, *, replace: bool = False) -> None:
        _check_key(key)
        with self._lock:
            if key in self._factories and not replace:
                raise ValueError(f"executor {key!r} is already registered")
            self._factories[key] = factory

    def unregister(self, key: str) -> None:
        with self._lock:
            self._factories.pop(key, None)

    def keys(self) -> list[str]:
        self._load_entry_points()
        return sorted(set(self._factories) | set(self._entry_points))

    def __contains__(self, key: object) -> bool:
        self._load_entry_points()
        return key in self._factories or key in self._entry_points

    def get(self, key: str) -> Executor:
        """Instantiate the executor for ``key``, to run it: clear errors if it is missing
        or its SDK is not installed."""
        executor = self._factory(key)()
        _check_requirements(key, executor.info)
        return executor

    def info(self, key: str) -> ExecutorInfo:
        """What ``key`` declares (models, content files), for planning: no SDK check.

        A factory that is a class carrying ``info`` is not instantiated.
        """
        factory = self._factory(key)
        info = getattr(factory, "info", None)
        if isinstance(info, ExecutorInfo):
            return info
        return factory().info

    def _factory(self, key: str) -> Factory:
        self._load_entry_points()
        factory = self._factories.get(key)
        if factory is not None:
            return factory
        target = self._entry_points.get(key)
        if target is None:
            known = ", ".join(self.keys()) or "none"
            raise ExecutorNotFound(f"no executor {key!r} (known: {known})")
        factory = _load_target(key, target)
        with self._lock:
            return self._factories.setdefault(key, factory)

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self._entry_points.setdefault(ep.name, ep.value)
            self._loaded = True


def _check_requirements(key: str, info: ExecutorInfo) -> None:
    """The SDKs an executor declares (imported lazily, inside its code) must be installed:
    say so before it runs, naming the extra, rather than fail halfway through a run."""
    missing = [m for m in info.requires if importlib.util.find_spec(m) is None]
    if missing:
        extra = info.extra or EXTRAS.get(missing[0], "all")
        raise ExecutorUnavailable(
            f"executor {key!r} needs {', '.join(missing)}: pip install 'infra-automation[{extra}]'"
        )


def _check_key(key: str) -> None:
    dept, _, action = key.partition(".")
    if not dept or not action:
        raise ValueError(f"executor key {key!r} must look like '<department>.<action>'")


def _load_target(key: str, target: str) -> Factory:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if missing.startswith("infra_automation"):
            raise ExecutorNotFound(f"executor {key!r}: module {missing!r} not found") from exc
        extra = EXTRAS.get(missing.partition(".")[0], "all")
        raise ExecutorUnavailable(
            f"executor {key!r} needs {missing!r}: pip install 'infra-automation[{extra}]'"
        ) from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise ExecutorNotFound(f"executor {key!r}: {target} does not exist")
    return obj  # type: ignore[no-any-return]


REGISTRY = ExecutorRegistry()


def register(key: str, factory: Factory, *, replace: bool = False) -> None:
    """Register an executor factory in the default registry."""
    REGISTRY.register(key, factory, replace=replace)
