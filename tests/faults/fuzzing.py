"""Shared pieces of the fuzz properties: a small project root, hostile documents, the checks.

Every property drives the real CLI entry point in-process (typer's ``CliRunner`` on
``infra_automation.cli:app``) against a temporary copy of a small project root
(``data/fuzz``: one catalog service of ``core.*`` steps, one inventory folder) and checks
the README's promise for bad input: exit 2, no traceback, a message naming the file (or
the field), nothing written under the project root, no raw ESC/bidi character printed.

The documents are invalid *by construction* (a wrong type where the schema is strict, an
unknown key where ``extra="forbid"``, a duplicate key, bytes that are not UTF-8, nesting
deeper than any loader should follow), so "exit 2" is the only right answer for each.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

DATA = Path(__file__).parent / "data" / "fuzz"

# Reproducible in CI: the same examples every run, no example database written anywhere.
FUZZ = settings(
    max_examples=25,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
    # No shrinking: a failing case is reported as found, so a failing property still ends
    # within the file's time box (shrinking a 50,000-deep document takes minutes).
    phases=(Phase.explicit, Phase.generate),
    report_multiple_bugs=False,
)

# What must never reach a terminal raw: ESC (and CSI), bidi overrides/isolates/marks, BEL, NUL.
RAW_CONTROL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x9b\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
NASTY = (
    "\x1b",
    "\x1b[31m",
    "\x1b]0;title\x07",
    "\u202e",
    "\u2066",
    "\u200f",
    "\x07",
    "\x00",
    "\x9b",
    "\r",
    "\u2028",
    "\ufeff",
)

# --- the project root ----------------------------------------------------------------------


def make_root(base: Path) -> Path:
    """A project root: ``catalog/`` (one service), ``inventories/lab/``, ``requests/``."""
    root = base / "root"
    shutil.copytree(DATA / "catalog", root / "catalog")
    shutil.copytree(DATA / "inventory", root / "inventories" / "lab")
    (root / "requests").mkdir()
    (root / "requests" / "ok.yml").write_text(VALID_REQUEST_TEXT)
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` with its size and mtime (directories too)."""
    seen: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            st_ = path.lstat()
            seen[str(path.relative_to(root))] = (st_.st_size, st_.st_mtime_ns)
    return seen


@contextmanager
def placed(path: Path, content: bytes) -> Iterator[Path]:
    """``content`` at ``path`` for the duration; the previous content (or nothing) after."""
    old = path.read_bytes() if path.exists() else None
    path.write_bytes(content)
    try:
        yield path
    finally:
        if old is None:
            path.unlink(missing_ok=True)
        else:
            path.write_bytes(old)


# --- running the CLI -----------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    output: str
    exception: BaseException | None


RUNNER = CliRunner()


def infra(root: Path, *args: str) -> Outcome:
    """``infra --root ROOT ARGS`` in-process; output is stdout and stderr together."""
    from infra_automation.cli import app

    env: dict[str, str | None] = {"COLUMNS": "400", "TERM": "dumb", "INFRA_DATABASE_URL": None}
    result = RUNNER.invoke(app, ["--root", str(root), *args], env=env, catch_exceptions=True)
    exception = result.exception
    if isinstance(exception, SystemExit):
        exception = None
    return Outcome(result.exit_code, result.output, exception)


def check_refused(
    root: Path, run: Callable[[], Outcome], names: tuple[str, ...], written: set[str]
) -> Outcome:
    """Run the CLI once and assert the bad-input contract; ``written`` are our own inputs."""
    before = snapshot(root)
    outcome = run()
    after = snapshot(root)
    assert outcome.exception is None, f"traceback: {outcome.exception!r}\n{outcome.output}"
    assert "Traceback" not in outcome.output, outcome.output
    assert outcome.exit_code == 2, f"exit {outcome.exit_code}, expected 2:\n{outcome.output}"
    assert any(n in outcome.output for n in names), (
        f"the message names none of {names}:\n{outcome.output}"
    )
    changed = {
        p for p in set(before) | set(after) if before.get(p) != after.get(p) and p not in written
    }
    assert not changed, f"written under the project root: {sorted(changed)}"
    raw = sorted({f"U+{ord(c):04X}" for c in RAW_CONTROL.findall(outcome.output)})
    assert not raw, f"raw control characters printed: {raw}\n{outcome.output!r}"
    return outcome


# --- hostile values ------------------------------------------------------------------------

short = st.text(max_size=6)
nasty_text = st.one_of(
    st.text(max_size=12),
    st.builds(lambda a, c, b: a + c + b, short, st.sampled_from(NASTY), short),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["a", "é", "\x1b", "\u202e", "{{"]),
        st.integers(2_000, 60_000),
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# A value that is never a string, a number or a boolean: wrong wherever a scalar is expected.
containers = st.one_of(
    st.lists(values, max_size=3), st.dictionaries(nasty_text, values, min_size=1, max_size=3)
)
# A value that is never a mapping: wrong wherever a mapping is expected.
not_mappings = st.one_of(
    st.lists(values, max_size=3), st.booleans(), st.integers(), nasty_text.filter(bool)
)
keys = st.one_of(nasty_text.filter(lambda k: 0 < len(k) < 5000), st.integers(), st.booleans())


def dump(doc: Any) -> bytes:
    """YAML of ``doc``: control characters escaped (``\\e``, ``\\u202e``), so they load back."""
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=10_000).encode()


def set_path(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A deep copy of ``doc`` with ``value`` at ``path`` (creating mappings on the way)."""
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(doc))
    node: Any = out
    for part in path[:-1]:
        node = node[part] if isinstance(node, list) else node.setdefault(part, {})
    node[path[-1]] = value
    return out


def dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in path if not isinstance(p, int))


@st.composite
def undecodable(draw: st.DrawFn, doc: dict[str, Any]) -> bytes:
    """A valid document in an encoding that is not UTF-8, or with bytes that are not."""
    text = dump(doc).decode()
    kind = draw(st.sampled_from(["utf-16", "utf-32", "latin-1", "insert"]))
    if kind == "insert":
        raw = text.encode()
        at = draw(st.integers(0, len(raw)))
        junk = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\x80\x80", b"\xed\xa0\x80"]))
        return raw[:at] + junk + raw[at:]
    if kind == "latin-1":
        return (text + "# caf\xe9 \xff\n").encode("latin-1")
    return text.encode(kind)


@st.composite
def deep(draw: st.DrawFn, doc: dict[str, Any], key: str) -> bytes:
    """``doc`` with a value nested thousands of levels deep under ``key``."""
    depth = draw(st.sampled_from([1_000, 10_000, 50_000]))
    style = draw(st.sampled_from(["flow-list", "flow-map", "block"]))
    if style == "flow-list":
        nested = "[" * depth + "]" * depth
    elif style == "flow-map":
        nested = "{a: " * depth + "1" + "}" * depth
    else:
        nested = (
            "\n" + "".join(" " * i + "a:\n" for i in range(min(depth, 3_000))) + " " * 3_000 + "1"
        )
    rest = {k: v for k, v in doc.items() if k != key}
    return dump(rest) + f"{key}: {nested}\n".encode()


@st.composite
def duplicated(draw: st.DrawFn, doc: dict[str, Any]) -> tuple[bytes, str]:
    """``doc`` with one of its top-level keys given twice (the second one differs)."""
    key = draw(st.sampled_from(sorted(doc)))
    second = draw(values.filter(lambda v: v != doc[key]))
    return dump(doc) + dump({key: second}), key


@st.composite
def arbitrary_bytes(draw: st.DrawFn) -> bytes:
    return draw(
        st.one_of(
            st.binary(max_size=400),
            st.text(max_size=300).map(str.encode),
            st.lists(st.sampled_from(TOKENS), max_size=60).map(b"".join),
        )
    )


TOKENS = [b"{", b"[", b"- ", b": ", b"\n", b"&a ", b"*a", b"!!python/object:os.system ",
          b"%YAML 1.1\n", b"---\n", b"\t", b'"', b"\x1b", b"\xe2\x80\xae"]  # fmt: skip


VALID_REQUEST: dict[str, Any] = {
    "service": "fuzz-chain",
    "project": "fuzzp",
    "requester": "fuzzer",
    "params": {"greeting": "hi", "pause": 0, "extra": False, "tags": ["a"]},
}
VALID_REQUEST_TEXT = dump(VALID_REQUEST).decode()
