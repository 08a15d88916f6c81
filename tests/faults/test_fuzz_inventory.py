"""A hostile ``inventory.yml`` (or generated fragment): ``infra apply`` refuses, exit 2.

The request and the catalog are valid; the inventory folder they run against is not. The
inventory is read before anything runs, so nothing may be written (no run record, no
lock, no docs), the message names the inventory file, no raw control character is printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzzing import (
    DATA,
    FUZZ,
    arbitrary_bytes,
    check_refused,
    containers,
    deep,
    dotted,
    dump,
    duplicated,
    infra,
    keys,
    make_root,
    not_mappings,
    placed,
    set_path,
    undecodable,
    values,
)
from hypothesis import assume, example, given
from hypothesis import strategies as st

INVENTORY: dict[str, Any] = yaml.safe_load((DATA / "inventory" / "inventory.yml").read_text())
KNOWN = {"name", "defaults", "groups", "hosts", "vcenter", "ipam", "host_binding"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("fuzz-inventory"))


def refused(root: Path, content: bytes, *fields: str, name: str = "inventory.yml") -> None:
    folder = root / "inventories" / "lab"
    path = folder / name
    path.parent.mkdir(exist_ok=True)
    with placed(path, content):
        check_refused(
            root,
            lambda: infra(root, "apply", "--check", str(root / "requests" / "ok.yml")),
            (name, *fields),
            written={str(path.relative_to(root)), str(path.parent.relative_to(root))},
        )


def test_the_base_inventory_is_valid(root: Path) -> None:
    """Guard of the properties below (the dry run of the valid request succeeds)."""
    from infra_automation.inventory import load_inventory

    assert set(load_inventory(root / "inventories" / "lab").hosts) == {"r1", "h1"}


@FUZZ
@given(
    path=st.sampled_from(
        [("name",), ("hosts", "r1", "port"), ("hosts", "r1", "hostname"), ("vcenter", "port"),
         ("vcenter", "host"), ("ipam", "pools", "default", "vlan_min"), ("defaults", "username"),
         ("groups", "routers", "platform")]
    ),
    value=containers,
)  # fmt: skip
@example(path=("hosts", "r1", "port"), value=["22"])
def test_a_container_where_a_scalar_belongs_is_refused(
    root: Path, path: tuple[Any, ...], value: Any
) -> None:
    refused(root, dump(set_path(INVENTORY, path, value)), dotted(path))


@FUZZ
@given(
    path=st.sampled_from(
        [("hosts",), ("groups",), ("vcenter",), ("ipam", "pools"), ("hosts", "r1", "data"),
         ("hosts", "h1")]
    ),
    value=not_mappings.filter(lambda v: v is not None),
)  # fmt: skip
def test_a_non_mapping_where_a_mapping_belongs_is_refused(
    root: Path, path: tuple[Any, ...], value: Any
) -> None:
    refused(root, dump(set_path(INVENTORY, path, value)), dotted(path))


@FUZZ
@given(where=st.sampled_from([(), ("hosts", "r1"), ("vcenter",)]), key=keys, value=values)
@example(where=("hosts", "r1"), key="\u2066evil\u2069", value="x")
def test_an_unknown_key_is_refused(
    root: Path, where: tuple[Any, ...], key: Any, value: Any
) -> None:
    known = KNOWN if not where else set(INVENTORY[where[0]] if len(where) == 1 else ())
    if key in known or key in {"groups", "hostname", "port", "data", "platform", "username",
                               "password", "password_secret", "ssh_key_file"} | set(
        INVENTORY["vcenter"]
    ):  # fmt: skip
        key = f"{key}-unknown"
    refused(root, dump(set_path(INVENTORY, (*where, key), value)), *map(str, where))


@FUZZ
@given(data=st.data())
def test_a_duplicate_key_is_refused(root: Path, data: st.DataObject) -> None:
    content, key = data.draw(duplicated(INVENTORY))
    refused(root, content, key)


@FUZZ
@given(data=st.data())
def test_an_inventory_that_is_not_utf8_is_refused(root: Path, data: st.DataObject) -> None:
    refused(root, data.draw(undecodable(INVENTORY)))


@FUZZ
@given(data=st.data())
def test_deep_nesting_is_refused(root: Path, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(["hosts", "groups", "name"]))
    refused(root, data.draw(deep(INVENTORY, key)), key)


@FUZZ
@given(content=arbitrary_bytes())
@example(content=b"\x00")
@example(content=b"- just\n- a list\n")
def test_arbitrary_bytes_are_refused(root: Path, content: bytes) -> None:
    assume(not _empty(content))  # an empty inventory (no hosts) is a valid one
    refused(root, content)


def _empty(content: bytes) -> bool:
    """The bytes are a YAML document holding nothing (``""``, ``# note``, ``{}``, ``~``)."""
    try:
        return yaml.safe_load(content) in (None, {})
    except (yaml.YAMLError, ValueError, RecursionError):
        return False


@FUZZ
@given(content=st.one_of(arbitrary_bytes(), st.builds(dump, containers)))
@example(content=b"hosts: [1, 2]\n")
def test_a_broken_generated_fragment_is_refused(root: Path, content: bytes) -> None:
    """``generated/*.yml`` is merged over the inventory: a broken one is named as well."""
    if _empty(content):
        content = b"hosts: 7\n"  # an empty fragment merges to nothing: make it wrong
    refused(root, content, name="generated/lab.yml")
