"""``infra worker --metrics-port``: a real worker process serves Prometheus ``/metrics`` of the
record on 127.0.0.1 only (the server's families and figures), scraped during a run and after
it; without the option a worker listens on nothing; a port in use stops it at start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from engine_helpers import step, write_request, write_service
from prometheus_client.parser import text_string_to_metric_families

from infra_automation.engine import Engine
from infra_automation.metrics.prometheus import exposition
from infra_automation.workers import client
from tests.workers.conftest import Worker, Workers, env_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
LISTEN = "0A"  # the TCP state LISTEN in /proc/net/tcp


def start(workers: Workers, *names: str, metrics_port: int | None = None) -> Worker:
    """A worker process as ``Workers.start`` starts them (stopped by PID with the others)."""
    queues = [workers.queue(n) for n in names]
    log = workers.folder / f"worker-{len(workers.started)}.log"
    cmd = [sys.executable, "-m", "infra_automation.workers", "--queues", ",".join(queues)]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=env_for(workers.root, workers.database_url, workers.ttl),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(proc, log, queues)
    workers.started.append(worker)
    return worker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def listening(pid: int) -> set[tuple[str, int]]:
    """The (address, port) of every TCP socket process ``pid`` listens on (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in inodes:
                address, port = local.split(":")
                found.add((_address(address, family), int(port, 16)))
    return found


def _address(text: str, family: socket.AddressFamily) -> str:
    raw = bytes.fromhex(text)  # /proc/net/tcp*: 32-bit words in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(family, words)


def scrape(port: int) -> tuple[str, str]:
    """The content type and the text of the worker's ``/metrics``."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def samples(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def families(text: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(text)}


def test_a_worker_serves_the_records_metrics_on_localhost(
    engine: Engine, workers: Workers, root: Path
) -> None:
    port = free_port()
    served = start(workers, "runs", "core", metrics_port=port)
    quiet = start(workers, "test")  # no --metrics-port
    workers.wait_ready()
    assert listening(served.pid) == {("127.0.0.1", port)}
    assert listening(quiet.pid) == set()

    content_type, text = scrape(port)
    assert content_type.startswith("text/plain")
    before = samples(text)
    assert before[("infra_queue_depth", ())] == 0
    assert not any(name == "infra_steps" for name, _ in before)  # nothing recorded yet

    write_service(root, "pair", [step("a", "core.sleep", params={"seconds": 1.5}),
                                 step("b", "core.noop", ["a"])])  # fmt: skip
    plan = engine.plan(engine.load_request(write_request(root, "pair", project="shop")))
    run_id = client.submit(engine, plan, docs=False)
    running = ("infra_steps", (("department", "core"), ("status", "running")))
    deadline = time.monotonic() + 30
    while True:  # scraped while the worker runs step a
        during = samples(scrape(port)[1])
        if during.get(running) == 1:
            break
        assert time.monotonic() < deadline, f"{during}\n{workers.dump()}"
        time.sleep(0.1)
    assert during[("infra_runs", (("check", "false"), ("status", "running")))] == 1

    assert not client.follow(engine, run_id).failed
    text = scrape(port)[1]
    after = samples(text)
    assert after[("infra_runs", (("check", "false"), ("status", "success")))] == 1
    assert after[("infra_steps", (("department", "core"), ("status", "success")))] == 2
    core = (("department", "core"),)
    assert after[("infra_step_duration_seconds_count", core)] == 2
    assert 1.5 <= after[("infra_step_duration_seconds_sum", core)] < 10
    assert after[("infra_step_duration_seconds_bucket", (*core, ("le", "1.0")))] == 1  # b
    # the server's /api/v1/metrics of the same record: the same families and figures
    server = exposition(engine.db)[0].decode()
    assert families(text) == families(server) == {
        "infra_runs", "infra_steps", "infra_step_duration_seconds", "infra_incidents_open",
        "infra_queue_depth", "infra_leases_expired",
    }  # fmt: skip
    assert after == samples(server)


def test_a_metrics_port_in_use_stops_the_worker_at_start(workers: Workers) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start(workers, "runs", metrics_port=port)
        assert worker.proc.wait(timeout=60) != 0
    log = worker.log.read_text()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in log, log
    assert " ready." not in log
