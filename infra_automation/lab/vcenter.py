"""The lab's vCenter: VMware's own simulator (govmomi ``simulator``) built from our ``main.go``.

``up`` builds the binary once into ``<root>/.lab/cache/vcsim`` (rebuilt when ``vcsim/main.go``
changes), generates a random password for this instance, and starts vcsim on a free
127.0.0.1 port. vcsim accepts only ``user`` + that password; the password reaches it through
a 0600 file named in the environment, never through argv (``ps`` shows argv).

State under ``<state_dir>/vcenter/``: ``vcsim.pid``, ``vcsim.log``, ``url`` (written by vcsim
once it serves), ``password`` (0600; lets a second ``up`` return the same fragment).
"""

from __future__ import annotations

import fcntl
import hashlib
import secrets
import socket
from pathlib import Path
from urllib.parse import urlsplit

from infra_automation.exceptions import LabError
from infra_automation.files import write_atomic
from infra_automation.lab.base import (
    Fragment,
    Health,
    LabContext,
    Missing,
    pid_alive,
    read_pid,
    run,
    spawn,
    stop_pidfile,
    wait_for,
    which,
)

MAIN_GO = Path(__file__).parent / "vcsim" / "main.go"
GOPATH = Path("/usr/share/gocode")
GOVMOMI_SIMULATOR = GOPATH / "src/github.com/vmware/govmomi/simulator"
USER = "user"
TEMPLATE = "debian12-template"
START_TIMEOUT = 60.0


class VCenterSim:
    """Lab component ``vcenter``: one vcsim process per lab instance."""

    name = "vcenter"

    def __init__(self, user: str = USER, template: str = TEMPLATE) -> None:
        self.user = user
        self.template = template

    # --- LabComponent ------------------------------------------------------------------

    def requirements(self) -> list[Missing]:
        missing = which("go", "golang-go")
        if not GOVMOMI_SIMULATOR.is_dir():
            missing.append(
                Missing("govmomi sources", "apt-get install -y golang-github-vmware-govmomi-dev")
            )
        return missing

    def up(self, ctx: LabContext) -> Fragment:
        state = ctx.dir(self.name)
        pidfile, urlfile, pwfile = _paths(state)
        if read_pid(pidfile) is not None and urlfile.is_file() and pwfile.is_file():
            return self._fragment(urlfile, pwfile)
        stop_pidfile(pidfile)  # a stale or half-started process of ours
        urlfile.unlink(missing_ok=True)
        binary = self.build(ctx)
        write_atomic(pwfile, secrets.token_urlsafe(24) + "\n", mode=0o600)
        env = {
            "VCSIM_PASSWORD_FILE": str(pwfile),
            "VCSIM_URL_FILE": str(urlfile),
            "VCSIM_USER": self.user,
            "VCSIM_TEMPLATE": self.template,
            "VCSIM_LISTEN": "127.0.0.1:0",
        }
        pid = spawn([str(binary)], pidfile, state / "vcsim.log", env=env)
        try:
            wait_for(
                lambda: urlfile.is_file() or not pid_alive(pid), START_TIMEOUT, "vcsim to serve"
            )
        except LabError:
            stop_pidfile(pidfile)
            raise
        if not urlfile.is_file():
            pidfile.unlink(missing_ok=True)
            raise LabError(f"vcsim exited at start: {_tail(state / 'vcsim.log')}")
        return self._fragment(urlfile, pwfile)

    def down(self, ctx: LabContext) -> None:
        state = ctx.state_dir / self.name
        pidfile, urlfile, pwfile = _paths(state)
        stop_pidfile(pidfile)
        urlfile.unlink(missing_ok=True)
        pwfile.unlink(missing_ok=True)

    def status(self, ctx: LabContext) -> list[Health]:
        state = ctx.state_dir / self.name
        pidfile, urlfile, pwfile = _paths(state)
        pid = read_pid(pidfile)
        if pid is None:
            return [Health("vcenter", False, "not running")]
        if not urlfile.is_file() or not pwfile.is_file():
            return [Health("vcenter", False, f"pid {pid} runs but has not started serving")]
        port = _port(urlfile)
        if not port_answers(port):
            return [Health("vcenter", False, f"pid {pid}: port {port} does not answer")]
        try:
            login_check("127.0.0.1", port, self.user, pwfile.read_text().strip())
        except Exception as exc:  # any failure to log in is an unhealthy vCenter
            return [Health("vcenter", False, f"port {port}: login failed: {exc}")]
        return [Health("vcenter", True, f"http://127.0.0.1:{port}/sdk (pid {pid})")]

    # --- building ------------------------------------------------------------------------

    def build(self, ctx: LabContext) -> Path:
        """Build ``vcsim`` into the shared cache unless the binary matches ``main.go``."""
        cache = ctx.cache_dir
        cache.mkdir(parents=True, exist_ok=True)
        binary = cache / "vcsim"
        stamp = cache / "vcsim.sha256"
        digest = hashlib.sha256(MAIN_GO.read_bytes()).hexdigest()
        with open(cache / "vcsim.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two instances may build at once
            if binary.is_file() and stamp.is_file() and stamp.read_text().strip() == digest:
                return binary
            missing = self.requirements()
            if missing:
                needs = "; ".join(f"{m.what} ({m.install})" for m in missing)
                raise LabError(f"cannot build vcsim, missing: {needs}")
            tmp = cache / "vcsim.building"
            env = {
                "GOPATH": str(GOPATH),
                "GO111MODULE": "off",
                "GOCACHE": str(cache / "go-build"),
                "GOFLAGS": "",
            }
            run(["go", "build", "-o", str(tmp), str(MAIN_GO)], env=env, timeout=600)
            tmp.replace(binary)
            stamp.write_text(digest + "\n")
        return binary

    def _fragment(self, urlfile: Path, pwfile: Path) -> Fragment:
        vcenter = {
            "host": "127.0.0.1",
            "port": _port(urlfile),
            "protocol": "http",
            "username": self.user,
        }
        return Fragment(
            inventory={"vcenter": vcenter},
            secrets={"vcenter_password": pwfile.read_text().strip()},
        )


# --- helpers --------------------------------------------------------------------------------


def _paths(state: Path) -> tuple[Path, Path, Path]:
    return state / "vcsim.pid", state / "url", state / "password"


def _port(urlfile: Path) -> int:
    port = urlsplit(urlfile.read_text().strip()).port
    if port is None:
        raise LabError(f"{urlfile}: no port in the vcsim URL")
    return port


def _tail(log: Path, lines: int = 5) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def login_check(host: str, port: int, user: str, password: str) -> None:
    """Log in with pyVmomi and log out again; raises what pyVmomi raises."""
    from pyVim.connect import Disconnect, SmartConnect

    # pyVim.connect is not annotated
    si = SmartConnect(  # type: ignore[no-untyped-call]
        host=host, port=port, user=user, pwd=password, protocol="http"
    )
    Disconnect(si)  # type: ignore[no-untyped-call]
