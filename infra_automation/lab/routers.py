"""The lab's FRR routers: one network namespace per router, managed over SSH by vtysh.

Per router ``<name>`` (namespace ``ctx.prefixed(name)``)::

    <state>/routers/<name>/run/   vty sockets, zserv.api, daemon pid files (frr:frr, 2775)
    <state>/routers/<name>/etc/   vtysh.conf + frr.conf (``write memory`` writes here)
    <state>/routers/<name>/log/   daemon logs
    <state>/routers/<name>/sshd_config, sshd.pid, sshd.port, sshd.log

The daemons (zebra, staticd, bgpd) run inside the namespace under their own UTS
namespace (hostname = router name); an ``sshd`` per router listens on 127.0.0.1 and
forces every session into ``vtysh`` for that router, so netmiko's ``cisco_ios`` driver
manages the router like any IOS-like device.

``core`` and ``edge`` are linked by a veth pair and peer over eBGP (AS65001 ↔ AS65002);
extra routers ``r003``.. (``LabOptions.routers > 2``) only carry a hostname and a BGP AS
(they exist for fan-out benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from infra_automation.exceptions import LabError
from infra_automation.lab.base import (
    Fragment,
    Health,
    LabContext,
    Missing,
    ensure_ssh_key,
    free_port,
    pid_alive,
    read_pid,
    run,
    spawn,
    ssh_banner,
    stop_pidfile,
    wait_for,
    which,
)

FRR_LIB = Path("/usr/lib/frr")
DAEMONS = ("zebra", "staticd", "bgpd")
VTYSH = "/usr/bin/vtysh"
SSHD = "/usr/sbin/sshd"
WORKERS = 8  # routers brought up in parallel (2 cores: most of the time is spent waiting)
BGP_PEER_TIMEOUT = 30.0

# Mirrors inventories/lab/inventory.yml; read from there when the file exists.
DEFAULT_LINKED: dict[str, dict[str, Any]] = {
    "core": {
        "role": "core",
        "asn": 65001,
        "router_id": "10.255.0.1",
        "uplink": "core-edge",
        "uplink_address": "10.255.0.1/30",
        "peer_address": "10.255.0.2",
        "peer_asn": 65002,
    },
    "edge": {
        "role": "edge",
        "asn": 65002,
        "router_id": "10.255.0.2",
        "uplink": "edge-core",
        "uplink_address": "10.255.0.2/30",
        "peer_address": "10.255.0.1",
        "peer_asn": 65001,
    },
}


@dataclass(frozen=True)
class RouterSpec:
    """What one lab router is: its name and the data its initial config is built from."""

    name: str
    data: Mapping[str, Any]

    @property
    def extra(self) -> bool:
        return self.name not in DEFAULT_LINKED


@dataclass(frozen=True)
class RouterPaths:
    base: Path

    @property
    def run(self) -> Path:
        return self.base / "run"

    @property
    def etc(self) -> Path:
        return self.base / "etc"

    @property
    def log(self) -> Path:
        return self.base / "log"

    @property
    def sshd_config(self) -> Path:
        return self.base / "sshd_config"

    @property
    def sshd_pid(self) -> Path:
        return self.base / "sshd.pid"

    @property
    def sshd_port(self) -> Path:
        return self.base / "sshd.port"

    @property
    def sshd_log(self) -> Path:
        return self.base / "sshd.log"

    def daemon_pid(self, daemon: str) -> Path:
        return self.run / f"{daemon}.pid"

    def vtysh(self) -> list[str]:
        return [VTYSH, "--vty_socket", str(self.run), "--config_dir", str(self.etc)]


class Routers:
    """Lab component ``routers`` (see module docstring)."""

    name = "routers"

    # --- LabComponent -------------------------------------------------------------------

    def requirements(self) -> list[Missing]:
        missing: list[Missing] = []
        for daemon in DAEMONS:
            missing += which(str(FRR_LIB / daemon), "frr")
        missing += which(VTYSH, "frr")
        missing += which(SSHD, "openssh-server")
        missing += which("ssh-keygen", "openssh-client")
        missing += which("ip", "iproute2")
        missing += which("unshare", "util-linux")
        return missing

    def up(self, ctx: LabContext) -> Fragment:
        specs = self.specs(ctx)
        for name in set(self._known(ctx)) - {s.name for s in specs}:
            if error := self._remove(ctx, name):  # fewer routers asked for than last time
                raise LabError(f"router {name}: {error}")
        ensure_ssh_key(ctx.ssh_key)
        host_key = _ensure_host_key(ctx.dir("routers"))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        for spec in specs:
            _ensure_netns(ctx.prefixed(spec.name))
        self._ensure_links(ctx, specs)
        hosts: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            ports = list(pool.map(lambda s: self._ensure_router(ctx, s, host_key), specs))
        for spec, port in zip(specs, ports, strict=True):
            hosts[spec.name] = self._host_entry(ctx, spec, port)
        return Fragment(inventory={"hosts": hosts})

    def down(self, ctx: LabContext) -> None:
        names = sorted({s.name for s in self.specs(ctx)} | set(self._known(ctx)))
        errors: list[str] = []
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for name, err in zip(
                names, pool.map(lambda n: self._remove(ctx, n), names), strict=True
            ):
                if err:
                    errors.append(f"{name}: {err}")
        if errors:
            raise LabError("routers down: " + "; ".join(errors))

    def status(self, ctx: LabContext) -> list[Health]:
        names = sorted(set(self._known(ctx)) | {s.name for s in self.specs(ctx)})
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            return list(pool.map(lambda n: self._health(ctx, n), names))

    # --- single routers (exposed by the orchestrator and the test fixture) ---------------

    def stop_router(self, ctx: LabContext, name: str) -> None:
        """Stop a router's daemons and its sshd; keep namespace, links and saved config."""
        paths = self.paths(ctx, name)
        stop_pidfile(paths.sshd_pid)
        for daemon in reversed(DAEMONS):
            stop_pidfile(paths.daemon_pid(daemon))

    def start_router(self, ctx: LabContext, name: str) -> None:
        """Start a stopped router again (its saved config, same SSH port)."""
        spec = self._spec(ctx, name)
        _ensure_netns(ctx.prefixed(name))
        self._ensure_links(ctx, [s for s in self.specs(ctx) if not s.extra])
        self._ensure_router(ctx, spec, _ensure_host_key(ctx.dir("routers")))

    def restart_router(self, ctx: LabContext, name: str) -> None:
        self.stop_router(ctx, name)
        self.start_router(ctx, name)

    # --- helpers --------------------------------------------------------------------------

    def specs(self, ctx: LabContext) -> list[RouterSpec]:
        linked = _linked_data(ctx.root)
        specs = [RouterSpec(n, d) for n, d in linked.items()]
        for i in range(3, max(ctx.options.routers, 2) + 1):
            specs.append(RouterSpec(f"r{i:03d}", _extra_data(i)))
        return specs

    def paths(self, ctx: LabContext, name: str) -> RouterPaths:
        return RouterPaths(ctx.dir("routers") / name)

    def port(self, ctx: LabContext, name: str) -> int | None:
        try:
            return int(self.paths(ctx, name).sshd_port.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def vtysh(self, ctx: LabContext, name: str, *commands: str) -> str:
        """Run show commands on a router directly (not over SSH): for status and tests."""
        argv = self.paths(ctx, name).vtysh()
        for command in commands:
            argv += ["-c", command]
        netns = ctx.prefixed(name)
        return run(["ip", "netns", "exec", netns, *argv], timeout=30).stdout

    def _spec(self, ctx: LabContext, name: str) -> RouterSpec:
        for spec in self.specs(ctx):
            if spec.name == name:
                return spec
        if name.startswith("r") and name[1:].isdigit():
            return RouterSpec(name, _extra_data(int(name[1:])))
        raise LabError(f"no lab router named {name!r}")

    def _known(self, ctx: LabContext) -> list[str]:
        base = ctx.state_dir / "routers"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir())

    def _ensure_links(self, ctx: LabContext, specs: Iterable[RouterSpec]) -> None:
        by_name = {s.name: s for s in specs}
        core, edge = by_name.get("core"), by_name.get("edge")
        if core is None or edge is None:
            return
        core_ns, edge_ns = ctx.prefixed("core"), ctx.prefixed("edge")
        core_if, edge_if = str(core.data["uplink"]), str(edge.data["uplink"])
        if _link_exists(core_ns, core_if) and _link_exists(edge_ns, edge_if):
            return
        for ns, ifname in ((core_ns, core_if), (edge_ns, edge_if)):
            if _link_exists(ns, ifname):
                run(["ip", "-n", ns, "link", "del", ifname])
        veth = ["type", "veth", "peer", "name", edge_if, "netns", edge_ns]
        run(["ip", "link", "add", core_if, "netns", core_ns, *veth])
        for ns, ifname in ((core_ns, core_if), (edge_ns, edge_if)):
            run(["ip", "-n", ns, "link", "set", ifname, "up"])

    def _ensure_router(self, ctx: LabContext, spec: RouterSpec, host_key: Path) -> int:
        paths = self.paths(ctx, spec.name)
        if not self._daemons_alive(paths):
            self._start_daemons(ctx, spec, paths)
        return self._ensure_sshd(ctx, paths, host_key)

    def _daemons_alive(self, paths: RouterPaths) -> bool:
        return all(read_pid(paths.daemon_pid(d)) is not None for d in DAEMONS)

    def _start_daemons(self, ctx: LabContext, spec: RouterSpec, paths: RouterPaths) -> None:
        for daemon in DAEMONS:  # a partial router: stop what is left, start all afresh
            stop_pidfile(paths.daemon_pid(daemon))
        for folder in (paths.run, paths.etc, paths.log):
            folder.mkdir(parents=True, exist_ok=True)
        if not (paths.etc / "frr.conf").exists():
            (paths.etc / "frr.conf").write_text(initial_config(spec))
        (paths.etc / "vtysh.conf").write_text(
            f"service integrated-vtysh-config\nhostname {spec.name}\n"
        )
        for folder in (paths.base, paths.run, paths.etc, paths.log):
            shutil.chown(folder, "frr", "frr")
            folder.chmod(0o2775)
        for file in paths.etc.iterdir():
            shutil.chown(file, "frr", "frr")
            file.chmod(0o664)
        commands = [f"hostname {shlex.quote(spec.name)}"]
        commands += [_daemon_command(d, paths) for d in DAEMONS]
        script = "; ".join(commands)
        netns = ctx.prefixed(spec.name)
        run(["ip", "netns", "exec", netns, "unshare", "--uts", "sh", "-c", script], timeout=60)
        wait_for(
            lambda: (
                all((paths.run / f"{d}.vty").exists() for d in DAEMONS)
                and self._daemons_alive(paths)
            ),
            timeout=30,
            what=f"FRR daemons of router {spec.name}",
        )
        proc = run(["ip", "netns", "exec", netns, *paths.vtysh(), "-b"], check=False, timeout=60)
        if proc.returncode != 0:
            raise LabError(
                f"router {spec.name}: loading {paths.etc / 'frr.conf'} failed: "
                f"{(proc.stdout + proc.stderr).strip()}"
            )

    def _ensure_sshd(self, ctx: LabContext, paths: RouterPaths, host_key: Path) -> int:
        port = self.port(ctx, paths.base.name)
        if read_pid(paths.sshd_pid) is not None and port is not None and _ssh_answers(port):
            return port
        stop_pidfile(paths.sshd_pid)
        last = ""
        # Keep the recorded port (the inventory names it); a free port can be taken between
        # choosing and binding, so retry with fresh ones.
        candidates = [port] if port is not None else []
        for attempt in range(6):
            port = candidates[attempt] if attempt < len(candidates) else free_port()
            paths.sshd_config.write_text(_sshd_config(ctx, paths, host_key, port))
            pid = spawn(
                [SSHD, "-D", "-e", "-f", str(paths.sshd_config)], paths.sshd_pid, paths.sshd_log
            )
            _wait_sshd(port, pid)
            if pid_alive(pid) and _ssh_answers(port):
                paths.sshd_port.write_text(str(port))
                return port
            last = paths.sshd_log.read_text()[-500:] if paths.sshd_log.exists() else ""
            stop_pidfile(paths.sshd_pid)
        raise LabError(f"router {paths.base.name}: sshd did not start: {last.strip()}")

    def _host_entry(self, ctx: LabContext, spec: RouterSpec, port: int) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "hostname": "127.0.0.1",
            "port": port,
            "username": "root",
            "ssh_key_file": str(ctx.ssh_key),
        }
        if spec.extra:
            entry["groups"] = ["routers"]
            entry["data"] = dict(spec.data)
        return entry

    def _remove(self, ctx: LabContext, name: str) -> str:
        try:
            self.stop_router(ctx, name)
            netns = ctx.prefixed(name)
            if netns in _netns_list():
                run(["ip", "netns", "del", netns])
            shutil.rmtree(ctx.state_dir / "routers" / name, ignore_errors=True)
        except LabError as exc:
            return str(exc)
        return ""

    def _health(self, ctx: LabContext, name: str) -> Health:
        target = f"router {name}"
        paths = self.paths(ctx, name)
        dead = [d for d in DAEMONS if read_pid(paths.daemon_pid(d)) is None]
        port = self.port(ctx, name)
        problems: list[str] = []
        if dead:
            problems.append("not running: " + ", ".join(dead))
        if read_pid(paths.sshd_pid) is None or port is None or not _ssh_answers(port):
            problems.append(f"sshd on port {port} not answering")
        bgp = "bgp: unknown"
        if "bgpd" not in dead:
            bgp = self._bgp_state(ctx, name)
        detail = f"ssh 127.0.0.1:{port}; {bgp}"
        if problems:
            return Health(target, False, "; ".join(problems) + f"; {detail}")
        return Health(target, True, detail)

    def bgp_peers(self, ctx: LabContext, name: str) -> dict[str, str]:
        """BGP peer address -> state (``Established``, ``Active``...), read from the router."""
        out = self.vtysh(ctx, name, "show bgp summary json")
        try:
            data = json.loads(out or "{}")
        except json.JSONDecodeError as exc:
            raise LabError(f"router {name}: unreadable BGP summary: {out[:200]!r}") from exc
        peers = data.get("ipv4Unicast", {}).get("peers", {})
        return {str(p): str(v.get("state", "?")) for p, v in peers.items()}

    def _bgp_state(self, ctx: LabContext, name: str) -> str:
        try:
            peers = self.bgp_peers(ctx, name)
        except LabError as exc:
            return f"bgp: unreadable ({exc})"
        if not peers:
            return "bgp: no peers"
        return "bgp: " + ", ".join(f"{p} {s}" for p, s in sorted(peers.items()))

    def _bgp_established(self, ctx: LabContext, name: str) -> bool:
        try:
            peers = self.bgp_peers(ctx, name)
        except LabError:
            return False
        return bool(peers) and all(s == "Established" for s in peers.values())

    def wait_bgp(self, ctx: LabContext, name: str, timeout: float = BGP_PEER_TIMEOUT) -> None:
        """Wait until every BGP peer of ``name`` is Established."""
        wait_for(
            lambda: self._bgp_established(ctx, name),
            timeout=timeout,
            what=f"BGP sessions of router {name}",
            interval=0.5,
        )


# --- configuration ----------------------------------------------------------------------


def initial_config(spec: RouterSpec) -> str:
    """The router's day-0 config: hostname, uplink address, BGP."""
    data = spec.data
    lines = ["frr defaults traditional", f"hostname {spec.name}"]
    lines += ["service integrated-vtysh-config", "!"]
    if data.get("uplink"):
        lines += [f"interface {data['uplink']}", f" ip address {data['uplink_address']}", "!"]
    lines += [f"router bgp {int(data['asn'])}", f" bgp router-id {data['router_id']}"]
    lines += [" no bgp ebgp-requires-policy"]
    if data.get("peer_address"):
        peer = data["peer_address"]
        lines += [
            f" neighbor {peer} remote-as {int(data['peer_asn'])}",
            f" neighbor {peer} timers 3 9",
            f" neighbor {peer} timers connect 2",
        ]
    lines += ["!", "line vty", "!"]
    return "\n".join(lines) + "\n"


def _linked_data(root: Path) -> dict[str, dict[str, Any]]:
    """core/edge data from ``inventories/lab/inventory.yml`` (defaults if absent)."""
    path = root / "inventories" / "lab" / "inventory.yml"
    linked = {k: dict(v) for k, v in DEFAULT_LINKED.items()}
    if not path.is_file():
        return linked
    try:
        hosts = (yaml.safe_load(path.read_text()) or {}).get("hosts", {}) or {}
    except yaml.YAMLError as exc:
        raise LabError(f"{path}: not valid YAML: {exc}") from exc
    for name in linked:
        data = (hosts.get(name) or {}).get("data") or {}
        linked[name].update({k: data[k] for k in linked[name] if k in data})
    return linked


def _extra_data(index: int) -> dict[str, Any]:
    return {
        "role": "leaf",
        "asn": 65000 + index,
        "router_id": f"10.254.{index // 256}.{index % 256}",
    }


def _daemon_command(daemon: str, paths: RouterPaths) -> str:
    """One daemon's command line for ``sh -c``; every path quoted (roots may hold spaces)."""
    argv = [
        str(FRR_LIB / daemon), "-d", "-P", "0", "-i", str(paths.daemon_pid(daemon)),
        "--vty_socket", str(paths.run), "-z", str(paths.run / "zserv.api"), "-f", "/dev/null",
        "--log", f"file:{paths.log / (daemon + '.log')}",
    ]  # fmt: skip
    return shlex.join(argv)


def _sshd_config(ctx: LabContext, paths: RouterPaths, host_key: Path, port: int) -> str:
    force = shlex.join(paths.vtysh())  # sshd runs ForceCommand through a shell
    return "\n".join(
        [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {paths.base / 'sshd.own.pid'}",
            f"AuthorizedKeysFile {ctx.ssh_key}.pub",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "PrintLastLog no",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "LogLevel ERROR",
            f"ForceCommand {force}",
            "",
        ]
    )


# --- system helpers -----------------------------------------------------------------------


def _ensure_host_key(folder: Path) -> Path:
    key = folder / "ssh_host_ed25519_key"
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    return key


def _netns_list() -> set[str]:
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _ensure_netns(netns: str) -> None:
    if netns not in _netns_list():
        run(["ip", "netns", "add", netns])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
        run(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", key])


def _link_exists(netns: str, ifname: str) -> bool:
    return run(["ip", "-n", netns, "link", "show", ifname], check=False).returncode == 0


def _wait_sshd(port: int, pid: int) -> None:
    with contextlib.suppress(LabError):
        wait_for(lambda: _ssh_answers(port) or not pid_alive(pid), timeout=10, what="sshd")


_ssh_answers = ssh_banner
