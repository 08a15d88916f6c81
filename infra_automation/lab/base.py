"""The lab's building blocks: one Protocol for lab components, shared process helpers.

A lab *instance* (default name ``lab``) keeps all its state under ``<root>/.lab/<name>/``:
pid files, logs, keys, component folders. Components (``vcenter``, ``routers``, ``hosts``)
each implement :class:`LabComponent`; the orchestrator in :mod:`infra_automation.lab`
calls ``up`` in order, merges the inventory fragments they return into
``<inventory>/generated/lab.yml`` (secrets into ``generated/secrets.yml``), and calls
``down`` in reverse order.

Rules (see LAB.md): every process is started by the lab and stopped by PID; every
namespace, container, network and mount is named with the instance prefix so that
``down`` removes exactly what ``up`` created, and two instances can run side by side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infra_automation.exceptions import LabError


@dataclass(frozen=True)
class Missing:
    """Something the lab needs that is not installed, and the command that installs it."""

    what: str
    install: str


@dataclass(frozen=True)
class Health:
    target: str  # e.g. "vcenter", "router core", "host debian1"
    healthy: bool
    detail: str = ""


@dataclass(frozen=True)
class Fragment:
    """What a component adds to the generated inventory and to the secrets file."""

    inventory: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LabOptions:
    routers: int = 2  # core + edge always; more become r003, r004, ... (benchmarks)
    hosts: int = 3  # Debian hosts debian1..N
    vcenter: bool = True
    guests: bool = False  # VMs get guest containers on demand (lab.guests) instead of the pool
    max_guests: int | None = None  # with guests: the limit (default: from available memory)


@dataclass(frozen=True)
class LabContext:
    """Where an instance lives and what it is asked to run."""

    name: str
    root: Path  # project root
    state_dir: Path  # <root>/.lab/<name>
    options: LabOptions = field(default_factory=LabOptions)

    @property
    def ssh_key(self) -> Path:
        """Private key that every lab SSH target accepts (public key next to it, .pub)."""
        return self.state_dir / "keys" / "id_ed25519"

    @property
    def cache_dir(self) -> Path:
        """Shared across instances: built binaries and images (<root>/.lab/cache)."""
        return self.root / ".lab" / "cache"

    def dir(self, component: str) -> Path:
        path = self.state_dir / component
        path.mkdir(parents=True, exist_ok=True)
        return path

    def prefixed(self, name: str) -> str:
        """Instance-scoped name for namespaces, containers, networks."""
        return name if self.name == "lab" else f"{self.name}-{name}"


class LabComponent(Protocol):
    name: str

    def requirements(self) -> list[Missing]:
        """What is missing on this machine (empty list when all is there)."""
        ...

    def up(self, ctx: LabContext) -> Fragment:
        """Build (once) and start; idempotent: a second call reuses what runs."""
        ...

    def down(self, ctx: LabContext) -> None:
        """Stop every process by PID and remove everything ``up`` created."""
        ...

    def status(self, ctx: LabContext) -> list[Health]: ...


# --- shared helpers -------------------------------------------------------------------------


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = 300,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command (never through a shell); raise LabError with its stderr on failure."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env={**os.environ, **env} if env else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{' '.join(argv)}: timed out after {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def which(binary: str, package: str) -> list[Missing]:
    if shutil.which(binary) or Path(binary).exists():
        return []
    return [Missing(binary, f"apt-get install -y {package}")]


def spawn(
    argv: Sequence[str], pidfile: Path, logfile: Path, env: Mapping[str, str] | None = None
) -> int:
    """Start a long-running process in its own session; record its PID in ``pidfile``."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
    pidfile.write_text(str(proc.pid))
    return proc.pid


def read_pid(pidfile: Path) -> int | None:
    """The live process recorded in ``pidfile``, if it is still the lab's own.

    A PID can be reused (after a reboot the pid files are still there): the process counts
    as the lab's only if its command line names the lab's folder (``.../.lab``), which every
    lab process has in its arguments (binary, pid file, config or socket paths). Any other
    process is never signalled.
    """
    try:
        pid = int(pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) and _started_by_lab(pid, pidfile) else None


def _started_by_lab(pid: int, pidfile: Path) -> bool:
    lab_dir = next((p for p in pidfile.resolve().parents if p.name == ".lab"), None)
    if lab_dir is None:  # a pid file outside any lab folder: nothing to compare with
        return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return str(lab_dir) in cmdline


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # ESRCH when it exits (is reaped) mid-read
        return False
    return state != "Z"


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL. Only for PIDs the lab recorded itself."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                _reap(pid)
                return
            time.sleep(0.05)
    if pid_alive(pid):
        raise LabError(f"process {pid} did not stop")


def stop_pidfile(pidfile: Path) -> None:
    pid = read_pid(pidfile)
    if pid is not None:
        stop_pid(pid)
    pidfile.unlink(missing_ok=True)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> None:
    """Poll ``predicate()`` until true; LabError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ssh_banner(port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server answers with its banner on 127.0.0.1:port."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def ensure_ssh_key(key: Path, comment: str = "infra-lab") -> Path:
    """An ed25519 key pair at ``key`` (+ ``.pub``), made once; returns the public key's path.

    Made in a temp folder and renamed into place, so a concurrent ``up`` (or a crash) never
    sees a private key without its public half.
    """
    pub = key.with_name(key.name + ".pub")
    if key.is_file() and pub.is_file():
        return pub
    key.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(key.parent, 0o700)
    with tempfile.TemporaryDirectory(dir=key.parent) as tmp:
        new = Path(tmp) / key.name
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(new)])
        os.replace(new.with_name(new.name + ".pub"), pub)
        os.replace(new, key)
    os.chmod(key, 0o600)
    return pub
