"""The example landscape built by two real workers on the lab, with real Redis and PostgreSQL:
``infra apply`` submits it and follows it from the record; the network, VMware and docs steps
run on the worker serving the ``infra`` queue, the Ansible steps on the one serving ``hosts``
(read from the record); the edge learns the project prefix, vCenter shows the VMs and each web
host serves the project's page (read from the targets).

Needs the lab instance ``$INFRA_LAB_NAME`` (default ``lab``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from db_backends import database

from infra_automation.lab import Lab
from infra_automation.record import RunStore, open_database
from tests.integration.landscape_root import make_root, write_request
from tests.workers.conftest import Workers, redis_url

pytestmark = pytest.mark.lab

PROJECT = "wkshop"
REQUEST = f"""\
service: project-landscape
project: {PROJECT}
requester: ci-pipeline
params:
  web_vms: 2
  vm_size: small
  site_title: Built by workers
"""
DECOMMISSION = f"service: project-decommission\nproject: {PROJECT}\nrequester: ci-pipeline\n"
QUEUE_OF = {
    "network": "infra",
    "vmware": "infra",
    "docs": "infra",
    "os": "hosts",
    "web": "hosts",
    "backup": "hosts",
    "monitoring": "hosts",
    "security": "infra",  # the decommission's firewall and ACL removal
    "dba": "hosts",
    "containers": "hosts",  # the project's app in podman on the web VMs
    "core": "infra",  # project-scale's read of the build (workers map every department)
}


def infra(
    root: Path, url: str, *args: str, broker: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "INFRA_DATABASE_URL": url,
        "ANSIBLE_HOME": str(root / ".infra" / "ansible-home"),
    }
    env.pop("INFRA_BROKER_URL", None)
    if broker:
        env["INFRA_BROKER_URL"] = redis_url()
    argv = [sys.executable, "-m", "infra_automation.cli", "--root", str(root), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env, check=False)


@pytest.fixture
def root(lab: Lab, tmp_path: Path) -> Path:
    base = make_root(tmp_path / "root", lab.inventory_path)
    tag = uuid.uuid4().hex[:8]
    queues = "".join(f'{dept} = "{tag}-{queue}"\n' for dept, queue in QUEUE_OF.items())
    toml = base / "infra.toml"
    toml.write_text(toml.read_text() + f'scheduler_queue = "{tag}-runs"\n[queues]\n{queues}')
    write_request(base, "request", REQUEST)
    write_request(base, "decommission", DECOMMISSION)
    return base


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with database("postgresql", tmp_path) as found:
        yield found


def test_two_workers_build_the_landscape_each_step_on_its_queue(
    root: Path, url: str, tmp_path: Path
) -> None:
    workers = Workers(root, url, tmp_path, ttl=10)
    try:
        infra_worker = workers.start("runs", "infra", concurrency=2)
        hosts_worker = workers.start("hosts", concurrency=3)
        workers.wait_ready()
        done = infra(root, url, "apply", str(root / "request.yml"), "--output", "json")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads(done.stdout)

        run = RunStore(open_database(url)).get_run(result["run_id"])
        assert run.status == "success"
        pid = {"infra": infra_worker.pid, "hosts": hosts_worker.pid}
        for step in run.steps:
            queue = QUEUE_OF[step.department]
            assert step.queue == workers.queue(queue), (step.step_id, step.queue)
            assert step.worker and int(step.worker.rsplit(":", 1)[1]) == pid[queue], step.step_id
        for site in result["outputs"]["site_urls"]:  # read from the web hosts themselves
            assert site.startswith("http://127.0.0.1:"), site
            with urllib.request.urlopen(site, timeout=15) as page:  # noqa: S310 - the lab
                body = page.read().decode()
            assert PROJECT in body and "Built by workers" in body
    finally:
        down = infra(root, url, "apply", str(root / "decommission.yml"), "--output", "json")
        workers.stop()
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
