"""A hostile service file in the catalog folder: every command refuses with exit 2.

The fuzzed file sits next to a valid service; ``infra apply --check`` of a valid request
for that valid service must still be refused (the catalog is loaded whole), naming the
fuzzed file, writing nothing, printing no raw control character.
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
from hypothesis import example, given
from hypothesis import strategies as st

# A second valid service (renamed copy of the fuzz service): the base of every mutation.
SERVICE: dict[str, Any] = {
    **yaml.safe_load((DATA / "catalog" / "fuzz-chain.yml").read_text()),
    "name": "fuzz-other",
}
KNOWN = {"name", "description", "owner", "params", "steps", "outputs"}
STEP_KNOWN = {"id", "executor", "department", "description", "needs", "params", "targets", "when"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("fuzz-catalog"))


def refused(root: Path, content: bytes, *fields: str) -> None:
    path = root / "catalog" / "zz-fuzz.yml"
    with placed(path, content):
        check_refused(
            root,
            lambda: infra(root, "apply", "--check", str(root / "requests" / "ok.yml")),
            ("zz-fuzz.yml", *fields),
            written={"catalog/zz-fuzz.yml"},
        )


def test_the_base_service_is_valid(root: Path) -> None:
    """Guard of the properties below: without a mutation the catalog loads and plans."""
    path = root / "catalog" / "zz-fuzz.yml"
    with placed(path, dump(SERVICE)):
        outcome = infra(root, "catalog", "show", "fuzz-other")
    assert outcome.exit_code == 0, outcome.output


@FUZZ
@given(
    path=st.sampled_from(
        [("name",), ("description",), ("steps", 0, "id"), ("steps", 0, "executor"),
         ("steps", 1, "department"), ("params", "pause", "type"), ("outputs", "x")]
    ),
    value=containers,
)  # fmt: skip
def test_a_container_where_a_string_belongs_is_refused(
    root: Path, path: tuple[Any, ...], value: Any
) -> None:
    refused(root, dump(set_path(SERVICE, path, value)), dotted(path))


@FUZZ
@given(
    path=st.sampled_from(
        [("params",), ("steps", 0, "params"), ("steps", 1, "needs"), ("outputs",), ("steps",)]
    ),
    value=not_mappings,
)
@example(path=("steps",), value=[])
def test_a_wrong_shape_where_a_mapping_or_list_belongs_is_refused(
    root: Path, path: tuple[Any, ...], value: Any
) -> None:
    if (path[-1] == "needs" and isinstance(value, list)) or (path[-1] == "steps" and value):
        value = {"not": "a list"}  # a list is right there (an empty steps list is not)
    refused(root, dump(set_path(SERVICE, path, value)), dotted(path))


@FUZZ
@given(where=st.sampled_from([(), ("steps", 0)]), key=keys, value=values)
@example(where=("steps", 0), key="\x1b]0;pwned\x07", value=1)
def test_an_unknown_key_is_refused(
    root: Path, where: tuple[Any, ...], key: Any, value: Any
) -> None:
    if key in (STEP_KNOWN if where else KNOWN):
        key = f"{key}-unknown"
    refused(root, dump(set_path(SERVICE, (*where, key), value)), *map(str, where))


@FUZZ
@given(data=st.data())
def test_a_duplicate_key_is_refused(root: Path, data: st.DataObject) -> None:
    content, key = data.draw(duplicated(SERVICE))
    refused(root, content, key)


@FUZZ
@given(data=st.data())
def test_a_service_file_that_is_not_utf8_is_refused(root: Path, data: st.DataObject) -> None:
    refused(root, data.draw(undecodable(SERVICE)))


@FUZZ
@given(data=st.data())
def test_deep_nesting_is_refused(root: Path, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(["steps", "params", "description"]))
    refused(root, data.draw(deep(SERVICE, key)), key)


@FUZZ
@given(content=arbitrary_bytes())
@example(content=b"")
@example(content=b"\xff\xfe\x00")
def test_arbitrary_bytes_are_refused(root: Path, content: bytes) -> None:
    refused(root, content)
