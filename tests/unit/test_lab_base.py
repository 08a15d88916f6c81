"""Lab process helpers: a PID is only the lab's while its command line names the lab."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from infra_automation.lab.base import read_pid, spawn, stop_pidfile


def test_a_reused_pid_is_never_taken_for_a_lab_process(tmp_path: Path) -> None:
    pidfile = tmp_path / ".lab" / "lab" / "vcenter" / "vcsim.pid"
    pidfile.parent.mkdir(parents=True)
    pidfile.write_text(str(os.getpid()))  # alive, but not started by this lab
    assert read_pid(pidfile) is None
    stop_pidfile(pidfile)  # must not signal this test's own process
    assert not pidfile.exists()


def test_a_lab_process_is_found_and_stopped(tmp_path: Path) -> None:
    lab = tmp_path / ".lab"
    binary = lab / "cache" / "sleeper"
    binary.parent.mkdir(parents=True)
    shutil.copy(sys.executable, binary)  # a binary living in the lab's folder, like vcsim
    pidfile = lab / "lab" / "sleeper.pid"
    pidfile.parent.mkdir(parents=True)
    pid = spawn([str(binary), "-c", "import time; time.sleep(60)"], pidfile, lab / "s.log")
    try:
        assert read_pid(pidfile) == pid
    finally:
        stop_pidfile(pidfile)
    assert subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode != 0
