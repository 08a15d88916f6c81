"""The containers department on the lab: a project's app in podman on its web VMs, behind nginx.

A web_vms=2 landscape (backup and monitoring off), then project-app through the CLI as a
pipeline calls it: its dry run shows the app and changes nothing. Applied, on each web VM's
host: the app's page answers through nginx on the host's published HTTP port (from this
machine), the container runs with the host's network, its image was built there on the base
imported from the lab's Debian rootfs (nothing pulled).
A second apply changes nothing; ``infra verify`` is in sync, reports drift once the container
is stopped on one host behind our back, and is in sync again after the next apply. With
``app: false`` the app, its images and its nginx location leave every host (and verify no
longer looks for it); applied again and decommissioned, the decommission removes the
project's containers and images first, then the VMs and their guests. Everything is read
from the targets (HTTP, podman inside the hosts).
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from landscape_root import infra, make_root, write_request

from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.lab.hosts import podman as lab_podman

pytestmark = pytest.mark.lab

PROJECT = "boxshop"
APP = "shop-api"
CONTAINER = f"infra-app-{PROJECT}-{APP}"
IMAGE = f"localhost/infra-app-{PROJECT}-{APP}:latest"
BASE = "localhost/infra-app-base:latest"
MESSAGE = "Orders served from a container"
BUILD = f"""\
service: project-landscape
project: {PROJECT}
requester: ci-pipeline
params: {{web_vms: 2, backup: false, monitoring: false, site_title: Box shop}}
"""


def app_request(present: bool = True) -> str:
    return f"""\
service: project-app
project: {PROJECT}
requester: ci-pipeline
params: {{app: {str(present).lower()}, app_name: {APP}, app_port: 9081, app_message: {MESSAGE}}}
"""


def scale_request(web_vms: int) -> str:
    return f"""\
service: project-scale
project: {PROJECT}
requester: ci-pipeline
params: {{web_vms: {web_vms}, backup: false, monitoring: false, site_title: Box shop}}
"""


DECOMMISSION = f"""\
service: project-decommission
project: {PROJECT}
requester: ci-pipeline
"""


def apply(root: Path, name: str, *extra: str) -> dict[str, Any]:
    run = infra(root, "apply", str(root / f"{name}.yml"), "--output", "json", *extra)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    result = dict(json.loads(run.stdout))
    assert result["status"] == "success", result
    return result


def verify(root: Path) -> tuple[int, dict[str, Any]]:
    """``infra verify``'s exit code and the app step's verification (empty: not verified)."""
    run = infra(root, "verify", "--project", PROJECT, "--output", "json")
    assert run.returncode in (0, 1, 3), run.stdout[-2000:] + run.stderr[-2000:]
    (project,) = json.loads(run.stdout)["projects"]
    steps = {s["step_id"]: s for s in project["steps"]}
    return run.returncode, steps.get("app", {})


@pytest.fixture(scope="module")
def root(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = make_root(tmp_path_factory.mktemp("containers") / "root", lab.inventory_path)
    write_request(path, "build", BUILD)
    write_request(path, "app", app_request())
    write_request(path, "app-off", app_request(present=False))
    write_request(path, "scale-up", scale_request(3))
    write_request(path, "scale-down", scale_request(2))
    write_request(path, "decommission", DECOMMISSION)
    yield path
    infra(path, "apply", str(path / "decommission.yml"), "--output", "json")  # best effort


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def built(root: Path) -> dict[str, Any]:
    return apply(root, "build")


@pytest.fixture(scope="module")
def applied(root: Path, built: dict[str, Any]) -> dict[str, Any]:
    return apply(root, "app")


@pytest.fixture(scope="module")
def hosts(applied: dict[str, Any], inventory: Inventory) -> dict[str, dict[str, str]]:
    """VM -> the container of the lab host it is bound to, and the app's URL read back."""
    found = applied["steps"]["app"]["outputs"]["hosts"]
    assert sorted(found) == [f"{PROJECT}-web-01", f"{PROJECT}-web-02"]
    return {
        vm: {"host": host_container(inventory, h["bound_to"]), "url": h["url"]}
        for vm, h in found.items()
    }


def host_container(inventory: Inventory, bound_to: str) -> str:
    """A pool host's container (inventory data), or the guest container itself."""
    if bound_to in inventory.hosts:
        return str(inventory.host(bound_to).data["container"])
    return bound_to


def inside(lab: Lab, host: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command inside a lab host's container (podman there is the host's own)."""
    return lab_podman(lab.context, "exec", host, *argv, check=check, timeout=120)


def exists(lab: Lab, host: str) -> bool:
    return lab_podman(lab.context, "container", "exists", host, check=False).returncode == 0


def get(url: str) -> tuple[int, str]:
    assert url.startswith("http://127.0.0.1:"), url  # lab targets only
    try:
        with urllib.request.urlopen(url, timeout=15) as answer:  # noqa: S310 - loopback lab URL
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def containers(lab: Lab, host: str) -> list[dict[str, Any]]:
    return list(json.loads(inside(lab, host, "podman", "ps", "--all", "--format", "json").stdout))


def images(lab: Lab, host: str) -> list[str]:
    listed = json.loads(inside(lab, host, "podman", "images", "--all", "--format", "json").stdout)
    return sorted(name for image in listed for name in image.get("Names") or ["<none>"])


def layers(lab: Lab, host: str, image: str) -> list[str]:
    inspected = inside(lab, host, "podman", "image", "inspect", image).stdout
    return list(json.loads(inspected)[0]["RootFS"]["Layers"])


# --- the app ------------------------------------------------------------------------------------


def test_the_dry_run_shows_the_app_and_changes_nothing(
    root: Path, built: dict[str, Any], inventory: Inventory, lab: Lab
) -> None:
    """Runs first (file order): the project has no app yet."""
    check = apply(root, "app", "--check")
    step = check["steps"]["app"]
    assert check["check"] is True and step["changed"] is True
    assert "config.json" in step["diff"] and MESSAGE in step["diff"]
    assert sorted(step["outputs"]["hosts"]) == [f"{PROJECT}-web-01", f"{PROJECT}-web-02"]
    for found in step["outputs"]["hosts"].values():
        host = host_container(inventory, found["bound_to"])
        assert [c for c in containers(lab, host) if c["Names"] == [CONTAINER]] == []
        assert IMAGE not in images(lab, host)
        assert get(found["url"])[0] == 404  # no location for the app yet


def test_the_container_s_page_answers_through_nginx_on_each_web_host(
    hosts: dict[str, dict[str, str]], applied: dict[str, Any], lab: Lab
) -> None:
    for vm, found in hosts.items():
        assert found["url"].endswith(f"/{APP}/"), found
        status, page = get(found["url"])  # the host's published port 80: nginx
        assert status == 200, (vm, status)
        assert f'<span id="container">{CONTAINER}</span>' in page
        assert f'<strong id="project">{PROJECT}</strong>' in page
        assert f'<p id="message">{MESSAGE}</p>' in page
        landing = get(found["url"].removesuffix(f"{APP}/"))[1]
        assert "(fpm-fcgi)" in landing and CONTAINER not in landing  # the site is still PHP's
        # the page comes from the container: nginx proxies to it on the host's loopback
        direct = inside(lab, found["host"], "curl", "-sf", "http://127.0.0.1:9081/").stdout
        assert CONTAINER in direct
    facts = applied["steps"]["app"]["outputs"]["hosts"][f"{PROJECT}-web-01"]["facts"]["app"]
    assert facts["status"] == "running" and facts["listen"] == "127.0.0.1:9081"


def test_the_container_runs_in_the_host_s_podman_from_a_local_image(
    hosts: dict[str, dict[str, str]], lab: Lab
) -> None:
    for found in hosts.values():
        (ours,) = [c for c in containers(lab, found["host"]) if c["Names"] == [CONTAINER]]
        assert ours["State"] == "running" and ours["Image"] == IMAGE
        assert ours["Labels"]["io.infra-automation.project"] == PROJECT
        config = json.loads(
            inside(lab, found["host"], "podman", "container", "inspect", CONTAINER).stdout
        )[0]
        assert config["HostConfig"]["NetworkMode"] == "host"
        assert config["HostConfig"]["RestartPolicy"]["Name"] == "on-failure"
        assert BASE in images(lab, found["host"]) and IMAGE in images(lab, found["host"])
        # FROM the base imported on the host: its one layer is the app image's first
        base, app = layers(lab, found["host"], BASE), layers(lab, found["host"], IMAGE)
        assert len(base) == 1 and app[0] == base[0]
        assert len(app) == 2  # + the app's COPY
        # the lab's Debian, imported on the host: no registry name anywhere
        assert all(name.startswith("localhost/") for name in images(lab, found["host"]))


def test_a_second_apply_changes_nothing(root: Path, hosts: dict[str, dict[str, str]]) -> None:
    again = apply(root, "app")
    assert again["steps"]["app"]["changed"] is False, again["steps"]["app"]["diff"][-2000:]


def test_verify_is_in_sync_then_sees_a_stopped_container(
    root: Path, hosts: dict[str, dict[str, str]], lab: Lab
) -> None:
    code, app = verify(root)
    assert code == 0 and app["state"] == "in-sync", app
    resources = {c["resource"] for c in app["checks"]}
    assert f"container {CONTAINER}" in resources
    assert {c["target"] for c in app["checks"]} == set(hosts)
    vm, first = sorted(hosts.items())[0]
    inside(lab, first["host"], "podman", "stop", "--time", "5", CONTAINER)
    assert get(first["url"])[0] == 502  # nginx: nothing listens behind the location
    code, app = verify(root)
    assert code == 3 and app["state"] == "drifted", app
    drifted = {(c["target"], c["resource"]): c for c in app["checks"] if c["state"] == "drifted"}
    assert drifted[(vm, f"container {CONTAINER}")]["found"] == "exited"
    assert (vm, f"site {first['url']}") in drifted  # its page is gone
    assert all(target == vm for target, _ in drifted)  # the other host is still in sync
    restored = apply(root, "app")
    assert restored["steps"]["app"]["changed"] is True  # started again
    code, app = verify(root)
    assert code == 0 and app["state"] == "in-sync", app
    assert get(first["url"])[0] == 200


def test_a_scale_brings_the_app_to_the_added_vm_and_takes_it_from_the_removed_one(
    root: Path, hosts: dict[str, dict[str, str]], inventory: Inventory, lab: Lab
) -> None:
    added = f"{PROJECT}-web-03"
    up = apply(root, "scale-up")
    assert up["outputs"]["added"] == [added]
    found = up["steps"]["app"]["outputs"]["hosts"]
    assert sorted(found) == sorted([*hosts, added])  # the tier as it is now
    assert up["steps"]["app"]["changed"] is True
    new = {"host": host_container(inventory, found[added]["bound_to"]), "url": found[added]["url"]}
    status, page = get(new["url"])
    assert status == 200 and MESSAGE in page and f'id="container">{CONTAINER}<' in page
    assert [c["Names"][0] for c in containers(lab, new["host"])] == [CONTAINER]
    code, app = verify(root)
    assert code == 0 and app["state"] == "in-sync", app
    assert {c["target"] for c in app["checks"]} == {*hosts, added}

    down = apply(root, "scale-down")
    assert down["outputs"]["removed"] == [added]
    assert down["steps"]["app_remove"]["changed"] is True
    if exists(lab, new["host"]):  # a pool host stays: the app went with the VM
        assert [c for c in containers(lab, new["host"]) if PROJECT in json.dumps(c)] == []
        assert images(lab, new["host"]) == []
    code, app = verify(root)
    assert code == 0 and app["state"] == "in-sync", app
    assert {c["target"] for c in app["checks"]} == set(hosts)


def test_app_false_removes_the_app_from_every_host(
    root: Path, hosts: dict[str, dict[str, str]], lab: Lab
) -> None:
    removed = apply(root, "app-off")
    for vm, found in hosts.items():
        facts = removed["steps"]["app"]["outputs"]["hosts"][vm]["facts"]["app"]
        assert facts == {"state": "absent", "removed_containers": [CONTAINER]}
        assert containers(lab, found["host"]) == [] and images(lab, found["host"]) == []
        assert get(found["url"])[0] == 404  # the location is gone, the site answers
        gone = inside(
            lab, found["host"], "test", "-e", f"/etc/nginx/infra-locations/{PROJECT}", check=False
        )
        assert gone.returncode == 1
    code, app = verify(root)
    assert code == 0 and app == {}  # the project as built has no app any more


def test_decommission_leaves_no_container_and_no_image(
    root: Path, hosts: dict[str, dict[str, str]], lab: Lab
) -> None:
    apply(root, "app")
    assert all(get(found["url"])[0] == 200 for found in hosts.values())
    result = apply(root, "decommission")
    step = result["steps"]["app_remove"]
    assert step["changed"] is True
    for vm, found in hosts.items():
        assert step["outputs"]["hosts"][vm]["facts"]["app"]["removed_containers"] == [CONTAINER]
        if exists(lab, found["host"]):  # a pool host stays: nothing of the project on it
            assert [c for c in containers(lab, found["host"]) if PROJECT in json.dumps(c)] == []
            assert images(lab, found["host"]) == []
