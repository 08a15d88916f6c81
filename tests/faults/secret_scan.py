"""Grep the project root, the run database and the system temp dir for every secret value.

    python tests/faults/secret_scan.py [--root DIR] [--database URL] [--tmp DIR]

Secret values are collected from

- every lab instance's ``generated/secrets.yml`` (``inventories/*/generated/`` and
  ``.lab/*/inventory/generated/``) and vcsim's password file (``.lab/*/vcenter/password``),
- ``INFRA_SECRET_*`` variables: of this process's environment, and the literal values the
  test sources give them (``setenv("INFRA_SECRET_X", "value")``, ``{"INFRA_SECRET_X": NAME}``
  with ``NAME = "value"`` in the same file),
- the fault suite's own test secrets (:data:`FAULT_SECRETS`).

Searched: every regular file under the root (symlinks are not followed; ``.venv``, ``.git``,
the lab's build cache and container storage ``.lab/cache`` — the targets' own disks — and
the files a secret was collected from are left out), the SQLite files found there (as
bytes, with their WAL), the tables of ``--database`` (any SQLAlchemy URL) and the system temp
dir (the session tooling's ``bash_jobs.*`` folders are not ours and are left out).

Prints each hit as ``path: secret NAME`` (never the value) and exits 1 if there is any;
prints ``0 hits`` and exits 0 otherwise. Values shorter than 6 characters are not searched
(they would match everywhere); the count of those is printed.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MIN_LENGTH = 6
CHUNK = 16 * 1024 * 1024

# The fault suite's own secrets (tests/faults/test_matrix_lab.py passes them to `infra` as
# INFRA_SECRET_* variables): the play's token, and one that no step uses at all.
FAULT_SECRETS = {
    "fault_play_token": "fault-play-token-5d81c2e7a9",
    "fault_unrelated": "fault-unrelated-b7e04f13c6",
}

SKIP_DIRS = {".venv", ".git", "node_modules", "__pycache__", ".mypy_cache", ".ruff_cache"}
SKIP_UNDER_ROOT = (Path(".lab") / "cache",)
TEMP_SKIP = re.compile(r"^bash_jobs\.")
# INFRA_SECRET_X then "literal" or NAME (a constant of the same file), after , : or =
ASSIGN = re.compile(
    r"""\bINFRA_SECRET_([A-Z0-9_]+)["']?\s*[,:=]\s*"""
    r"""(?:["']([^"'\n]+)["']|([A-Z][A-Z0-9_]+)\b)"""
)
CONSTANT = r"""^\s*{name}\s*(?::[^=]+)?=\s*["']([^"'\n]+)["']"""


@dataclass(frozen=True)
class Secret:
    name: str
    value: str
    source: Path | None  # the file it was collected from (not searched), None: environment


@dataclass(frozen=True)
class Hit:
    where: str
    secret: Secret


# --- collecting ----------------------------------------------------------------------------


def collect(root: Path, env: dict[str, str] | None = None) -> list[Secret]:
    env = dict(os.environ) if env is None else env
    found = [
        *_from_secret_files(root),
        *_from_env(env),
        *_from_test_sources(root),
        *(Secret(k, v, Path(__file__).resolve()) for k, v in FAULT_SECRETS.items()),
    ]
    unique: dict[tuple[str, Path | None], Secret] = {}
    for s in found:
        unique.setdefault((s.value, s.source), s)
    return list(unique.values())


def secret_files(root: Path) -> list[Path]:
    return sorted(
        [
            *root.glob("inventories/*/generated/secrets.yml"),
            *root.glob(".lab/*/inventory/generated/secrets.yml"),
            *root.glob(".lab/*/vcenter/password"),
        ]
    )


def _from_secret_files(root: Path) -> Iterator[Secret]:
    for path in secret_files(root):
        text = path.read_text(errors="replace")
        if path.name == "password":
            yield Secret(f"{path.parent.parent.name}/vcenter password", text.strip(), path)
            continue
        for name, value in _yaml_or_lines(text):
            yield Secret(name, value, path)


def _yaml_or_lines(text: str) -> Iterator[tuple[str, str]]:
    """``name: value`` pairs; a file YAML cannot read is split by lines (a typo'd quote)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        for k, v in data.items():
            if v is not None:
                yield str(k), str(v)
    for line in text.splitlines():  # the literal as written (00001234, yes, "quoted)
        name, sep, raw = line.partition(":")
        if sep and raw.strip() and not name.startswith((" ", "#")):
            yield name.strip(), raw.strip().strip("\"'")


def _from_env(env: dict[str, str]) -> Iterator[Secret]:
    for key, value in env.items():
        if key.startswith("INFRA_SECRET_") and value:
            yield Secret(key.removeprefix("INFRA_SECRET_").lower(), value, None)


def _from_test_sources(root: Path) -> Iterator[Secret]:
    for folder in ("tests", "benchmarks"):
        for path in sorted((root / folder).rglob("*.py")):
            text = path.read_text(errors="replace")
            for m in ASSIGN.finditer(text):
                value = m.group(2) or _constant(text, m.group(3))
                if value:
                    yield Secret(m.group(1).lower(), value, path.resolve())


def _constant(text: str, name: str | None) -> str | None:
    if not name:
        return None
    m = re.search(CONSTANT.format(name=re.escape(name)), text, re.MULTILINE)
    return m.group(1) if m else None


# --- searching -----------------------------------------------------------------------------


def files_under(base: Path, skip: Iterable[Path] = (), temp: bool = False) -> Iterator[Path]:
    skipped = {p.resolve() for p in skip}
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [
            d
            for d in dirnames
            if d not in SKIP_DIRS
            and (here / d).resolve() not in skipped
            and not (temp and here == base and TEMP_SKIP.match(d))
        ]
        for name in filenames:
            path = here / name
            if path.is_symlink() or not path.is_file():
                continue  # FIFOs, sockets, devices and links are not read
            yield path


def grep_file(
    path: Path, pattern: re.Pattern[bytes], by_value: dict[bytes, list[Secret]]
) -> set[bytes]:
    found: set[bytes] = set()
    overlap = max((len(v) for v in by_value), default=0)
    try:
        with path.open("rb") as fh:
            tail = b""
            while chunk := fh.read(CHUNK):
                data = tail + chunk
                found.update(m.group(0) for m in pattern.finditer(data))
                tail = data[-overlap:]
    except OSError:
        pass  # vanished or unreadable meanwhile
    return found


def scan_paths(paths: Iterable[Path], secrets: list[Secret]) -> list[Hit]:
    by_value: dict[bytes, list[Secret]] = {}
    for s in secrets:
        if len(s.value) >= MIN_LENGTH:
            by_value.setdefault(s.value.encode(), []).append(s)
    if not by_value:
        return []
    pattern = re.compile(b"|".join(re.escape(v) for v in sorted(by_value, key=len, reverse=True)))
    hits: list[Hit] = []
    for path in paths:
        resolved = path.resolve()
        for value in sorted(grep_file(path, pattern, by_value)):
            for s in by_value[value]:
                if not _is_source(resolved, s):
                    hits.append(Hit(str(path), s))
                    break
    return hits


def _is_source(path: Path, secret: Secret) -> bool:
    """``path`` is where ``secret`` was collected from, or a copy of that test source
    (another checkout's ``tests/unit/test_x.py``, e.g. in the temp dir)."""
    if secret.source is None:
        return False
    if path == secret.source:
        return True
    try:
        rel = secret.source.relative_to(ROOT)
    except ValueError:
        return False
    return rel.parts[0] in ("tests", "benchmarks") and path.parts[-len(rel.parts) :] == rel.parts


def scan_database(url: str, secrets: list[Secret]) -> list[Hit]:
    import sqlalchemy as sa

    values = {s.value: s for s in secrets if len(s.value) >= MIN_LENGTH}
    hits: list[Hit] = []
    engine = sa.create_engine(url)
    try:
        meta = sa.MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            for table in meta.sorted_tables:
                for row in conn.execute(sa.select(table)):
                    text = repr(tuple(row))
                    for value, s in values.items():
                        if value in text:
                            hits.append(
                                Hit(f"{engine.url.render_as_string()} table {table.name}", s)
                            )
    finally:
        engine.dispose()
    return hits


def scan(root: Path, tmp: Path, database: str | None, secrets: list[Secret]) -> list[Hit]:
    skip = [root / p for p in SKIP_UNDER_ROOT] + [p for p in secret_files(root)]
    root_files = [p for p in files_under(root, skip) if p.resolve() not in set(skip)]
    hits = scan_paths(root_files, secrets)
    if tmp.resolve() != root.resolve():
        hits += scan_paths(files_under(tmp, temp=True), secrets)
    if database:
        hits += scan_database(database, secrets)
    return hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="project root (default: this checkout)"
    )
    parser.add_argument("--database", help="SQLAlchemy URL of a run record to dump and search")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()), help="temp dir")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    secrets = collect(root)
    short = {s.name for s in secrets if len(s.value) < MIN_LENGTH}
    hits = scan(root, args.tmp, args.database, secrets)
    print(f"{len({s.value for s in secrets})} secret values from {root}", end="")
    print(f" ({len(short)} shorter than {MIN_LENGTH} not searched)" if short else "")
    for hit in hits:
        source = hit.secret.source or "environment"
        print(f"{hit.where}: secret {hit.secret.name} (from {source})")
    print(f"{len(hits)} hits")
    return 1 if hits else 0


if __name__ == "__main__":
    sys.exit(main())
