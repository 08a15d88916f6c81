"""Hostile request files through ``infra apply --check``: refused with exit 2, nothing written.

Each document is invalid by construction (see ``fuzzing``); the property is the README's
promise for bad input: a clear error naming the file or the field, exit 2, nothing runs,
nothing is recorded, and no raw control character reaches the terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fuzzing import (
    FUZZ,
    VALID_REQUEST,
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
    nasty_text,
    placed,
    set_path,
    undecodable,
    values,
)
from hypothesis import example, given
from hypothesis import strategies as st

KNOWN = {"service", "project", "requester", "inventory", "params"}
PARAMS = {"greeting", "pause", "extra", "tags"}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_root(tmp_path_factory.mktemp("fuzz-request"))


def refused(root: Path, content: bytes, *fields: str) -> None:
    path = root / "requests" / "fuzz.yml"
    with placed(path, content):
        check_refused(
            root,
            lambda: infra(root, "apply", "--check", str(path)),
            ("fuzz.yml", *fields),
            written={"requests/fuzz.yml"},
        )


SCALAR_FIELDS = [
    ("service",),
    ("project",),
    ("requester",),
    ("params", "greeting"),
    ("params", "pause"),
    ("params", "extra"),
]


@FUZZ
@given(path=st.sampled_from(SCALAR_FIELDS), value=containers)
@example(path=("project",), value=["a", "b"])
def test_a_container_where_a_scalar_belongs_is_refused(
    root: Path, path: tuple[str, ...], value: Any
) -> None:
    refused(root, dump(set_path(VALID_REQUEST, path, value)), dotted(path))


@FUZZ
@given(
    path=st.sampled_from([("params",), ("params", "tags")]),
    value=st.one_of(
        st.integers().filter(bool),
        nasty_text.filter(bool),
        st.dictionaries(nasty_text, values, min_size=1, max_size=2),
    ),
)
def test_a_scalar_or_mapping_where_a_list_or_mapping_belongs_is_refused(
    root: Path, path: tuple[str, ...], value: Any
) -> None:
    if path == ("params",) and isinstance(value, dict):
        value = [value]  # a mapping is right for params: make it a list, still wrong
    refused(root, dump(set_path(VALID_REQUEST, path, value)), dotted(path))


@FUZZ
@given(where=st.sampled_from([(), ("params",)]), key=keys, value=values)
@example(where=("params",), key="\x1b[31mred", value=1)
@example(where=(), key="pro\u202ejec", value="x")
def test_an_unknown_key_is_refused_and_printed_escaped(
    root: Path, where: tuple[str, ...], key: Any, value: Any
) -> None:
    known = PARAMS if where else KNOWN
    if key in known:
        key = f"{key}-unknown"
    refused(root, dump(set_path(VALID_REQUEST, (*where, key), value)), *where)


@FUZZ
@given(data=st.data())
def test_a_duplicate_key_is_refused(root: Path, data: st.DataObject) -> None:
    content, key = data.draw(duplicated(VALID_REQUEST))
    refused(root, content, key)


@FUZZ
@given(data=st.data())
@example(data=None)  # replaced below by the UTF-16 file of the hostile pass
def test_a_file_that_is_not_utf8_is_refused(root: Path, data: st.DataObject | None) -> None:
    content = (
        dump(VALID_REQUEST).decode().encode("utf-16")
        if data is None
        else data.draw(undecodable(VALID_REQUEST))
    )
    refused(root, content)


@FUZZ
@given(data=st.data())
def test_deep_nesting_is_refused(root: Path, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(["params", "requester", "project"]))
    refused(root, data.draw(deep(VALID_REQUEST, key)), key)


@FUZZ
@given(content=arbitrary_bytes())
@example(content=b"")
@example(content=b"\x00\x01\x02\xff")
@example(content=b"!!python/object/apply:os.system ['true']\n")
@example(content=b"- service: fuzz-chain\n  project: fuzzp\n")
def test_arbitrary_bytes_are_refused(root: Path, content: bytes) -> None:
    refused(root, content)


def test_a_fifo_as_the_request_file_is_refused_not_waited_on(root: Path) -> None:
    fifo = root.parent / "request.fifo"
    os.mkfifo(fifo)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "infra_automation.cli", "--root", str(root), "apply",
             "--check", str(fifo)],
            capture_output=True, text=True, timeout=30, env={**os.environ, "COLUMNS": "400"},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("infra waited on a FIFO given as the request file")
    finally:
        fifo.unlink()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "request.fifo" in proc.stderr
