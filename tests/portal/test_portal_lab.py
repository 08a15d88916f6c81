"""The portal in headless Chromium (Debian's ``chromium``) against a real ``infra server``
whose runs go to the lab: FRR routers, vcsim and the podman Debian hosts.

- A TAM logs in, opens the project-landscape form, gets a field error for a bad IP pool,
  fixes it, reads the dry run per department (the routers' config lines, the vCenter
  objects, the Ansible file diffs), submits and watches the run page: the picture's boxes
  are sampled every 250 ms while the run goes on, and their status and fill colour must
  change (planned/running before, all succeeded at the end). The project page then shows
  the as-built docs: the VM and the address the run created. The targets are read back
  too: the web host serves the landing page, the edge router learns the subnet, vcsim
  has the VM powered on.
- An engineer's run fails at a real target (the edge router stopped), the router comes
  back, Resume on the run page finishes it without redoing IPAM.
- The TAM gets 403 on the other project's pages.

Both projects are decommissioned at the end. The colour check and the request guard are
shown to fail on what they must catch (a picture that never changes colour, a request for
another host).

Every browser context records each URL it requests and aborts any not for 127.0.0.1
(:func:`tests.portal.conftest.browser_tab`). Screenshots go to ``$INFRA_TEST_ARTIFACTS``
(default ``build/test-artifacts``) ``/portal/lab-*.png``; ``docs/images/portal-run.png``
in the README is ``lab-run-live.png``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra_automation.departments.vmware import vcenter_config
from infra_automation.identity import Role
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.lab import Lab
from infra_automation.record import RunRecord
from tests.integration.landscape_root import ROOT, make_root
from tests.portal.conftest import PASSWORD, browser_tab, login
from tests.server.conftest import LiveServer, live_server

pytestmark = pytest.mark.lab

# The TAM's project and an engineer's, new names each session: the dry run's diffs are those
# of a project that never was on the lab hosts (a decommission leaves their hostname).
TAG = secrets.token_hex(2)
PROJECT, OTHER = f"pl{TAG}", f"pn{TAG}"
TAM = "shop-tam"  # a TAM assigned to PROJECT only
TITLE = "Portal lab"
SLOW = 240.0  # seconds: a landscape dry run is ~30 s on a loaded machine, its run ~60 s
ARTIFACTS = Path(os.environ.get("INFRA_TEST_ARTIFACTS", "build/test-artifacts")) / "portal"

NETWORK_SERVICE = {  # the landscape's first steps, and the VM folder after them
    "name": "pl-network",
    "description": "The project's VLAN and subnet on the routers, then its VM folder",
    "owner": "network",
    "steps": [
        {
            "id": "ipam",
            "department": "network",
            "executor": "ipam.allocate",
            "params": {"pool": "default", "hosts": 1},
        },
        {
            "id": "network",
            "department": "network",
            "executor": "network.configure",
            "needs": ["ipam"],
            "targets": {"group": "routers"},
            "params": {
                "vlan_id": "{{ steps.ipam.outputs.vlan_id }}",
                "subnet": "{{ steps.ipam.outputs.subnet }}",
                "gateway": "{{ steps.ipam.outputs.gateway }}",
                "description": "project {{ project }}",
            },
        },
        {
            "id": "vm_folder",
            "department": "vmware",
            "executor": "vmware.folder",
            "needs": ["network"],
            "params": {"project": "{{ project }}"},
        },
    ],
}

# Every 250 ms: each box of the picture, its status, class and the fill colour it is drawn
# in; and every text the departments' "Now" column showed.
SAMPLER = """() => {
  window.__samples = [];
  window.__now = new Set();
  const sample = () => {
    document.querySelectorAll('#run-panel td.current').forEach(
      td => __now.add(td.closest('tr').id + '=' + td.textContent.trim()));
    __samples.push(Object.fromEntries(
      [...document.querySelectorAll('svg.dag g.node')].map(n => [n.id, [
        n.dataset.status, n.getAttribute('class'),
        getComputedStyle(n.querySelector('rect')).fill]])));
  };
  sample();
  window.__sample = sample;
  window.__sampler = setInterval(sample, 250);
}"""
STOP_SAMPLER = "() => { clearInterval(window.__sampler); __sample(); return __samples; }"
RUN_ENDED = (
    "['success', 'failed', 'interrupted'].includes("
    "document.querySelector('#run-status')?.textContent)"
)
PICTURE_FITS = """() => {
  const frame = document.querySelector('#run-panel .picture').getBoundingClientRect();
  return [...document.querySelectorAll('svg.dag g.node')].every(n => {
    const box = n.getBoundingClientRect();
    return box.left >= frame.left && box.right <= frame.right && box.right <= 1280; });
}"""
ONE_LINE = """() => [...document.querySelectorAll('#run-panel .badge, table.departments th')]
  .every(e => e.getBoundingClientRect().height
    < 2 * 1.3 * parseFloat(getComputedStyle(e).fontSize))"""
Sample = dict[str, list[str]]  # node id -> [status, class, fill]


def shot(page: Any, name: str, *, full: bool = True) -> Path:
    """A screenshot artifact (its path printed); the page must fit a 1,280-px screen."""
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280, name
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    print(f"screenshot: {path.resolve()}")
    return path


def portal_root(base: Path, lab: Lab) -> Path:
    """The repository's catalog and content, the lab's inventory, and :data:`NETWORK_SERVICE`."""
    root = make_root(base, lab.inventory_path)
    (root / "catalog").unlink()
    (root / "catalog").mkdir()
    for source in (ROOT / "catalog").glob("*.yml"):
        (root / "catalog" / source.name).symlink_to(source)
    (root / "catalog" / "pl-network.yml").write_text(yaml.safe_dump(NETWORK_SERVICE))
    return root


def submit(http: Any, service: str, project: str) -> str:
    answer = http.post(
        "/api/v1/requests/submit", json={"service": service, "project": project, "params": {}}
    )
    assert answer.status_code < 300, answer.text
    run_id: str = answer.json()["run_id"]
    return run_id


@pytest.fixture(scope="module")
def live(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    root = portal_root(tmp_path_factory.mktemp("portal-lab") / "root", lab)
    with live_server(root) as server:
        server.state.identity.add_user(TAM, Role.TAM, PASSWORD, (PROJECT,))
        yield server
        lab.start_router("edge")  # idempotent: a failed test may have left it stopped
        with server.client(Role.ENGINEER) as http:  # best effort: leave the lab as found
            runs = [submit(http, "project-decommission", p) for p in (PROJECT, OTHER)]
        for run_id in runs:
            server.wait_idle(run_id, timeout=SLOW)


@pytest.fixture(scope="module")
def inventory(lab: Lab) -> Inventory:
    return load_inventory(lab.inventory_path)


@pytest.fixture(scope="module")
def flow() -> dict[str, Any]:
    """What the tests hand on (they run in file order): the landscape's run record."""
    return {}


def fill_landscape_form(page: Any, pool: str) -> None:
    page.select_option("#in-project", PROJECT)
    page.fill("#in-web_vms", "1")
    page.select_option("#in-vm_size", "small")
    page.set_checked("#in-backup", False)
    page.set_checked("#in-monitoring", False)
    page.fill("#in-site_title", TITLE)
    page.fill("#in-ip_pool", pool)
    page.click("#preview")


def check_dry_run(page: Any) -> str:
    """The preview's diffs, department by department; the subnet the routers would route."""
    assert page.inner_text("#dry-run-status") == "success"
    network = page.inner_text("#dept-network")
    found = re.search(r"\+ ip route (10\.\d+\.\d+\.0/24) Null0", network)
    assert found, network
    assert f"ip prefix-list PROJECT-{PROJECT}" in network and "router bgp" in network
    vmware = page.inner_text("#dept-vmware")
    assert f"+ folder DC0/vm/{PROJECT}" in vmware and f"+ portgroup {PROJECT}" in vmware
    assert f"DC0/vm/{PROJECT}/{PROJECT}-web-01" in vmware and "poweredOn" in vmware
    assert f"+{PROJECT}-web-01" in page.inner_text("#dept-os")  # the /etc/hostname diff
    web = page.inner_text("#dept-web")
    assert "+++ after" in web and f"/var/www/{PROJECT}" in web
    assert page.locator("#dept-backup, #dept-monitoring").count() == 0  # switched off
    return found.group(1)


def watch_until_done(page: Any) -> list[Sample]:
    """Sample the picture until the run ends and every box shows success; a screenshot
    while steps run (the README's) and one at the end."""
    page.evaluate(SAMPLER)
    # the README's picture: web's playbook running, its current task in the table
    web_task = "document.querySelector('#dept-web td.current')?.textContent.includes(': ')"
    page.wait_for_function(f"{web_task} || {RUN_ENDED}")
    shot(page, "lab-run-live", full=False)
    assert page.evaluate(ONE_LINE), "a department or badge is broken over two lines"
    page.wait_for_function(RUN_ENDED)
    assert page.inner_text("#run-status") == "success", page.inner_text("#run-panel")
    count = page.locator("svg.dag g.node").count()
    # htmx settles the swapped boxes' classes a moment after the swap
    done = f"document.querySelectorAll('svg.dag g.status-success').length == {count}"
    page.wait_for_function(done)
    assert page.evaluate(PICTURE_FITS), "the picture does not fit the 1,280-px screen"
    samples: list[Sample] = page.evaluate(STOP_SAMPLER)
    now: list[str] = page.evaluate("[...__now]")
    tasks = [t for t in now if re.match(r"dept-web=web — \S+: \S", t)]
    assert tasks, f"the web department's current task was never shown: {now}"
    (ARTIFACTS / "lab-run-samples.json").write_text(json.dumps(samples, indent=1))
    shot(page, "lab-run-success")
    return samples


def check_colours_changed(samples: list[Sample]) -> None:
    """Some box was seen running (and planned before) in another colour than success's;
    the last sample shows every box succeeded, all in the one success colour."""
    assert len(samples) >= 8, f"only {len(samples)} samples of the picture"
    last = samples[-1]
    assert last and all(status == "success" for status, _, _ in last.values()), last
    success_fills = {fill for _, _, fill in last.values()}
    assert len(success_fills) == 1, success_fills
    seen: dict[str, set[str]] = {}
    fills: dict[str, set[str]] = {}
    for sample in samples:
        for node, (status, _cls, fill) in sample.items():
            seen.setdefault(node, set()).add(status)
            fills.setdefault(node, set()).add(fill)
    ran = [n for n, statuses in seen.items() if "running" in statuses]
    assert ran, f"no box was ever seen running: {seen}"
    assert any({"planned", "pending"} & statuses for statuses in seen.values()), seen
    changed = [n for n in ran if len(fills[n] - success_fills) >= 1]
    assert changed, f"the boxes seen running never had another colour: {fills}"


GREEN, WHITE, ORANGE = "rgb(213, 245, 227)", "rgb(255, 255, 255)", "rgb(253, 235, 208)"


@pytest.mark.parametrize(
    "samples",
    [
        [{"node-a": ["pending", "", GREEN]}, {"node-a": ["running", "", GREEN]}]
        + [{"node-a": ["success", "", GREEN]}] * 8,  # the status changed, never the colour
        [{"node-a": ["pending", "", WHITE]}] + [{"node-a": ["success", "", GREEN]}] * 9,
        [{"node-a": ["running", "", ORANGE]}] * 10,  # never succeeded
    ],
    ids=["colour-never-changes", "never-seen-running", "never-succeeds"],
)
def test_the_colour_check_fails_on_a_picture_that_does_not_change(
    samples: list[Sample],
) -> None:
    with pytest.raises(AssertionError):
        check_colours_changed(samples)
    good = [{"node-a": ["pending", "", WHITE]}, {"node-a": ["running", "", ORANGE]}]
    check_colours_changed(good + [{"node-a": ["success", "", GREEN]}] * 8)


def test_a_tam_requests_a_landscape_and_watches_it_build_on_the_lab(
    browser: Any, live: LiveServer, flow: dict[str, Any]
) -> None:
    with browser_tab(browser, SLOW * 1000) as (page, requests):
        login(page, live, TAM)
        page.click("#service-project-landscape h2 a")
        fill_landscape_form(page, "Not A Pool!")
        error = page.locator("#field-ip_pool .field-error")
        assert error.is_visible() and "not allowed" in error.inner_text(), page.inner_text("main")
        assert page.input_value("#in-site_title") == TITLE  # the other values are kept
        assert "[1…8]" in page.inner_text("#field-web_vms small")  # an integer's range
        shot(page, "lab-form-error")
        fill_landscape_form(page, "default")
        page.wait_for_selector("#dry-run-status")
        subnet = check_dry_run(page)
        shot(page, "lab-preview")
        page.click("#submit")
        page.wait_for_selector("#run-panel")
        run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        check_colours_changed(watch_until_done(page))
        assert page.inner_text("#dept-vmware .badge") == "success"

        record = live.state.engine.store.get_run(run_id)
        flow.update(run=record, subnet=subnet)
        page.click(f"main p a[href='/projects/{PROJECT}']")
        page.wait_for_selector(f"h1:has-text('Project {PROJECT}')")
        assert run_id in page.inner_text("table.runs")
        shot(page, "lab-project")  # the first page open, as the TAM sees it
        page.locator("details.doc-page").evaluate_all("els => els.forEach(e => e.open = true)")
        docs = page.inner_text("main")
        address = str(step(record, "ipam").outputs["hosts"][0]).split("/")[0]
        assert f"{PROJECT}-web-01" in docs and address in docs and subnet in docs
    assert any("/static/vendor/htmx" in url for url in requests.seen)
    assert any(url.endswith(f"/runs/{run_id}/live") for url in requests.seen)  # the SSE


def step(record: RunRecord, step_id: str) -> Any:
    return next(s for s in record.steps if s.step_id == step_id)


def fetch_page(url: str) -> str:
    assert url.startswith("http://127.0.0.1:"), url  # lab targets only
    with urllib.request.urlopen(url, timeout=15) as response:  # noqa: S310 - loopback lab URL
        return str(response.read().decode())


def edge_bgp_prefixes(inventory: Inventory) -> set[str]:
    from netmiko import ConnectHandler

    edge = inventory.host("edge")
    conn = ConnectHandler(
        device_type="cisco_ios", host=edge.hostname, port=edge.port, username=edge.username,
        key_file=edge.ssh_key_file, use_keys=True, allow_agent=False, timeout=30,
    )  # fmt: skip
    try:
        return set(json.loads(conn.send_command("show ip bgp json")).get("routes", {}))
    finally:
        conn.disconnect()


def vcenter_power(inventory: Inventory, path: str) -> str:
    from pyVim.connect import Disconnect, SmartConnect

    vc = vcenter_config(inventory)
    pwd = inventory.secrets.get(vc.password_secret)
    si = SmartConnect(host=vc.host, port=vc.port, user=vc.username, pwd=pwd, protocol="http")
    try:
        vm = si.content.searchIndex.FindByInventoryPath(path)
        return "absent" if vm is None else str(vm.runtime.powerState)
    finally:
        Disconnect(si)


def test_the_lab_targets_hold_what_the_portal_showed(
    flow: dict[str, Any], inventory: Inventory
) -> None:
    record: RunRecord = flow["run"]
    urls = step(record, "web").outputs["urls"]
    assert len(urls) == 1
    body = fetch_page(urls[0])
    assert f'<strong id="project">{PROJECT}</strong>' in body and TITLE in body
    assert flow["subnet"] in edge_bgp_prefixes(inventory)
    assert vcenter_power(inventory, f"DC0/vm/{PROJECT}/{PROJECT}-web-01") == "poweredOn"


def wait_ended(page: Any) -> str:
    page.wait_for_function(RUN_ENDED)
    return str(page.inner_text("#run-status"))


def test_an_engineer_resumes_a_failed_lab_run_from_the_run_page(
    browser: Any, live: LiveServer, lab: Lab, inventory: Inventory, flow: dict[str, Any]
) -> None:
    lab.stop_router("edge")
    try:
        with live.client(Role.ENGINEER) as http:
            failed_id = submit(http, "pl-network", OTHER)
        failed = live.wait_idle(failed_id, timeout=SLOW)
    finally:
        lab.start_router("edge")
    assert failed["status"] == "failed", failed
    flow["other_run"] = failed_id
    with browser_tab(browser, SLOW * 1000) as (page, _requests):
        login(page, live, "engineer-user")
        page.goto(f"{live.url}/runs/{failed_id}")
        assert wait_ended(page) == "failed"
        failure = page.inner_text("#failure-network")
        assert "edge" in failure and "[unreachable]" in failure, failure  # and its kind
        assert page.locator("#node-vm_folder").get_attribute("data-status") != "success"
        shot(page, "lab-run-failed")
        started = time.monotonic()
        page.click("#resume")
        page.wait_for_url(re.compile(r"/runs/(?!" + re.escape(failed_id) + r")[^/]+$"))
        resumed_id = page.url.rsplit("/", 1)[-1]
        assert wait_ended(page) == "success", page.inner_text("#run-panel")
        assert f"resumes {failed_id}" in page.inner_text("main")
        print(f"resumed run {resumed_id}: {time.monotonic() - started:.1f} s")
    resumed = live.state.engine.store.get_run(resumed_id)
    assert {s.step_id for s in resumed.steps if s.reused} == {"ipam"}
    assert {s.status for s in resumed.steps} == {"success"}
    subnet = step(resumed, "ipam").outputs["subnet"]
    assert subnet in edge_bgp_prefixes(inventory)  # the router really has it now


def test_a_tam_gets_403_on_another_projects_pages(
    browser: Any, live: LiveServer, flow: dict[str, Any]
) -> None:
    with browser_tab(browser) as (page, requests):
        login(page, live, TAM)
        for path in (f"/projects/{OTHER}", f"/runs/{flow['other_run']}"):
            response = page.goto(f"{live.url}{path}")
            assert response is not None and response.status == 403, path
            assert f"not assigned to project '{OTHER}'" in page.inner_text("#error-message")
        shot(page, "lab-403")
        page.goto(f"{live.url}/runs?project={OTHER}")
        assert flow["other_run"] not in page.inner_text("main")
        page.goto(f"{live.url}/projects")
        listed = page.locator("ul.projects a").all_inner_texts()
        assert listed == ([PROJECT] if "run" in flow else []), listed  # never OTHER
    assert all(url.startswith(live.url) for url in requests.seen), requests.seen


def test_the_tab_guard_fails_on_a_request_off_loopback(browser: Any) -> None:
    """The check the tests above rely on: a request for another host is aborted and fails."""
    off_loopback = pytest.raises(AssertionError, match=r"203\.0\.113\.9")  # TEST-NET-3
    with off_loopback, browser_tab(browser) as (page, _requests):
        page.set_content('<img src="http://203.0.113.9/logo.png" alt="">')
        page.wait_for_load_state("networkidle")
