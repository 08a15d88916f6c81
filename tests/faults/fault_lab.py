"""The fault matrix's harness: a small project root on the lab, `infra` in a subprocess,
faults injected while it runs, and the checks every case makes.

A case's root (``make_root``) holds the matrix catalog and play of ``data/matrix``, the
repository's templates and tasks (linked), a copy of the docs skeleton, and an
``infra.toml`` pointing at the running lab's inventory. The run record lives in
``<root>/record/runs.db`` (outside the state dir ``.infra``, which the disk-full case
replaces by a small tmpfs). Each `infra` process gets its own ``TMPDIR`` and a marker
variable, so the processes it leaves behind (ansible-playbook, ssh) are found by their
environment and the temp files it leaves are found in one folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from secret_scan import FAULT_SECRETS, Hit, Secret, files_under, scan_paths

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data" / "matrix"
INFRA = Path(sys.executable).with_name("infra")
MARK = "INFRA_FAULT_CASE"
LEASE_TTL = 5

# The chain of the matrix service and its independent branch (data/matrix/catalog).
NEEDS = {
    "gate": (),
    "net": ("gate",),
    "folder": ("net",),
    "portgroup": ("folder",),
    "play": ("portgroup",),
    "side": ("gate",),
    "side_done": ("side",),
}
INDEPENDENT = ("side", "side_done")
COLUMNS = (
    "error kind",
    "dependents skipped",
    "independent done",
    "no orphans",
    "no secret on disk",
    "record = docs",
    "resume ok",
)
# case -> column -> cell; printed by conftest.pytest_terminal_summary
MATRIX: dict[str, dict[str, str]] = {}


def dependents(step: str) -> set[str]:
    out: set[str] = set()
    grew = True
    while grew:
        grew = False
        for sid, needs in NEEDS.items():
            if sid not in out and (step in needs or out & set(needs)):
                out.add(sid)
                grew = True
    return out


def make_root(base: Path, inventory: Path) -> Path:
    root = base / "root"
    root.mkdir(parents=True)
    shutil.copytree(DATA / "catalog", root / "catalog")
    shutil.copytree(DATA / "playbooks", root / "playbooks")
    for name in ("templates", "tasks"):
        (root / name).symlink_to(ROOT / name, target_is_directory=True)
    (root / "mkdocs.yml").write_text((ROOT / "mkdocs.yml").read_text())
    shutil.copytree(ROOT / "docs", root / "docs", ignore=shutil.ignore_patterns("projects"))
    (root / "record").mkdir()
    (root / "infra.toml").write_text(
        f'inventory = "{inventory}"\n'
        f'database_url = "sqlite:///{root}/record/runs.db"\n'
        # a killed run's project lock is given up LEASE_TTL seconds after its process died
        f"lease_ttl = {LEASE_TTL}\n"
    )
    return root


@dataclass
class Case:
    """One fault case: its root, its `infra` processes, and the outcome cells."""

    name: str
    base: Path
    inventory: Path
    gate: float = 0.0
    cells: dict[str, str] = field(default_factory=dict)
    mark: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.root = make_root(self.base, self.inventory)
        self.tmp = self.base / "tmp"
        self.tmp.mkdir()
        self.project = "fm" + self.name.replace("_", "")[:20]
        self.request = self.root / "request.yml"
        self.request.write_text(
            yaml.safe_dump(
                {
                    "service": "fault-matrix",
                    "project": self.project,
                    "requester": "fault-suite",
                    "params": {"gate": self.gate},
                }
            )
        )

    # --- running `infra` ------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFRA_")}
        env.update({f"INFRA_SECRET_{k.upper()}": v for k, v in FAULT_SECRETS.items()})
        env.update(
            {
                MARK: self.mark,
                "TMPDIR": str(self.tmp),
                "COLUMNS": "400",
                "ANSIBLE_HOME": str(self.base / "ansible-home"),
                "PATH": f"{INFRA.parent}:{env.get('PATH', '')}",
            }
        )
        return env

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(INFRA), "--root", str(self.root), *args, "--output", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.root,
        )

    def apply(self) -> subprocess.Popen[str]:
        return self.start("apply", str(self.request))

    def infra(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(INFRA), "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.root,
            timeout=timeout,
            check=False,
        )

    def show(self, run_id: str) -> dict[str, Any]:
        proc = self.infra("runs", "show", run_id, "--output", "json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        data: dict[str, Any] = json.loads(proc.stdout)
        return data

    # --- watching the record ----------------------------------------------------------------

    @property
    def database(self) -> Path:
        return self.root / "record" / "runs.db"

    def step_status(self, step: str) -> str | None:
        if not self.database.exists():
            return None
        try:
            row = self._query(
                "SELECT status FROM {steps} WHERE step_id = ? ORDER BY rowid DESC LIMIT 1", step
            )
        except sqlite3.Error:
            return None
        return str(row[0]) if row else None

    def latest_run(self) -> str | None:
        row = self._query("SELECT id FROM {runs} ORDER BY started_at DESC LIMIT 1")
        return str(row[0]) if row else None

    def _query(self, sql: str, *args: str) -> tuple[Any, ...] | None:
        """One row of the record, read-only (table names with or without the infra_ prefix)."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            names = {t: f"infra_{t}" if f"infra_{t}" in tables else t for t in ("runs", "steps")}
            row: tuple[Any, ...] | None = db.execute(sql.format(**names), args).fetchone()
        return row

    def wait_running(self, step: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            if self.step_status(step) == "running":
                return
            if proc.poll() is not None:
                raise AssertionError(
                    f"infra ended (exit {proc.returncode}) before step {step} ran: "
                    + (proc.stderr.read() if proc.stderr else "")[-2000:]
                )
            time.sleep(0.05)
        raise AssertionError(f"step {step} did not start within {timeout:.0f}s")

    # --- processes --------------------------------------------------------------------------

    def processes(self) -> dict[int, str]:
        """PID -> command line of every live process of this case: carrying its marker in
        the environment, or naming its folder on the command line (ansible-playbook's private
        data dir, ssh's control path under ANSIBLE_HOME) when the environment was not passed on.
        """
        needle = f"{MARK}={self.mark}".encode()
        folder = str(self.base).encode()
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
                ours = needle in (entry / "environ").read_bytes().split(b"\0") or folder in raw
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if ours and state != "Z":
                found[int(entry.name)] = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        return found

    def orphans_after(self, grace: float = 5.0) -> dict[int, str]:
        """What still runs of this case ``grace`` seconds after `infra` ended."""
        until = time.monotonic() + grace
        left = self.processes()
        while left and time.monotonic() < until:
            time.sleep(0.2)
            left = self.processes()
        return left

    def end_processes(self, pids: Iterable[int]) -> None:
        """Stop what this case's `infra` left behind (by PID; nothing else)."""
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # --- leftovers -------------------------------------------------------------------------

    def secrets_on_disk(self, lab_secrets: dict[str, str]) -> list[Hit]:
        secrets = [Secret(k, v, None) for k, v in {**FAULT_SECRETS, **lab_secrets}.items()]
        paths = [*files_under(self.root), *files_under(self.tmp)]
        return scan_paths(paths, secrets)

    def page(self, name: str) -> str:
        path = self.root / "docs" / "projects" / self.project / name
        return path.read_text() if path.is_file() else ""


def lab_secrets(inventory: Path) -> dict[str, str]:
    path = inventory / "generated" / "secrets.yml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    return {str(k): str(v) for k, v in (data or {}).items()}


def cell(ok: bool, detail: str = "") -> str:
    return "ok" if ok else f"FAIL{': ' + detail if detail else ''}"


def retry(fn: Callable[[], Any], attempts: int = 3, pause: float = 1.0) -> Any:
    for i in range(attempts):
        try:
            return fn()
        except Exception:
            if i == attempts - 1:
                raise
            time.sleep(pause)
    return None
