"""The executor registry: keys, entry points, clear errors for missing executors and SDKs."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from infra_automation import registry as registry_module
from infra_automation.exceptions import ExecutorNotFound, ExecutorUnavailable
from infra_automation.executors import ExecutorRegistry
from infra_automation.executors.builtin import NoopExecutor
from infra_automation.executors.registry import ENTRY_POINT_GROUP


def test_keys_are_department_dot_action() -> None:
    registry = ExecutorRegistry(use_entry_points=False)
    with pytest.raises(ValueError, match=r"<department>\.<action>"):
        registry.register("noop", NoopExecutor)
    registry.register("core.noop", NoopExecutor)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("core.noop", NoopExecutor)
    assert registry.keys() == ["core.noop"] and "core.noop" in registry


def test_unknown_executor_names_the_known_ones() -> None:
    registry = ExecutorRegistry(use_entry_points=False)
    registry.register("core.noop", NoopExecutor)
    with pytest.raises(ExecutorNotFound, match=r"no executor 'dns.record' \(known: core.noop\)"):
        registry.get("dns.record")


def test_entry_points_bring_the_departments() -> None:
    keys = ExecutorRegistry().keys()
    for key in ("ipam.allocate", "network.configure", "vmware.vms", "os.playbook", "docs.build"):
        assert key in keys


def test_a_missing_sdk_names_the_extra_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_vmware.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pyVmomi'\", name='pyVmomi')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [EntryPoint("vmware.vms", "needs_vmware:VmsExecutor", ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry_module, "entry_points", lambda group: found)
    registry = ExecutorRegistry()
    with pytest.raises(ExecutorUnavailable, match=r"pip install 'infra-automation\[vmware\]'"):
        registry.get("vmware.vms")
    sys.modules.pop("needs_vmware", None)


def test_an_executor_whose_declared_sdk_is_missing_is_unavailable() -> None:
    from dataclasses import replace

    class NeedsSdk(NoopExecutor):
        info = replace(NoopExecutor.info, key="dns.record", requires=("no_such_sdk_4711",),
                       extra="dns")  # fmt: skip

    registry = ExecutorRegistry(use_entry_points=False)
    registry.register("dns.record", NeedsSdk)
    with pytest.raises(
        ExecutorUnavailable, match=r"needs no_such_sdk_4711: pip install 'infra-automation\[dns\]'"
    ):
        registry.get("dns.record")


def test_planning_reads_the_info_without_checking_the_sdk() -> None:
    from dataclasses import replace

    made: list[str] = []

    class NeedsSdk(NoopExecutor):
        info = replace(NoopExecutor.info, key="dns.record", requires=("no_such_sdk_4711",))

        def __init__(self) -> None:
            made.append("instance")

    registry = ExecutorRegistry(use_entry_points=False)
    registry.register("dns.record", NeedsSdk)
    assert registry.info("dns.record") is NeedsSdk.info
    assert made == []  # a class carrying its info is not instantiated to plan
    with pytest.raises(ExecutorUnavailable, match="no_such_sdk_4711"):
        registry.get("dns.record")  # running checks the SDK


def test_info_of_a_factory_function_instantiates_it() -> None:
    registry = ExecutorRegistry(use_entry_points=False)
    registry.register("core.noop", lambda: NoopExecutor())
    assert registry.info("core.noop") is NoopExecutor.info
    with pytest.raises(ExecutorNotFound, match=r"no executor 'dns\.record'"):
        registry.info("dns.record")
