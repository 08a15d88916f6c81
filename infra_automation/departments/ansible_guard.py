"""The guard: an Ansible play dies with the process that runs its step.

ansible-runner runs the command in a pty session (pexpect) with SIGHUP ignored, and each of
Ansible's forked workers calls setsid(): when the step's process dies nothing reaches them,
and a killpg() of the session misses the workers. So the command ansible-runner starts is
this guard (:func:`infra_automation.departments.ansible.guard_command`), which runs
ansible-playbook as its child and

- gets SIGTERM when the step's process dies (PR_SET_PDEATHSIG; it fires when the forking
  thread exits: that is the step thread, blocked in Runner.run until the guard exits), and
  also polls getppid() so that it does not depend on the signal;
- is the subreaper of the play (PR_SET_CHILD_SUBREAPER): every orphaned worker, ssh or ssh
  ControlPersist master becomes its child, so it can stop all of them;
- stops the play with SIGTERM (Ansible then stops its workers and their process groups),
  then after GUARD_GRACE SIGKILLs whatever is left, at the step's timeout too.

It is started by file path (``python -I <this file>``) and imports the standard library
only: every play pays its start-up, which importing the package (pydantic, SQLAlchemy) made
0.3-0.4 s of CPU.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

GUARD_GRACE = 5.0  # seconds between SIGTERM and SIGKILL when the guard stops a play
GUARD_TIMEOUT_RC = 124  # the guard stopped the play at its timeout (as timeout(1) says it)
GUARD_ORPHANED_RC = 125  # the guard stopped the play: the process that ran the step is gone
GUARD_POLL = 0.1
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def guard_main(argv: Sequence[str] | None = None) -> NoReturn:
    args = list(sys.argv[1:] if argv is None else argv)
    parent, timeout, rest = int(args[0]), float(args[1]), args[2:]
    split = rest.index("--")
    options, command = rest[:split], rest[split + 1 :]
    keep = next((o.removeprefix("--keep=") for o in options if o.startswith("--keep=")), None)
    stop: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda sig, _frame: stop.append(sig))
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the line above
        os._exit(GUARD_ORPHANED_RC)
    child = _spawn(command)
    deadline = time.monotonic() + timeout
    while True:
        code = _reap(child)
        if code is not None:
            _stop_children(grace=1.0, keep=keep)  # e.g. ssh ControlPersist masters
            os._exit(code)
        if stop or os.getppid() != parent:
            _stop_play(child)
            os._exit(GUARD_ORPHANED_RC)
        if time.monotonic() > deadline:
            _stop_play(child)
            os._exit(GUARD_TIMEOUT_RC)
        time.sleep(GUARD_POLL)


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option})")


def _spawn(command: Sequence[str]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: ansible-playbook, with the signals ansible-runner gave us
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.execv(command[0], list(command))  # noqa: S606 - argv, no shell
        finally:
            os._exit(127)
    return pid


def _reap(child: int) -> int | None:
    """Reap every exited child (orphans too); the exit code of ``child`` once it exited."""
    code: int | None = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if pid == 0:
            return code
        if pid == child:
            exit_code = os.waitstatus_to_exitcode(status)
            code = exit_code if exit_code >= 0 else 128 - exit_code


def _stop_play(child: int) -> None:
    """SIGTERM: Ansible forwards it to its workers, which kill their process groups; then
    SIGKILL for ansible-playbook and every process left under this subreaper."""
    _signal(child, signal.SIGTERM)
    deadline = time.monotonic() + GUARD_GRACE
    while _reap(child) is None and time.monotonic() < deadline:
        time.sleep(GUARD_POLL)
    _signal(child, signal.SIGKILL)
    _stop_children(grace=0)


def _stop_children(grace: float, keep: str | None = None) -> None:
    """Stop every child (orphans of the play re-parented here): SIGTERM, SIGKILL after grace;
    not the SSH masters whose command line names the folder ``keep``."""
    deadline = time.monotonic() + grace
    for _ in range(200):  # bounded: orphans keep arriving while a process tree unwinds
        children = [p for p in _children() if keep is None or not _is_master(p, keep)]
        if not children:
            return
        sig = signal.SIGTERM if time.monotonic() < deadline else signal.SIGKILL
        for pid in children:
            _signal(pid, sig)
        time.sleep(GUARD_POLL / 2)
        _reap(-1)


def _signal(pid: int, sig: int) -> None:
    """``sig`` to ``pid`` and, if it leads a group of its own (a worker), to that group."""
    try:
        if os.getpgid(pid) == pid and pid != os.getpgid(0):
            os.killpg(pid, sig)
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_master(pid: int, control_dir: str) -> bool:
    """An SSH ControlPersist master of ``control_dir`` (ssh renames it "ssh: <socket> [mux]")."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return cmdline.startswith(("ssh", "/usr/bin/ssh")) and control_dir + "/" in cmdline


def _children() -> list[int]:
    me = os.getpid()
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == me:
            found.append(int(entry.name))
    return found


if __name__ == "__main__":
    guard_main()
