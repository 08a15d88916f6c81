"""The lab's Debian hosts: rootful podman containers with their own rootfs and sshd.

One image is built once per *recipe* (suite, packages, init script) with ``debootstrap``
and imported into podman as ``localhost/infra-lab-debian:<recipe hash>``; every instance
reuses it. The packages the playbooks install (nginx, php-fpm, restic, cron,
node exporter, podman...) are baked in so that a playbook run on fresh hosts is fast.

The image holds no key: the lab's public key is bind-mounted read-only at container start
and copied to ``/root/.ssh/authorized_keys`` by the init script. The key's fingerprint is a
label of the container, so a container made with another key (left by a deleted clone of
the checkout, whose key had the same path) is seen stale and made again.

Containers inside the hosts (the containers department, ``playbooks/app.yml``): rootful
podman in the host needs CAP_SYS_ADMIN (its runtime mounts ``proc`` and the container's
root) and ``/dev/fuse`` (its storage is fuse-overlayfs: the host's own root is an overlay,
on which the kernel's overlay cannot stack). Without systemd and with the host's cgroups
read-only, the role sets podman to ``crun`` with ``cgroups = "disabled"``, the ``file``
events logger and the host's network. No registry: the rootfs this image was imported from
is mounted read-only at :data:`BASE_MOUNT`, and the role imports it there as the base image
of the application's (the same Debian, built once by the lab). Each instance has its
own podman network (``<prefix>infra-lab``) and containers ``<prefix>debian1..N``, with
SSH and HTTP published on ports of 127.0.0.1 that podman chooses (read back afterwards).

Every podman call uses our ``containers.conf`` (``CONTAINERS_CONF``): runtime ``runc``
(``crun`` fails on this hybrid-cgroup host), ``cgroupfs``, and ulimits the machine can
grant (it lacks CAP_SYS_RESOURCE for podman's defaults). See LAB.md.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra_automation.exceptions import LabError
from infra_automation.lab.base import (
    Fragment,
    Health,
    LabContext,
    Missing,
    ensure_ssh_key,
    run,
    ssh_banner,
    wait_for,
    which,
)

IMAGE_REPO = "localhost/infra-lab-debian"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
APT_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")

# What Ansible needs, then what the playbooks install (baked in to make runs fast).
PACKAGES = (
    "openssh-server",
    "python3",
    "python3-apt",
    "sudo",
    # os baseline
    "ca-certificates",
    "curl",
    "less",
    "procps",
    "tzdata",
    "vim-tiny",
    # web
    "nginx",
    "php-fpm",
    # backup
    "restic",
    "cron",
    # monitoring
    "prometheus-node-exporter",
    # database (DBA department) and the web tier's driver for it
    "postgresql",
    "php-pgsql",
    # host firewall (security department)
    "nftables",
    # containers department: rootful podman inside the host (crun: it runs without
    # cgroups; fuse-overlayfs: storage on the host's overlay root; netavark provides the
    # virtual container-network-stack, which debootstrap does not resolve)
    "podman",
    "crun",
    "fuse-overlayfs",
    "netavark",
)

KEY_MOUNT = "/etc/infra-lab/authorized_keys"
POSTGRESQL_PORT = 5432  # the image's cluster (the DBA department's default)
# The image's rootfs, read-only in every host: the base of the applications' images.
BASE_MOUNT = "/usr/local/share/infra-lab/base-rootfs"
INIT_PATH = "/usr/local/sbin/target-init"
# Each start of a host container is a boot: a real host's /run is a fresh tmpfs, this one
# keeps the files of its last run, and a stale pid file naming a pid now reused by another
# process makes an init script say "running" (nginx then never starts again).
BOOT = ("sh", "-c", f"rm -f /run/*.pid /run/*/*.pid; exec {INIT_PATH}")
INIT_SCRIPT = f"""#!/bin/sh
# Container entry point of the infra-automation lab hosts (no systemd inside).
set -e
if [ -f {KEY_MOUNT} ]; then
    install -d -m 0700 /root/.ssh
    install -m 0600 {KEY_MOUNT} /root/.ssh/authorized_keys
fi
ssh-keygen -A >/dev/null
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e
"""

CONTAINERS_CONF = """\
# infra-automation lab: podman settings that work on this kind of host (see LAB.md).
[containers]
default_ulimits = ["nofile=8192:8192", "nproc=8192:8192"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
"""

# The pool hosts are the lab's: each entry in generated/lab.yml carries its groups (the
# hand-written inventory names none, so a lab up with guests lists no host it did not make).
HOST_GROUPS = ("debian", "vm-pool")
LABEL = "io.infra-automation.lab"
KEY_LABEL = "io.infra-automation.lab.key"  # the SHA-256 fingerprint of the mounted key
SSH_WAIT = 30.0


@dataclass(frozen=True)
class HostPorts:
    ssh: int
    http: int


class DebianHosts:
    """Lab component ``hosts``: N Debian containers reachable over SSH on 127.0.0.1."""

    name = "hosts"

    def requirements(self) -> list[Missing]:
        return [
            *which("podman", "podman"),
            *which("runc", "runc"),
            *which("debootstrap", "debootstrap"),
            *which("ssh", "openssh-client"),
            *which("ssh-keygen", "openssh-client"),
        ]

    # --- lifecycle --------------------------------------------------------------------------

    def up(self, ctx: LabContext) -> Fragment:
        image = ensure_image(ctx)
        pub = ensure_ssh_key(ctx.ssh_key)
        network = ensure_network(ctx)
        names = host_names(ctx)
        ports = {n: self._ensure_container(ctx, n, image, network, pub) for n in names}
        with ThreadPoolExecutor(max_workers=min(8, len(names)) or 1) as pool:
            list(pool.map(lambda n: wait_ssh(n, ports[n].ssh), names))
        return Fragment(inventory={"hosts": {n: host_entry(ctx, n, ports[n]) for n in names}})

    def down(self, ctx: LabContext) -> None:
        names = [container_name(ctx, n) for n in _existing_hosts(ctx)]
        if names:
            podman(ctx, "rm", "--force", "--time", "2", *names, timeout=120)
        network = network_name(ctx)
        if _ok(podman(ctx, "network", "exists", network, check=False)):
            podman(ctx, "network", "rm", "--force", network)

    def status(self, ctx: LabContext) -> list[Health]:
        return [self._health(ctx, n) for n in host_names(ctx)]

    # --- pieces -----------------------------------------------------------------------------

    def _ensure_container(
        self, ctx: LabContext, host: str, image: str, network: str, pub: Path
    ) -> HostPorts:
        cname = container_name(ctx, host)
        state = inspect(ctx, cname)
        if state is not None and _stale(state, image, pub):
            # built from an older recipe, or left by a lab of another checkout (its key)
            podman(ctx, "rm", "--force", "--time", "2", cname)
            state = None
        if state is None:
            run_container(ctx, cname, host, image, network, pub)
        elif not state.get("State", {}).get("Running"):
            podman(ctx, "start", cname)
        return read_ports(ctx, cname)

    def _health(self, ctx: LabContext, host: str) -> Health:
        cname = container_name(ctx, host)
        state = inspect(ctx, cname)
        target = f"host {host}"
        if state is None:
            return Health(target, False, f"container {cname} does not exist")
        if not state.get("State", {}).get("Running"):
            return Health(target, False, f"container {cname} is not running")
        ports = read_ports(ctx, cname)
        ok, detail = ssh_login(ctx.ssh_key, ports.ssh)
        return Health(target, ok, f"ssh 127.0.0.1:{ports.ssh} " + detail)


def run_container(
    ctx: LabContext,
    cname: str,
    hostname: str,
    image: str,
    network: str,
    pub: Path,
    labels: Mapping[str, str] | None = None,
) -> None:
    """Start one lab host container: the instance's network, the lab key mounted read-only
    (its fingerprint a label), CAP_NET_ADMIN, what podman inside needs (CAP_SYS_ADMIN,
    /dev/fuse, the image's rootfs read-only), SSH and HTTP published on ports of 127.0.0.1
    that podman chooses."""
    extra = [a for k, v in (labels or {}).items() for a in ("--label", f"{k}={v}")]
    base = base_rootfs(ctx, image)
    podman(
        ctx,
        "run", "-d", "--init",
        "--name", cname,
        "--hostname", hostname,
        "--label", f"{LABEL}={ctx.name}",
        "--label", f"{KEY_LABEL}={key_fingerprint(pub)}",
        *extra,
        "--network", network,
        "--cap-add", "NET_ADMIN",  # the security department's nftables
        "--cap-add", "SYS_ADMIN",  # the containers department's podman: its mounts
        "--device", "/dev/fuse",  # ... and its fuse-overlayfs storage
        "-p", "127.0.0.1::22",
        "-p", "127.0.0.1::80",
        "-v", f"{pub}:{KEY_MOUNT}:ro",
        *(("-v", f"{base}:{BASE_MOUNT}:ro") if base.is_dir() else ()),
        image,
        *BOOT,
    )  # fmt: skip


def ensure_network(ctx: LabContext) -> str:
    """The instance's podman network, created when missing (by whichever component is first)."""
    network = network_name(ctx)
    if not _ok(podman(ctx, "network", "exists", network, check=False)):
        made = podman(
            ctx, "network", "create", "--label", f"{LABEL}={ctx.name}", network, check=False
        )
        if not _ok(made) and not _ok(podman(ctx, "network", "exists", network, check=False)):
            raise LabError(f"podman network create {network} failed: {made.stderr.strip()}")
    return network


def _stale(state: dict[str, Any], image: str, pub: Path) -> bool:
    """A container of this name that this lab cannot reuse as it is: another image, another
    key file, the same key file holding another key (by the fingerprint label), or another
    boot command."""
    sources = {str(m.get("Source")) for m in state.get("Mounts") or [] if isinstance(m, dict)}
    config = state.get("Config") or {}
    labels = config.get("Labels") or {}
    return (
        state.get("ImageName") != image
        or str(pub) not in sources
        or labels.get(KEY_LABEL) != key_fingerprint(pub)
        or list(config.get("Cmd") or []) != list(BOOT)
    )


def key_fingerprint(pub: Path) -> str:
    """``SHA256:<base64>`` of the public key's blob, as ``ssh-keygen -l`` prints it."""
    fields = pub.read_text().split()
    try:
        blob = base64.b64decode(fields[1], validate=True)
    except (IndexError, binascii.Error) as exc:
        raise LabError(f"{pub}: not an OpenSSH public key") from exc
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


# --- names and inventory --------------------------------------------------------------------


def host_names(ctx: LabContext) -> list[str]:
    return [f"debian{i}" for i in range(1, ctx.options.hosts + 1)]


def container_name(ctx: LabContext, host: str) -> str:
    return ctx.prefixed(host)


def network_name(ctx: LabContext) -> str:
    return ctx.prefixed("infra-lab")


def host_entry(ctx: LabContext, host: str, ports: HostPorts) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": ports.ssh,
        "username": "root",
        "ssh_key_file": str(ctx.ssh_key),
        "data": {
            "http_port": ports.http,
            "container": container_name(ctx, host),
            # Lab targets get fresh host keys on every start, on reused 127.0.0.1 ports.
            "ansible_host_key_checking": False,
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/dev/null",
        },
        "groups": list(HOST_GROUPS),
    }
    return entry


def _existing_hosts(ctx: LabContext) -> list[str]:
    """Hosts of this instance that have a container (whatever ``options.hosts`` says now)."""
    out = podman(
        ctx, "ps", "-a", "--filter", f"label={LABEL}={ctx.name}", "--format", "{{.Names}}"
    ).stdout.split()
    prefix = ctx.prefixed("")
    return [n.removeprefix(prefix) for n in out if n.removeprefix(prefix).startswith("debian")]


# --- podman ---------------------------------------------------------------------------------


def containers_conf(ctx: LabContext) -> Path:
    """Our containers.conf (written once into the shared cache)."""
    path = ctx.cache_dir / "podman" / "containers.conf"
    if not path.is_file() or path.read_text() != CONTAINERS_CONF:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(CONTAINERS_CONF)
        tmp.replace(path)
    return path


def podman_env(ctx: LabContext) -> dict[str, str]:
    """Environment for any podman call against the lab (also for molecule)."""
    return {"CONTAINERS_CONF": str(containers_conf(ctx))}


def podman(
    ctx: LabContext, *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return run(["podman", *args], check=check, timeout=timeout, env=podman_env(ctx))


def _ok(proc: subprocess.CompletedProcess[str]) -> bool:
    return proc.returncode == 0


def inspect(ctx: LabContext, cname: str) -> dict[str, Any] | None:
    proc = podman(ctx, "container", "inspect", cname, check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout)
    return data[0] if data else None


def read_ports(ctx: LabContext, cname: str) -> HostPorts:
    return HostPorts(ssh=_port(ctx, cname, 22), http=_port(ctx, cname, 80))


def _port(ctx: LabContext, cname: str, inner: int) -> int:
    out = podman(ctx, "port", cname, f"{inner}/tcp").stdout.strip().splitlines()
    if not out:
        raise LabError(f"container {cname}: port {inner} is not published")
    return int(out[0].rsplit(":", 1)[1])


# --- ssh ------------------------------------------------------------------------------------


def wait_ssh(host: str, port: int) -> None:
    wait_for(lambda: ssh_banner(port), SSH_WAIT, f"sshd of {host} on 127.0.0.1:{port}", 0.2)


def ssh_login(key: Path, port: int, timeout: float = 15) -> tuple[bool, str]:
    """Log in with the lab key and run ``true``; (ok, detail)."""
    argv = [
        "ssh", "-i", str(key), "-p", str(port),
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", "ConnectTimeout=5",
        "root@127.0.0.1", "true",
    ]  # fmt: skip
    try:
        proc = run(argv, check=False, timeout=timeout)
    except LabError as exc:
        return False, str(exc)
    if proc.returncode == 0:
        return True, "answers"
    return False, f"login failed ({proc.returncode}): {proc.stderr.strip()}"


# --- image ----------------------------------------------------------------------------------


def recipe() -> dict[str, Any]:
    """Everything that makes the image what it is; its hash tags the image."""
    return {"suite": SUITE, "packages": sorted(PACKAGES), "init": INIT_SCRIPT, "rev": 2}


def image_tag() -> str:
    digest = hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()
    return f"{IMAGE_REPO}:{digest[:12]}"


def debian_mirror(sources: Path = APT_SOURCES) -> str:
    """The host's Debian mirror (deb822 ``URIs:`` of the main archive), else deb.debian.org."""
    try:
        text = sources.read_text()
    except OSError:
        return DEFAULT_MIRROR
    for stanza in text.split("\n\n"):
        fields = _deb822(stanza)
        if SUITE in fields.get("suites", "").split() and "uris" in fields:
            return fields["uris"].split()[0]
    return DEFAULT_MIRROR


def _deb822(stanza: str) -> Mapping[str, str]:
    fields: dict[str, str] = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    return fields


def ensure_image(ctx: LabContext) -> str:
    """The image of the current recipe and its rootfs (the hosts' base for their own
    containers); built (once, under a lock) when either is missing."""
    tag = image_tag()
    if _image_ready(ctx, tag):
        return tag
    with _locked(ctx.cache_dir / "debian" / "build.lock"):
        if not _image_ready(ctx, tag):
            build_image(ctx, tag)
    return tag


def base_rootfs(ctx: LabContext, image: str) -> Path:
    """The rootfs ``image`` was imported from (under the shared cache)."""
    return ctx.cache_dir / "debian" / f"rootfs-{image.rsplit(':', 1)[-1]}"


def _image_ready(ctx: LabContext, tag: str) -> bool:
    return _image_exists(ctx, tag) and (base_rootfs(ctx, tag) / INIT_PATH.lstrip("/")).is_file()


def _image_exists(ctx: LabContext, tag: str) -> bool:
    return _ok(podman(ctx, "image", "exists", tag, check=False))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def build_image(ctx: LabContext, tag: str) -> None:
    """debootstrap a rootfs under the cache, prepare it, ``podman import`` it as ``tag``."""
    rootfs = base_rootfs(ctx, tag)
    if not (rootfs / INIT_PATH.lstrip("/")).is_file():
        _debootstrap(rootfs)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        podman_import = subprocess.run(
            ["podman", "import", "--change", f'CMD ["{INIT_PATH}"]', "-", tag],
            stdin=tar.stdout,
            capture_output=True,
            env={**os.environ, **podman_env(ctx)},
            timeout=600,
            check=False,
        )
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if podman_import.returncode != 0 or tar.returncode != 0:
        err = podman_import.stderr.decode(errors="replace").strip()
        raise LabError(f"podman import of {rootfs} as {tag} failed: {err}")
    podman(ctx, "tag", tag, f"{IMAGE_REPO}:latest")


def _debootstrap(rootfs: Path) -> None:
    work = rootfs.with_name(rootfs.name + ".partial")
    if work.exists():
        shutil.rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            SUITE,
            str(work),
            debian_mirror(),
        ],
        timeout=1800,
    )
    _prepare_rootfs(work)
    if rootfs.exists():
        shutil.rmtree(rootfs)
    work.rename(rootfs)


def _prepare_rootfs(root: Path) -> None:
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()  # each container makes its own at start
    init = root / INIT_PATH.lstrip("/")
    init.parent.mkdir(parents=True, exist_ok=True)
    init.write_text(INIT_SCRIPT)
    init.chmod(0o755)
    (root / KEY_MOUNT.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    ssh_dir = root / "root" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    ssh_dir.chmod(0o700)
    for cache in (root / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        cache.unlink()
    _pin_postgresql_port(root)


def _pin_postgresql_port(root: Path) -> None:
    """The image's PostgreSQL cluster on the default port, whatever the build machine runs:
    ``pg_createcluster`` (run by the package in the chroot, which shares the machine's
    network) takes the next free port when something listens on 5432 there."""
    for conf in (root / "etc" / "postgresql").glob("*/*/postgresql.conf"):
        lines = conf.read_text().splitlines(keepends=True)
        fixed = [
            f"port = {POSTGRESQL_PORT}\t\t\t\t# pinned by the lab image recipe\n"
            if line.split("=", 1)[0].strip() == "port"
            else line
            for line in lines
        ]
        conf.write_text("".join(fixed))
