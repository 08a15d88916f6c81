"""The lab hosts' containers (``infra_automation.lab.hosts``): which container is stale, the
key fingerprint label, and the podman-in-podman options of ``run_container``. podman is
recorded, not run; the keys are real ``ssh-keygen`` keys."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

import pytest

from infra_automation.exceptions import LabError
from infra_automation.lab import hosts
from infra_automation.lab.base import LabContext

IMAGE = "localhost/infra-lab-debian:0123456789ab"


def keygen(path: Path) -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30
    )
    return path.with_suffix(".pub")


def container(pub: Path, *, fingerprint: str | None, image: str = IMAGE) -> dict[str, Any]:
    labels = {hosts.LABEL: "t"} | ({hosts.KEY_LABEL: fingerprint} if fingerprint else {})
    return {
        "ImageName": image,
        "Mounts": [{"Source": str(pub), "Destination": hosts.KEY_MOUNT}],
        "Config": {"Labels": labels, "Cmd": list(hosts.BOOT)},
    }


def test_the_fingerprint_is_ssh_keygen_s(tmp_path: Path) -> None:
    pub = keygen(tmp_path / "id")
    listed = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()[1]  # fmt: skip
    assert hosts.key_fingerprint(pub) == listed


def test_a_file_that_is_no_public_key_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "id.pub"
    bad.write_text("not a key\n")
    with pytest.raises(LabError, match="not an OpenSSH public key"):
        hosts.key_fingerprint(bad)


def test_a_container_with_this_key_is_reused(tmp_path: Path) -> None:
    pub = keygen(tmp_path / "id")
    assert not hosts._stale(container(pub, fingerprint=hosts.key_fingerprint(pub)), IMAGE, pub)


def test_same_key_path_but_another_key_is_stale(tmp_path: Path) -> None:
    """A deleted clone's container: its key file had this path, but held another key."""
    pub = keygen(tmp_path / "id")
    before = hosts.key_fingerprint(pub)
    pub.unlink()
    (tmp_path / "id").unlink()
    keygen(tmp_path / "id")  # the new checkout's key, at the same path
    assert hosts._stale(container(pub, fingerprint=before), IMAGE, pub)


def test_a_container_without_the_label_or_of_another_image_is_stale(tmp_path: Path) -> None:
    pub = keygen(tmp_path / "id")
    assert hosts._stale(container(pub, fingerprint=None), IMAGE, pub)  # made before the label
    now = hosts.key_fingerprint(pub)
    assert hosts._stale(container(pub, fingerprint=now, image=IMAGE + "x"), IMAGE, pub)
    other = container(pub, fingerprint=now)
    other["Mounts"] = [{"Source": str(tmp_path / "other.pub")}]
    assert hosts._stale(other, IMAGE, pub)


def test_a_container_of_another_boot_command_is_stale(tmp_path: Path) -> None:
    """Made before each start cleared /run's pid files: remade, as a real boot would."""
    pub = keygen(tmp_path / "id")
    old = container(pub, fingerprint=hosts.key_fingerprint(pub))
    old["Config"]["Cmd"] = [hosts.INIT_PATH]
    assert hosts._stale(old, IMAGE, pub)


def test_run_container_labels_the_key_and_gives_podman_what_it_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pub = keygen(tmp_path / "id")
    ctx = LabContext(name="t", root=tmp_path, state_dir=tmp_path / ".lab" / "t")
    base = hosts.base_rootfs(ctx, IMAGE)
    base.mkdir(parents=True)
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(hosts, "podman", lambda ctx, *args, **kw: calls.append(args))
    hosts.run_container(ctx, "t-debian1", "debian1", IMAGE, "t-infra-lab", pub, {"k": "v"})
    (argv,) = calls
    pairs = set(itertools.pairwise(argv))
    assert ("--label", f"{hosts.KEY_LABEL}={hosts.key_fingerprint(pub)}") in pairs
    assert ("--label", "k=v") in pairs
    assert {("--cap-add", "NET_ADMIN"), ("--cap-add", "SYS_ADMIN")} <= pairs
    assert ("--device", "/dev/fuse") in pairs
    assert ("-v", f"{base}:{hosts.BASE_MOUNT}:ro") in pairs
    assert "--privileged" not in argv and argv[-4:] == (IMAGE, *hosts.BOOT)


def test_the_base_rootfs_is_the_image_s_own(tmp_path: Path) -> None:
    ctx = LabContext(name="t", root=tmp_path, state_dir=tmp_path / ".lab" / "t")
    assert hosts.base_rootfs(ctx, IMAGE).name == "rootfs-0123456789ab"
    assert {"podman", "crun", "fuse-overlayfs", "netavark"} <= set(hosts.PACKAGES)


def test_the_image_s_postgresql_cluster_is_pinned_to_5432(tmp_path: Path) -> None:
    """Built while the machine ran a PostgreSQL of its own, the package's cluster got 5433."""
    conf = tmp_path / "etc" / "postgresql" / "15" / "main" / "postgresql.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("#port = 1\nlisten_addresses = 'localhost'\nport = 5433\t\t# (change)\nx = 1\n")
    hosts._pin_postgresql_port(tmp_path)
    lines = conf.read_text().splitlines()
    assert [line.split("#")[0].strip() for line in lines if line.startswith("port")] == [
        "port = 5432"
    ]
    assert lines[0] == "#port = 1" and lines[1] == "listen_addresses = 'localhost'"
    assert lines[3] == "x = 1"
