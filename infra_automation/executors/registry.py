"""One registry of executors, keyed "<department>.<action>", fed by entry points.

Planning needs only what an executor declares (:meth:`ExecutorRegistry.info`): its params
and outputs models, the content files it uses. Running needs the executor itself
(:meth:`ExecutorRegistry.get`), and only then are the SDKs it ``requires`` checked, so a
process without pyVmomi (an API server, say) can still plan a landscape with VMware steps.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

from infra_automation.exceptions import ExecutorNotFound, ExecutorUnavailable
from infra_automation.executors.base import Executor, ExecutorInfo
from infra_automation.registry import EntryPointRegistry

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
    """Maps executor keys to factories. Each registry owns its own dict
    (:class:`~infra_automation.registry.EntryPointRegistry`)."""

    def __init__(self, *, use_entry_points: bool = True) -> None:
        self._factories = EntryPointRegistry[Factory](
            ENTRY_POINT_GROUP,
            "executor",
            load=_load_target,
            not_found=ExecutorNotFound,
            use_entry_points=use_entry_points,
        )

    def register(self, key: str, factory: Factory, *, replace: bool = False) -> None:
        _check_key(key)
        self._factories.register(key, factory, replace=replace)

    def unregister(self, key: str) -> None:
        self._factories.unregister(key)

    def keys(self) -> list[str]:
        return self._factories.names()

    def __contains__(self, key: object) -> bool:
        return key in self._factories

    def get(self, key: str) -> Executor:
        """Instantiate the executor for ``key``, to run it: clear errors if it is missing
        or its SDK is not installed."""
        executor = self._factories.get(key)()
        _check_requirements(key, executor.info)
        return executor

    def info(self, key: str) -> ExecutorInfo:
        """What ``key`` declares (models, content files), for planning: no SDK check.

        A factory that is a class carrying ``info`` is not instantiated.
        """
        factory = self._factories.get(key)
        info = getattr(factory, "info", None)
        if isinstance(info, ExecutorInfo):
            return info
        return factory().info


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
