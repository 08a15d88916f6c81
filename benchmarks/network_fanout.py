"""Fan-out benchmark: the same change pushed to N lab routers, our executor vs bare Nornir.

    sudo /work/venv/bin/python benchmarks/network_fanout.py [--routers 50] [--rounds 3]

Uses its own lab instance (``bench``, routers only) so the shared lab is untouched; it is
brought up first (reused if it runs). A lab this benchmark started is taken down at the end,
whatever happens (``--keep`` leaves it running); one that ran before is left as it was
(``--down`` takes it down anyway).

Each round, alternating which side goes first, and from cold (new connections):

- *ours*: ``network.configure`` through the executor — read the running config, diff,
  push with error_pattern, verify by reading it back, ``write memory`` and check it, and for
  the edge router the BGP check;
- *bare*: a plain Nornir script (same inventory, same rendered lines, same 20 threads):
  ``netmiko_send_config`` with error_pattern, then ``netmiko_save_config``.

Between rounds the change is removed again (``network.unconfigure``, not timed). Prints
the seconds of each round, the median throughput (routers/s) of each side, and the ratio
ours/bare (target >= 0.9).
"""

from __future__ import annotations

import argparse
import atexit
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra_automation.departments.network import (  # noqa: E402
    WORKERS,
    ConfigureExecutor,
    ConfigureParams,
    UnconfigureExecutor,
    make_plan,
    netmiko_platform,
)
from infra_automation.executors.base import RunResources, StepContext  # noqa: E402
from infra_automation.inventory import Inventory, load_inventory  # noqa: E402
from infra_automation.lab import Lab  # noqa: E402
from infra_automation.lab.base import LabOptions  # noqa: E402
from infra_automation.record import open_database  # noqa: E402
from infra_automation.results import Status  # noqa: E402

PARAMS = ConfigureParams(vlan_id=3999, subnet="10.99.0.0/24", gateway="10.99.0.1")


# The device locks are leases in a run record: a throw-away SQLite one, removed at exit.
LOCKS_DIR = tempfile.mkdtemp(prefix="bench-fanout-")
atexit.register(shutil.rmtree, LOCKS_DIR, True)
LOCKS = open_database(f"sqlite:///{LOCKS_DIR}/locks.db")


def step(inventory: Inventory, resources: RunResources, devices: list[str]) -> StepContext:
    return StepContext(
        run_id="bench",
        project="bench",
        step_id="network",
        department="network",
        params=PARAMS.model_copy(update={"devices": devices}),
        inventory=inventory,
        resources=resources,
        root=ROOT,
        db=LOCKS,
    )


def ours(inventory: Inventory, devices: list[str]) -> None:
    resources = RunResources()
    try:
        result = ConfigureExecutor().apply(step(inventory, resources, devices))
    finally:
        resources.close()
    changed = sum(t.changed for t in result.targets)
    if result.status is not Status.SUCCESS or changed != len(devices):
        raise SystemExit(f"ours: {result.status} {changed}/{len(devices)} changed: {result.error}")


def bare(inventory: Inventory, devices: list[str], intended: dict[str, str]) -> None:
    """What a hand-written Nornir script does: build, connect, push, save."""
    from nornir.core import Nornir
    from nornir.core.configuration import Config
    from nornir.core.inventory import ConnectionOptions, Defaults, Groups, Host, Hosts
    from nornir.core.inventory import Inventory as NornirInventory
    from nornir.core.plugins.connections import ConnectionPluginRegister
    from nornir.core.task import Result, Task
    from nornir.plugins.runners import ThreadedRunner
    from nornir_netmiko.tasks import netmiko_save_config, netmiko_send_config

    ConnectionPluginRegister.auto_register()
    hosts = Hosts()
    for name in devices:
        h = inventory.host(name)
        extras = {"use_keys": True, "key_file": h.ssh_key_file, "allow_agent": False}
        hosts[name] = Host(
            name=name,
            hostname=h.hostname,
            port=h.port,
            username=h.username,
            platform=netmiko_platform(h.platform),
            connection_options={"netmiko": ConnectionOptions(extras=extras)},
        )
    nr = Nornir(
        inventory=NornirInventory(hosts=hosts, groups=Groups(), defaults=Defaults()),
        runner=ThreadedRunner(num_workers=WORKERS),
        config=Config(),
    )

    def push(task: Task) -> Result:
        lines = [x.strip() for x in intended[task.host.name].splitlines() if x.strip()]
        task.run(task=netmiko_send_config, config_commands=lines, error_pattern=r"^%")
        task.run(task=netmiko_save_config)
        return Result(host=task.host)

    try:
        result = nr.run(task=push)
    finally:
        nr.close_connections()
    if result.failed:
        raise SystemExit(f"bare: failed hosts {sorted(result.failed_hosts)}")


def undo(inventory: Inventory, devices: list[str]) -> None:
    resources = RunResources()
    try:
        result = UnconfigureExecutor().apply(step(inventory, resources, devices))
    finally:
        resources.close()
    if result.status is not Status.SUCCESS:
        raise SystemExit(f"undo failed: {result.error}")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="bench", help="lab instance name")
    parser.add_argument("--keep", action="store_true", help="leave a lab started here running")
    parser.add_argument("--down", action="store_true", help="take the lab down, even one reused")
    args = parser.parse_args()

    lab = Lab(ROOT, args.name, LabOptions(routers=args.routers, hosts=0, vcenter=False))
    started = not lab.status().up
    try:
        run(lab, args)
    finally:
        if args.down or (started and not args.keep):
            lab.down()
            print(f"lab {args.name!r} taken down")


def run(lab: Lab, args: argparse.Namespace) -> None:
    up = timed(lab.up)
    inventory = load_inventory(lab.inventory_path)
    devices = inventory.select(group="routers")
    intended = make_plan(step(inventory, RunResources(), devices)).intended
    print(f"lab {args.name!r}: {len(devices)} routers up in {up:.1f}s")
    undo(inventory, devices)

    times: dict[str, list[float]] = {"ours": [], "bare": []}
    runners = {
        "ours": lambda: ours(inventory, devices),
        "bare": lambda: bare(inventory, devices, intended),
    }
    for i in range(args.rounds):
        order = ["ours", "bare"] if i % 2 == 0 else ["bare", "ours"]
        for side in order:
            times[side].append(timed(runners[side]))
            undo(inventory, devices)
        print(f"round {i + 1}: ours {times['ours'][-1]:.2f}s  bare {times['bare'][-1]:.2f}s")

    rate = {side: len(devices) / statistics.median(t) for side, t in times.items()}
    print(
        f"throughput (median of {args.rounds}): ours {rate['ours']:.1f} routers/s, "
        f"bare Nornir {rate['bare']:.1f} routers/s"
    )
    print(f"ratio ours/bare: {rate['ours'] / rate['bare']:.2f} (target >= 0.9)")


if __name__ == "__main__":
    main()
