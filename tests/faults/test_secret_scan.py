"""secret_scan.py finds a planted secret in the root, in the temp dir and in a database."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import secret_scan

SECRET = secret_scan.FAULT_SECRETS["fault_unrelated"]


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A root and a temp dir, removed afterwards (the planted leaks must not outlive the
    test: the scan of the real temp dir after the suite would find them)."""
    root, tmp = tmp_path / "root", tmp_path / "tmp"
    gen = root / "inventories" / "site" / "generated"
    gen.mkdir(parents=True)
    (gen / "secrets.yml").write_text('db_password: "Tr0ub4dor-and-3\nshort: abc\n')  # a typo
    tmp.mkdir()
    yield root, tmp
    for child in tmp_path.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()


def test_a_clean_tree_has_0_hits(
    tree: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, tmp = tree
    assert secret_scan.main(["--root", str(root), "--tmp", str(tmp)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("0 hits")


@pytest.mark.parametrize("where", ["root", "tmp", "database"])
def test_a_planted_secret_is_a_hit(
    tree: tuple[Path, Path], where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    root, tmp = tree
    typo = "Tr0ub4dor-and-3"  # from the secrets file YAML cannot read
    args = ["--root", str(root), "--tmp", str(tmp)]
    if where == "database":
        db = tmp.parent / "record.db"
        with sqlite3.connect(db) as conn:
            conn.execute("CREATE TABLE runs (error TEXT)")
            conn.execute("INSERT INTO runs VALUES (?)", (f"failed: {typo}",))
        args += ["--database", f"sqlite:///{db}"]
    else:
        (root if where == "root" else tmp).joinpath("leak.log").write_bytes(
            b"\x00binary " + SECRET.encode() + b" and " + typo.encode()
        )
    assert secret_scan.main(args) == 1
    out = capsys.readouterr().out
    assert SECRET not in out and typo not in out  # hits are named, never printed
    assert "secret db_password" in out
