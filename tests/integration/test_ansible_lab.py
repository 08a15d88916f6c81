"""The OS / web / backup / monitoring departments against the lab's real Debian hosts.

Every test drives ``os.playbook`` (ansible-runner -> ansible-playbook -> sshd in podman
containers) and checks what changed ON the hosts: the PHP page over HTTP, files and
processes over SSH, the registration file on the controller.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from infra_automation.departments.ansible import PlaybookExecutor, PlaybookParams
from infra_automation.executors.base import RunResources, StepContext
from infra_automation.inventory import Host, Inventory, load_inventory
from infra_automation.lab.base import free_port
from infra_automation.results import Status, StepResult
from infra_automation.secrets import Secrets

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HOSTS = ("debian1", "debian2", "debian3")
PROJECT = "ostest"
RUN = f"t{uuid.uuid4().hex[:8]}"
TITLE = f"ostest {RUN}"  # new in every session: the first apply must change the page
WEB_VARS = {"web_site_title": TITLE, "web_php_version": "8.2"}  # as the catalog passes them
BACKUP_SECRET = "ostest-backup-pw-7f3a9c"  # fixed: the project's repository outlives a session


@pytest.fixture(scope="module")
def inventory(lab: Any) -> Inventory:
    inv = load_inventory(lab.inventory_path)
    missing = [h for h in HOSTS if h not in inv.hosts or not inv.hosts[h].port]
    assert not missing, f"the lab has no running hosts {missing}"
    return inv


@pytest.fixture(scope="module")
def root(lab: Any) -> Path:
    return Path(lab.root)


class Steps:
    """Builds step contexts like the engine does and records the emitted events."""

    def __init__(self, inventory: Inventory, root: Path) -> None:
        self.inventory = inventory
        self.root = root
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.count = 0
        self.resources = RunResources()  # one run: its steps share SSH masters and facts

    def run(
        self,
        params: Mapping[str, Any],
        *,
        targets: tuple[str, ...] = HOSTS,
        check: bool = False,
        secrets: Secrets | None = None,
        inventory: Inventory | None = None,
        department: str = "web",
        project: str = PROJECT,
    ) -> StepResult:
        self.count += 1
        self.events.clear()
        ctx = StepContext(
            run_id=RUN,
            project=project,
            step_id=f"step{self.count}",
            department=department,
            params=PlaybookParams.model_validate(params),
            inventory=inventory or self.inventory,
            check=check,
            targets=targets,
            secrets=secrets or Secrets(env={}),
            emit=lambda kind, data: self.events.append((kind, dict(data))),
            root=self.root,
            resources=self.resources,
        )
        executor = PlaybookExecutor()
        return executor.preview(ctx) if check else executor.apply(ctx)


@pytest.fixture(scope="module")
def steps(inventory: Inventory, root: Path) -> Iterator[Steps]:
    steps = Steps(inventory, root)
    yield steps
    assert steps.resources.close() == []  # as the scheduler does when the run ends


def ssh(host: Host, command: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh", "-i", str(host.ssh_key_file), "-p", str(host.port),
        "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
        f"{user or host.username}@{host.hostname}", command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - a lab URL
        return str(resp.read().decode())


def page_url(host: Host) -> str:
    return f"http://127.0.0.1:{host.data['http_port']}/"


# --- web ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def web_applied(steps: Steps) -> tuple[StepResult, list[tuple[str, dict[str, Any]]]]:
    result = steps.run({"playbook": "web.yml", "vars": WEB_VARS})
    return result, list(steps.events)


def test_web_apply_serves_the_php_page_on_every_host(
    web_applied: tuple[StepResult, list[tuple[str, dict[str, Any]]]], inventory: Inventory
) -> None:
    result, events = web_applied
    assert result.status is Status.SUCCESS, result.error
    assert result.changed
    assert [t.target for t in result.targets] == list(HOSTS)
    proof = hashlib.sha1(f"infra-automation:{TITLE}".encode()).hexdigest()  # noqa: S324
    for name in HOSTS:
        page = fetch(page_url(inventory.hosts[name]))
        assert f"<h1>{TITLE}</h1>" in page
        assert proof in page  # computed by PHP on the host
        assert "(fpm-fcgi)" in page  # served through PHP-FPM
        assert f"on {name}." in page
    # progress was streamed per host and task
    tasks = {(e["host"], e["task"]) for kind, e in events if kind == "task"}
    assert {(h, "Render the landing page") for h in HOSTS} <= tasks


def test_web_outputs_are_read_back_from_the_hosts(
    web_applied: tuple[StepResult, list[tuple[str, dict[str, Any]]]], inventory: Inventory
) -> None:
    result, _ = web_applied
    outputs = result.outputs
    assert outputs["playbook"] == "web.yml"
    for name in HOSTS:
        host = inventory.hosts[name]
        facts = outputs["hosts"][name]
        version = ssh(host, "dpkg-query -W -f '${Version}' nginx").stdout
        assert facts["packages"]["nginx"] == version
        assert facts["services"] == {"nginx": "running", "php8.2-fpm": "running"}
        assert facts["url"] == page_url(host)
        assert facts["facts"]["document_root"] == f"/var/www/{PROJECT}"
        assert facts["stats"]["failed"] == 0 and facts["stats"]["changed"] > 0
        assert (
            ssh(host, "pgrep -x nginx >/dev/null && pgrep -f 'php-fpm: pool ostest'").returncode
            == 0
        )
    assert sorted(outputs["urls"]) == sorted(page_url(inventory.hosts[h]) for h in HOSTS)


def test_second_web_apply_changes_nothing(
    web_applied: tuple[StepResult, Any], steps: Steps
) -> None:
    result = steps.run({"playbook": "web.yml", "vars": WEB_VARS})
    assert result.status is Status.SUCCESS, result.error
    assert not result.changed
    assert all(t.details["stats"]["changed"] == 0 for t in result.targets)
    assert result.diff == ""


def test_check_mode_changes_nothing_and_returns_the_diff(
    web_applied: tuple[StepResult, Any], steps: Steps, inventory: Inventory
) -> None:
    host = inventory.hosts["debian1"]
    before = ssh(host, f"md5sum /var/www/{PROJECT}/index.php").stdout
    result = steps.run(
        {"playbook": "web.yml", "vars": {"web_site_title": "Preview Only"}},
        targets=("debian1",),
        check=True,
    )
    assert result.status is Status.SUCCESS, result.error
    assert result.changed
    assert result.outputs["check"] is True
    assert "TASK [Render the landing page]" in result.diff
    assert f"-$title = '{TITLE}';" in result.diff
    assert "+$title = 'Preview Only';" in result.diff
    assert ssh(host, f"md5sum /var/www/{PROJECT}/index.php").stdout == before
    assert f"<h1>{TITLE}</h1>" in fetch(page_url(host))


LATE_RELOAD = """\
log=/var/log/nginx/{old}.access.log; seen=$(wc -l < "$log"); pid=$(cat /run/nginx.pid)
kill -STOP "$pid"
for i in $(seq 600); do
  [ "$(wc -l < "$log")" -gt "$seen" ] && {{ echo stale > {marker}; break; }}
  sleep 0.1
done
kill -CONT "$pid"
[ -e {marker} ] || echo timeout > {marker}
"""


def test_a_host_that_served_another_project_serves_the_new_one_once_nginx_reloads(
    web_applied: tuple[StepResult, Any], steps: Steps, inventory: Inventory
) -> None:
    """A pool host is handed from one project to the next: the play must check the new
    project's page, not whatever PHP page answers. nginx applies a reload after ``service``
    returns (14-190 ms here); until then its old workers answer with the previous site. Here
    the reload is held back for certain: nginx's master is stopped until the previous site
    has answered the play's check (then the check must try again), as on a busy host."""
    host = inventory.hosts["debian1"]
    other, marker = "ostestnext", "/run/infra-late-reload"
    title = f"Next project {RUN}"
    ssh(host, f"rm -f {marker}")
    script = LATE_RELOAD.format(old=PROJECT, marker=marker)
    started = ssh(host, f"nohup setsid sh -c '{script}' >/dev/null 2>&1 < /dev/null &")
    assert started.returncode == 0, started.stderr
    try:
        result = steps.run(
            {"playbook": "web.yml", "vars": {"web_site_title": title, "web_php_version": "8.2"}},
            targets=("debian1",),
            project=other,
        )
        assert ssh(host, f"cat {marker}").stdout.strip() == "stale"  # the previous site answered
        assert result.status is Status.SUCCESS, result.error
        page = fetch(page_url(host))
        assert f"<h1>{title}</h1>" in page and f'id="project">{other}<' in page
        assert result.outputs["hosts"]["debian1"]["facts"]["site"] == other
    finally:
        ssh(host, "kill -CONT $(cat /run/nginx.pid)")
        ssh(host, f"rm -rf {marker} /etc/php/8.2/fpm/pool.d/{other}.conf /var/www/{other} "
            f"/etc/nginx/sites-*/{other}.conf; /etc/init.d/php8.2-fpm reload")  # fmt: skip
        back = steps.run({"playbook": "web.yml", "vars": WEB_VARS}, targets=("debian1",))
    assert back.status is Status.SUCCESS, back.error  # handed back: the module's project again
    assert f"<h1>{TITLE}</h1>" in fetch(page_url(host))


# --- the report role's read-back ----------------------------------------------------------

READ_BACK_PLAY = """\
- name: Read back
  hosts: all
  gather_facts: false
  roles:
    - role: report
      vars:
        report_packages: [cron, sudo, infra-no-such-package, "bad;name"]
        report_services: [cron, ssh, infra-no-such-service, "../bad"]
"""


def test_the_read_back_reports_versions_and_stopped_services_and_leaves_out_unknowns(
    inventory: Inventory, tmp_path: Path
) -> None:
    """One process on the host reads what package_facts and service_facts read: installed
    versions, running and stopped services; unknown and unsafe names are left out."""
    (tmp_path / "playbooks").mkdir()
    (tmp_path / "playbooks" / "roles").symlink_to(ROOT / "playbooks" / "roles")
    (tmp_path / "playbooks" / "read-back.yml").write_text(READ_BACK_PLAY)
    host = inventory.hosts["debian3"]
    assert ssh(host, "service cron stop").returncode == 0
    steps = Steps(inventory, tmp_path)
    try:
        result = steps.run({"playbook": "read-back.yml"}, targets=("debian3",))
    finally:
        ssh(host, "service cron start")
        assert steps.resources.close() == []
    assert result.status is Status.SUCCESS, result.error
    facts = result.outputs["hosts"]["debian3"]
    versions = ssh(host, "dpkg-query -W -f '${Version} ' cron sudo").stdout.split()
    assert facts["packages"] == dict(zip(["cron", "sudo"], versions, strict=True))
    assert facts["services"] == {"cron": "stopped", "ssh": "running"}
    assert not result.changed and result.diff == ""


# --- failures -----------------------------------------------------------------------------


def test_a_failing_task_fails_the_step_naming_host_task_and_message(steps: Steps) -> None:
    result = steps.run(
        {"playbook": "os-baseline.yml", "vars": {"os_baseline_timezone": "Mars/Olympus"}},
        targets=("debian1",),
        department="os",
    )
    assert result.status is Status.FAILED
    assert result.error is not None
    assert "debian1" in result.error
    assert "Refuse an unknown time zone" in result.error
    assert "unknown time zone Mars/Olympus" in result.error
    (target,) = result.targets
    assert target.failed and target.details["stats"]["failed"] == 1
    assert any(e.get("status") == "failed" for _, e in steps.events)


def test_an_unreachable_host_fails_clearly_while_the_others_complete(
    steps: Steps, inventory: Inventory
) -> None:
    spec = inventory.spec.model_copy(deep=True)
    model = inventory.hosts["debian2"]
    spec.hosts["ghost"] = model.model_copy(update={"name": "ghost", "port": free_port()})
    with_ghost = Inventory(spec, None)
    result = steps.run(
        {"playbook": "os-baseline.yml"},
        targets=("debian2", "ghost"),
        inventory=with_ghost,
        department="os",
    )
    assert result.status is Status.FAILED
    targets = {t.target: t for t in result.targets}
    assert targets["debian2"].status is Status.SUCCESS
    assert targets["ghost"].failed
    assert targets["ghost"].error is not None
    assert targets["ghost"].error.startswith("unreachable: ")
    assert "Connection refused" in targets["ghost"].error
    assert result.error is not None and result.error.startswith("ghost: unreachable")


# --- os baseline on a VM bound through the inventory ----------------------------------------


def test_os_baseline_on_a_bound_vm_sets_hostname_timezone_and_admins(
    steps: Steps, inventory: Inventory, lab: Any
) -> None:
    pub = Path(str(lab.context.ssh_key) + ".pub").read_text().strip()
    vm = f"{PROJECT}-vm1"
    try:
        result = steps.run(
            {
                "playbook": "os-baseline.yml",
                "hosts": [{"name": vm, "ip": "10.20.9.10"}],
                "vars": {
                    "os_baseline_timezone": "Europe/Zurich",
                    "os_baseline_admin_users": [{"name": "alice", "ssh_keys": [pub]}],
                },
            },
            targets=(),
            department="os",
        )
        assert result.status is Status.SUCCESS, result.error
        facts = result.outputs["hosts"][vm]
        bound = inventory.bound_hosts()[vm]  # the host the VM is bound to, whatever the binder
        assert bound.data["bound_to"] == facts["bound_to"]
        assert facts["facts"] == {"hostname": vm, "timezone": "Europe/Zurich", "admins": ["alice"]}
        assert ssh(bound, "cat /etc/hostname; cat /etc/timezone; date +%Z").stdout.split()[:2] == [
            vm,
            "Europe/Zurich",
        ]
        # the admin logs in with the key and may use sudo
        login = ssh(bound, "id -un; sudo -n id -u", user="alice")
        assert login.returncode == 0, login.stderr
        assert login.stdout.split() == ["alice", "0"]
    finally:
        inventory.release_host(vm)
        for name in HOSTS:  # leave the shared hosts as they were
            h = inventory.hosts[name]
            ssh(h, f"printf '%s\\n' {name} > /etc/hostname; userdel -r alice 2>/dev/null; "
                "rm -f /etc/sudoers.d/infra-admins; true")  # fmt: skip


# --- backup with a secret -------------------------------------------------------------------


def test_backup_agent_is_scheduled_and_its_secret_never_leaks(
    steps: Steps, inventory: Inventory, root: Path
) -> None:
    secrets = Secrets(env={"INFRA_SECRET_BACKUP_PASSWORD": BACKUP_SECRET})
    result = steps.run(
        {"playbook": "backup.yml", "secret_vars": {"backup_password": "backup_password"}},
        targets=("debian3",),
        secrets=secrets,
        department="backup",
    )
    assert result.status is Status.SUCCESS, result.error
    host = inventory.hosts["debian3"]
    facts = result.outputs["hosts"]["debian3"]
    assert facts["facts"]["snapshots"] >= 1
    assert facts["services"] == {"cron": "running"}
    listed = ssh(host, "RESTIC_PASSWORD_FILE=/etc/restic/ostest.password "
                       "restic -r /var/backups/restic/ostest snapshots --json")  # fmt: skip
    assert len(json.loads(listed.stdout)) == facts["facts"]["snapshots"]
    cron = ssh(host, "cat /etc/cron.d/infra-backup-ostest").stdout
    assert "30 2 * * * root /usr/local/sbin/infra-backup-ostest" in cron
    assert ssh(host, "stat -c %a /etc/restic/ostest.password").stdout.strip() == "600"
    # the secret reached the host, and nowhere else: not the result, the events, the files
    assert ssh(host, "cat /etc/restic/ostest.password").stdout.strip() == BACKUP_SECRET
    assert BACKUP_SECRET not in repr(result)
    assert BACKUP_SECRET not in repr(steps.events)
    state = root / ".infra" / "ansible"
    mine = [p for p in (state / "jobs").iterdir() if p.name.startswith(f"{os.getpid()}-")]
    assert mine == []  # the step's private dir is gone
    log = Path(result.artifacts["ansible"])
    assert "TASK [backup : Store the repository password]" in log.read_text()
    leaked = [
        p for p in state.rglob("*") if p.is_file() and BACKUP_SECRET.encode() in p.read_bytes()
    ]
    assert leaked == []


# --- monitoring -----------------------------------------------------------------------------


def test_monitoring_agent_runs_and_the_host_is_registered(
    steps: Steps, inventory: Inventory
) -> None:
    result = steps.run(
        {"playbook": "monitoring.yml"}, targets=("debian2",), department="monitoring"
    )
    assert result.status is Status.SUCCESS, result.error
    facts = result.outputs["hosts"]["debian2"]
    assert facts["services"] == {"prometheus-node-exporter": "running"}
    assert facts["facts"]["exporter_version"]
    registration = json.loads(Path(facts["facts"]["registration"]).read_text())
    (entry,) = registration
    assert entry["labels"] == {"project": PROJECT, "host": "debian2"}
    assert entry["targets"] == [facts["facts"]["target"]]
    # the registered target answers from the controller: a scraper could use it
    metrics = fetch(f"http://{entry['targets'][0]}/metrics")
    assert "node_exporter_build_info" in metrics
    again = steps.run({"playbook": "monitoring.yml"}, targets=("debian2",), department="monitoring")
    assert again.status is Status.SUCCESS and not again.changed


@pytest.fixture(autouse=True, scope="module")
def _cleanup_monitoring(root: Path) -> Iterator[None]:
    yield
    (root / ".infra" / "monitoring" / "targets" / "debian2.json").unlink(missing_ok=True)
