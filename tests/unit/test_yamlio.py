"""The safe YAML loader: regular UTF-8 files only, size and depth limits, duplicate keys,
aliases, literal scalars, and errors that never quote a secrets file."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from infra_automation import yamlio
from infra_automation.exceptions import InputFileError


def _error(path: Path, **options: object) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        yamlio.load(path, **options)  # type: ignore[arg-type]
    return info.value


def test_plain_yaml_loads_as_safe_load_does(tmp_path: Path) -> None:
    f = tmp_path / "a.yml"
    f.write_text("a: 1\nb: [x, yes]\nc: {d: 1.5}\n<<: {m: 1}\n")
    assert yamlio.load(f) == {"a": 1, "b": ["x", True], "c": {"d": 1.5}, "m": 1}


def test_literal_mode_keeps_every_scalar_as_written(tmp_path: Path) -> None:
    f = tmp_path / "s.yml"
    f.write_text("pin: 00001234\nflag: yes\nnum: 1e3\nquoted: 'a b'\n")
    assert yamlio.load(f, literal=True) == {
        "pin": "00001234", "flag": "yes", "num": "1e3", "quoted": "a b"
    }  # fmt: skip


def test_duplicate_keys_are_refused_naming_key_and_lines(tmp_path: Path) -> None:
    f = tmp_path / "r.yml"
    f.write_text("project: shop\nservice: x\nparams:\n  a: 1\n  a: 2\n")
    err = _error(f)
    assert "duplicate key 'a' (first on line 4)" in str(err) and err.line == 5
    f.write_text("project: shop\nservice: x\nproject: evil\n")
    assert "duplicate key 'project'" in str(_error(f, literal=True))


@pytest.mark.parametrize("text", ["[" * 50_000, "{a: " * 50_000, "- " * 50_000 + "x"])
def test_deep_nesting_is_an_error_not_a_crash(tmp_path: Path, text: str) -> None:
    f = tmp_path / "deep.yml"
    f.write_text(text)
    err = _error(f)
    assert f"nested deeper than {yamlio.MAX_DEPTH} levels" in str(err) and err.line == 1


def test_aliases_can_be_refused(tmp_path: Path) -> None:
    f = tmp_path / "laughs.yml"
    f.write_text("a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n")
    assert yamlio.load(f)["c"][0][0] == ["x", "x"]
    assert "aliases" in str(_error(f, aliases=False))


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe\x00\x01binary", "project: shop\n".encode("utf-16"), b"a: \xe9t\xe9\n"],
)
def test_not_utf8_is_an_error_naming_the_offset(tmp_path: Path, data: bytes) -> None:
    f = tmp_path / "bin.yml"
    f.write_bytes(data)
    assert "not UTF-8 text (invalid byte at offset" in str(_error(f))


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "bom.yml"
    f.write_bytes(b"\xef\xbb\xbfa: 1\n")
    assert yamlio.load(f) == {"a": 1}


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    outcome: list[str] = []
    reader = threading.Thread(target=lambda: outcome.append(str(_error(fifo))), daemon=True)
    reader.start()
    reader.join(5)
    assert outcome and "not a regular file" in outcome[0]


def test_devices_folders_and_huge_files_are_refused(tmp_path: Path) -> None:
    assert "not a regular file" in str(_error(Path("/dev/zero")))
    assert "not a regular file" in str(_error(tmp_path))
    big = tmp_path / "big.yml"
    with big.open("wb") as fh:
        fh.truncate(yamlio.REQUEST_MAX_BYTES + 1)  # sparse: no disk used
    assert "larger than" in str(_error(big, max_bytes=yamlio.REQUEST_MAX_BYTES))
    assert "cannot read" in str(_error(tmp_path / "missing.yml"))


def test_a_secrets_file_error_never_quotes_its_content(tmp_path: Path) -> None:
    f = tmp_path / "secrets.yml"
    f.write_text('vcenter_password: fine-value\ndb_password: "Tr0ub4dor-and-3\n')
    err = _error(f, literal=True, secret=True)
    assert "Tr0ub4dor" not in str(err) and "fine-value" not in str(err)
    assert str(f) in str(err) and "line 2, column 14" in str(err)
    f.write_text("db_password: Tr0ub\\x%4dor\n\tother: x\n")
    assert "Tr0ub" not in str(_error(f, literal=True, secret=True))
    # the same typo in a request is reported with YAML's problem (requests are not secret)
    assert "found unexpected end of stream" in str(_parse_error('a: "x\n'))


def _parse_error(text: str) -> InputFileError:
    with pytest.raises(InputFileError) as info:
        yamlio.parse(text, Path("r.yml"))
    return info.value


def test_load_mapping_wants_a_mapping(tmp_path: Path) -> None:
    f = tmp_path / "l.yml"
    f.write_text("- a\n")
    with pytest.raises(InputFileError, match="expected a mapping"):
        yamlio.load_mapping(f)
    f.write_text("")
    assert yamlio.load_mapping(f) == {}
