"""Reading YAML input files safely: requests, the catalog, inventories and secrets.

One loader for every YAML file the project reads from disk. Compared with ``yaml.safe_load``:

- only a regular file is read (a FIFO, a device or ``/dev/zero`` would hang or never end),
  and only up to a size limit;
- the text must be UTF-8 (an error names the byte offset, not a traceback);
- nesting deeper than :data:`MAX_DEPTH` is refused (50,000 ``[`` would overflow the stack);
- a key given twice in one mapping is refused, naming the key and both lines (YAML would
  silently keep the last one);
- aliases (``*name``) can be refused for untrusted files, so a few lines cannot expand
  into billions of values downstream ("billion laughs");
- ``literal=True`` keeps every scalar as the string written (``00001234`` stays
  ``"00001234"``, ``yes`` stays ``"yes"``): secrets are compared as written;
- ``secret=True`` errors never quote the file's content (YAML's own messages quote the
  offending line, which in a secrets file is the secret).

Every failure is an :class:`~infra_automation.exceptions.InputFileError` that names the file,
and where known the line and column.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import BaseConstructor, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver, Resolver
from yaml.scanner import Scanner

from infra_automation.exceptions import InputFileError

MAX_DEPTH = 64
MIB = 1024 * 1024
MAX_BYTES = 10 * MIB  # the catalog and inventories (trusted, hand-written)
REQUEST_MAX_BYTES = 1 * MIB  # a request is a few dozen lines
SECRETS_MAX_BYTES = 1 * MIB


class _Checks:
    """Depth, duplicate-key and alias checks, mixed into the loaders below."""

    allow_aliases = True
    _depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        composer: Any = self
        if not self.allow_aliases and composer.check_event(yaml.AliasEvent):
            mark = composer.peek_event().start_mark
            raise _LoadProblem("aliases (*name) are not allowed in this file", mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = composer.peek_event().start_mark
                raise _LoadProblem(f"nested deeper than {MAX_DEPTH} levels", mark)
            node: Node | None = Composer.compose_node(composer, parent, index)
            return node
        finally:
            self._depth -= 1

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode):
                raise _LoadProblem("a mapping key must be a plain value", key_node.start_mark)
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen and key != "<<":
                raise _LoadProblem(
                    f"duplicate key {key!r} (first on line {seen[key]})", key_node.start_mark
                )
            seen[key] = line
        constructor: Any = super()
        mapping: dict[Any, Any] = constructor.construct_mapping(node, deep=deep)
        return mapping


class _SafeLoader(_Checks, Reader, Scanner, Parser, Composer, SafeConstructor, Resolver):
    """``yaml.SafeLoader`` with the checks: types resolved as usual (ints, bools, dates)."""

    def __init__(self, stream: str, *, aliases: bool) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.allow_aliases = aliases


class _LiteralLoader(_Checks, Reader, Scanner, Parser, Composer, BaseConstructor, BaseResolver):
    """Every scalar is the string as written; mappings and lists as usual."""

    def __init__(self, stream: str, *, aliases: bool) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        BaseConstructor.__init__(self)
        BaseResolver.__init__(self)
        self.allow_aliases = aliases


class _LoadProblem(yaml.MarkedYAMLError):
    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def read_text(path: Path, *, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``max_bytes`` (never blocks on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputFileError(path, f"cannot read: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputFileError(path, "not a regular file (a FIFO, device or folder)")
        if info.st_size > max_bytes:
            raise InputFileError(path, f"larger than {max_bytes} bytes ({info.st_size})")
        data = _read_at_most(fd, max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise InputFileError(path, f"larger than {max_bytes} bytes")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(path, f"not UTF-8 text (invalid byte at offset {exc.start})") from exc


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def parse(
    text: str,
    source: Path,
    *,
    literal: bool = False,
    aliases: bool = True,
    secret: bool = False,
) -> Any:
    """One YAML document from ``text`` (``source`` names it in errors); see the module doc."""
    loader_class = _LiteralLoader if literal else _SafeLoader
    loader: _SafeLoader | _LiteralLoader | None = None
    try:
        built = loader = loader_class(text, aliases=aliases)  # its reader refuses controls
        return built.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise _problem(source, exc, secret=secret) from None
    except yaml.YAMLError as exc:
        detail = "not valid YAML" if secret else f"not valid YAML: {exc}"
        raise InputFileError(source, detail) from None
    except RecursionError:  # a construct the depth check does not see; never a traceback
        raise InputFileError(source, "nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def load(
    path: str | Path,
    *,
    literal: bool = False,
    aliases: bool = True,
    secret: bool = False,
    max_bytes: int = MAX_BYTES,
) -> Any:
    """Read and parse one YAML file (see :func:`read_text` and :func:`parse`)."""
    file = Path(path)
    text = read_text(file, max_bytes=max_bytes)
    return parse(text, file, literal=literal, aliases=aliases, secret=secret)


def load_mapping(path: str | Path, **options: Any) -> dict[str, Any]:
    """:func:`load` a file whose top level must be a mapping (an empty file is ``{}``)."""
    data = load(path, **options)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputFileError(Path(path), "expected a mapping at the top")
    return data


def _problem(source: Path, exc: yaml.MarkedYAMLError, *, secret: bool) -> InputFileError:
    """The error without YAML's snippet of the offending line; for secrets, no text at all."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    column = mark.column + 1 if mark is not None else None
    if isinstance(exc, _LoadProblem):  # our own checks: they name keys, never values
        return InputFileError(source, str(exc.problem), line=line, column=column)
    started = ""
    if exc.context and exc.context_mark is not None:
        at = exc.context_mark
        started = f" ({exc.context} started on line {at.line + 1}, column {at.column + 1})"
    if secret:  # the scanner's problem may quote a character of the secret
        detail = "not valid YAML" + started + "; the content of a secrets file is never shown"
    else:
        detail = f"not valid YAML: {exc.problem or 'syntax error'}{started}"
    return InputFileError(source, detail, line=line, column=column)
