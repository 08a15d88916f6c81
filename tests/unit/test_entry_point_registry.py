"""The generic registry behind executors, inventory sections, verifiers and host binding
kinds (infra_automation.registry): registered things, entry points read once and imported
when first asked for, under parallel lookups, and errors naming the name and the group."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from infra_automation import registry as registry_module
from infra_automation.exceptions import ConfigurationError, ExecutorNotFound
from infra_automation.inventory import BINDER_ENTRY_POINTS, BINDER_KINDS
from infra_automation.registry import EntryPointRegistry

GROUP = "infra_automation.test_things"
PLUGIN = """\
import time
IMPORTS = globals().setdefault("IMPORTS", [])
IMPORTS.append(1)
time.sleep(0.05)  # a slow import: parallel first lookups overlap
THING = object()
"""


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module ``thing_plugin`` with a ``THING``, importable from ``tmp_path``."""
    (tmp_path / "thing_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "thing_plugin"
    sys.modules.pop("thing_plugin", None)


def with_entry_points(monkeypatch: pytest.MonkeyPatch, **targets: str) -> list[str]:
    """The entry points the registries read (as installed packages would declare them);
    the groups asked for, in order."""
    asked: list[str] = []

    def found(group: str) -> list[EntryPoint]:
        asked.append(group)
        time.sleep(0.05)  # widens the window of a race between first lookups
        return [EntryPoint(n, t, group) for n, t in targets.items()] if group == GROUP else []

    monkeypatch.setattr(registry_module, "entry_points", found)
    return asked


def test_register_refuses_a_second_thing_of_a_name_unless_replaced() -> None:
    things = EntryPointRegistry[str](GROUP, "thing", use_entry_points=False)
    things.register("a", "first")
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        things.register("a", "second")
    things.register("a", "second", replace=True)
    assert (things.get("a"), things.names(), "a" in things, "b" in things) == (
        "second", ["a"], True, False,
    )  # fmt: skip


def test_registries_keep_their_own_things() -> None:
    one = EntryPointRegistry[str](GROUP, "thing", use_entry_points=False)
    two = EntryPointRegistry[str](GROUP, "thing", use_entry_points=False)
    one.register("a", "x")
    assert "a" in one and "a" not in two and two.find("a") is None


def test_an_unknown_name_is_named_with_the_known_ones_and_the_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_entry_points(monkeypatch, lazy="thing_plugin:THING")
    things = EntryPointRegistry[object](GROUP, "thing", not_found=ExecutorNotFound)
    things.register("here", "x")
    with pytest.raises(ExecutorNotFound) as err:
        things.get("nope")
    assert str(err.value) == (
        "no thing 'nope' (known: here, lazy); plug-ins add theirs in the entry-point group "
        f"'{GROUP}'"
    )
    assert things.find("nope") is None


def test_entry_points_are_read_once_and_imported_once_under_parallel_lookups(
    monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    asked = with_entry_points(monkeypatch, lazy=f"{plugin}:THING")
    listed = EntryPointRegistry[object](GROUP, "thing")
    assert listed.names() == ["lazy"] and plugin not in sys.modules  # names only
    things = EntryPointRegistry[object](GROUP, "thing")  # its first lookups race
    start = threading.Barrier(8)

    def look(_: int) -> object:
        start.wait()
        return things.get("lazy")

    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(look, range(16)))
    module = sys.modules[plugin]
    assert asked == [GROUP, GROUP]  # one read of the group by each registry
    assert all(f is module.THING for f in found)  # every caller the same object
    assert module.IMPORTS == [1]


def test_what_is_registered_wins_over_an_entry_point_and_unregister_brings_it_back(
    monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    with_entry_points(monkeypatch, lazy=f"{plugin}:THING")
    things = EntryPointRegistry[object](GROUP, "thing")
    things.register("lazy", "mine")
    assert things.get("lazy") == "mine" and plugin not in sys.modules
    things.unregister("lazy")
    assert things.get("lazy") is sys.modules[plugin].THING


def test_an_entry_point_replaces_a_default_target(
    monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    with_entry_points(monkeypatch, shipped=f"{plugin}:THING")
    defaults = {"shipped": "infra_automation.registry:EntryPointRegistry", "other": "os:sep"}
    things = EntryPointRegistry[object](GROUP, "thing", defaults=defaults)
    assert things.get("shipped") is sys.modules[plugin].THING
    assert things.get("other") == os.sep
    bare = EntryPointRegistry[object](GROUP, "thing", defaults=defaults, use_entry_points=False)
    assert bare.names() == []  # no discovery at all: neither defaults nor entry points


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("no_such_module_4711:THING", r"ModuleNotFoundError.*no_such_module_4711"),
        ("os:no_such_attribute", r"AttributeError.*no_such_attribute"),
    ],
)
def test_a_target_that_fails_to_load_names_it_and_the_group(
    monkeypatch: pytest.MonkeyPatch, target: str, error: str
) -> None:
    with_entry_points(monkeypatch, broken=target)
    things = EntryPointRegistry[object](GROUP, "thing")
    with pytest.raises(ConfigurationError) as err:
        things.get("broken")
    message = str(err.value)
    assert message.startswith(f"thing 'broken': {target} (entry-point group '{GROUP}')")
    assert re.search(error, message), message


def test_a_loaders_own_error_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    with_entry_points(monkeypatch, checked="os:sep")

    def refuse(name: str, target: str) -> object:
        raise ExecutorNotFound(f"{name}: {target} is not one")

    things = EntryPointRegistry[object](GROUP, "thing", load=refuse)
    with pytest.raises(ExecutorNotFound, match=r"^checked: os:sep is not one$"):
        things.get("checked")


def test_host_binding_kinds_are_a_registry_over_binders() -> None:
    assert BINDER_KINDS.group == BINDER_ENTRY_POINTS == "infra_automation.host_binders"
    assert {"lab-guests", "pool", "static"} <= set(BINDER_KINDS.names())
    with pytest.raises(ConfigurationError, match=r"no host_binding kind 'x'.*host_binders"):
        BINDER_KINDS.get("x")
