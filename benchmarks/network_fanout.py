"""Fan-out benchmark: the same change pushed to N lab routers by our executor, bare Nornir and
Ansible's own network modules.

    sudo /work/venv/bin/python benchmarks/network_fanout.py [--routers 50] [--rounds 3]

Uses its own lab instance (``bench``, routers only; ``--name`` for another) so the shared lab
is untouched; it is brought up first (reused if it runs). A lab this benchmark started is taken
down at the end, whatever happens (``--keep`` leaves it running); one that ran before is left
as it was (``--down`` takes it down anyway).

Each round, rotating which side goes first, and from cold (new connections):

- *ours*: ``network.configure`` through the executor — read the running config, diff,
  push with error_pattern, verify by reading it back, ``write memory`` and check it, and for
  the edge router the BGP check;
- *bare*: a plain Nornir script (same inventory, same rendered lines, same 20 threads):
  ``netmiko_send_config`` with error_pattern, then ``netmiko_save_config``;
- *ansible*: ``ansible-playbook`` with ``cisco.ios.ios_config`` over
  ``ansible.netcommon.network_cli`` (same rendered lines, forks = the same 20; saved when
  changed), then ``ios_command: show running-config`` and an assert on every line
  (``benchmarks/_ansible_network.py`` says what network_cli needs to drive vtysh). Needs
  PyPI's ``ansible`` package: ``pip install -e '.[bench]'`` (or ``--sides ours,bare``).

After each side, untimed, every router's running config is read back from the router itself
(vtysh in its namespace, not over SSH) and must hold every intended line; then the change is
removed again there (``network.unconfigure``'s removal commands, saved; not timed). A side
that fails (prompt timeouts on a loaded machine) is undone and retried twice, and counted.
Prints the seconds of each round, the median throughput (routers/s) of each side, and the
ratios ours/bare (target >= 0.9) and ours/ansible (target >= 10), with the load average.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _ansible_network as ansible_net  # noqa: E402
from infra_automation.departments.network import (  # noqa: E402
    WORKERS,
    ConfigureExecutor,
    ConfigureParams,
    load_tasks,
    make_plan,
    netmiko_platform,
)
from infra_automation.exceptions import LabError  # noqa: E402
from infra_automation.executors.base import RunResources, StepContext  # noqa: E402
from infra_automation.inventory import Inventory, load_inventory  # noqa: E402
from infra_automation.lab import Lab  # noqa: E402
from infra_automation.lab.base import LabOptions  # noqa: E402
from infra_automation.lab.routers import Routers  # noqa: E402
from infra_automation.record import open_database  # noqa: E402
from infra_automation.results import Status  # noqa: E402

PARAMS = ConfigureParams(vlan_id=3999, subnet="10.99.0.0/24", gateway="10.99.0.1")
SIDES = ("ours", "bare", "ansible")
TARGETS = {"bare": 0.9, "ansible": 10.0}  # ours / side, from issue #20
RETRIES = 2  # a side or an undo failing (prompt timeouts on a loaded machine) is tried again


# Nornir logs each failed host's traceback; a failure is reported (and retried) here instead.
logging.getLogger("nornir").setLevel(logging.CRITICAL)


class Failed(Exception):
    """A side's push or an undo did not succeed on every router (retried, then fatal)."""


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
        raise Failed(f"ours: {result.status} {changed}/{len(devices)} changed: {result.error}")


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
        raise Failed(f"bare: failed hosts {sorted(result.failed_hosts)}")


def ansible_routers(
    inventory: Inventory, devices: list[str], intended: dict[str, str]
) -> list[ansible_net.Router]:
    routers = []
    for name in devices:
        h = inventory.host(name)
        if h.hostname is None or h.port is None or h.username is None or not h.ssh_key_file:
            raise SystemExit(f"router {name}: hostname, port, username and ssh_key_file needed")
        routers.append(
            ansible_net.Router(
                name, h.hostname, h.port, h.username, str(h.ssh_key_file), intended[name]
            )
        )
    return routers


def ansible(folder: Path, devices: list[str]) -> None:
    """``ansible-playbook`` with cisco.ios.ios_config over network_cli (project in ``folder``)."""
    outcome = ansible_net.run(folder)
    if outcome.rc != 0 or outcome.failed():
        errors = "; ".join(f"{h}: {e}" for h, e in sorted(outcome.errors.items())[:5])
        raise Failed(
            f"ansible: rc {outcome.rc}, failed {outcome.failed()}: {errors}\n{outcome.output}"
        )
    if outcome.changed() != sorted(devices):
        unchanged = sorted(set(devices) - set(outcome.changed()))
        raise Failed(f"ansible: routers not changed: {unchanged}")
    left = list((folder / "pc").glob("*")) if (folder / "pc").is_dir() else []
    if left:
        raise Failed(f"ansible: persistent connections left open: {len(left)}")


def lab_routers(lab: Lab) -> Routers:
    routers = lab.component("routers")
    assert isinstance(routers, Routers)
    return routers


def on_routers(fn: Callable[[str], str], devices: list[str]) -> dict[str, str]:
    """``fn`` on every router (8 threads); the routers for which it returned a problem."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        problems = dict(zip(devices, pool.map(fn, devices), strict=True))
    return {name: problem for name, problem in problems.items() if problem}


def read_back(lab: Lab, devices: list[str], intended: dict[str, str], side: str) -> None:
    """Each router's running config, read in its namespace, holds every intended line."""
    routers, ctx, missing = lab_routers(lab), lab.context, load_tasks(ROOT).missing

    def lacking(name: str) -> str:
        return str(missing(intended[name], routers.vtysh(ctx, name, "show running-config")))

    if bad := on_routers(lacking, devices):
        first = min(bad)
        raise SystemExit(f"{side}: {len(bad)} routers lack the change, {first}:\n{bad[first]}")


def undo(lab: Lab, devices: list[str], intended: dict[str, str]) -> None:
    """Remove the change again, in each router's namespace (vtysh, not over SSH), and save.

    Untimed cleanup between sides: the same removal commands as ``network.unconfigure``
    (tasks/network.py), without 50 SSH logins that a loaded machine turns into timeouts."""
    routers, ctx, tasks = lab_routers(lab), lab.context, load_tasks(ROOT)

    def remove(name: str) -> str:
        before = routers.vtysh(ctx, name, "show running-config")
        present = tasks.present_lines(intended[name], before)
        if present:
            commands = tasks.removal_commands(present, tasks._subtract(before, present))
            routers.vtysh(ctx, name, "configure terminal", *commands, "end", "write memory")
        after = routers.vtysh(ctx, name, "show running-config")
        return str(tasks.present_lines(intended[name], after))

    try:
        left = on_routers(remove, devices)
    except LabError as exc:
        raise Failed(f"undo failed: {exc}") from exc
    if left:
        first = min(left)
        raise Failed(f"undo failed: {len(left)} routers keep lines, {first}:\n{left[first]}")


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def retried(fn: Callable[[], Any], what: str, before: Callable[[], Any] = lambda: None) -> int:
    """Run ``fn`` until it succeeds (``before`` first on each retry); how many retries."""
    for attempt in range(RETRIES + 1):
        try:
            if attempt:
                before()
            fn()
            return attempt
        except Failed as exc:
            if attempt == RETRIES:
                raise
            print(f"  {what} failed, retried: {str(exc).splitlines()[0][:300]}")
    raise AssertionError("unreachable")


def measure(fn: Callable[[], Any], what: str, before: Callable[[], Any]) -> tuple[float, int]:
    """Seconds of the try of ``fn`` that succeeded, and how many were retried."""
    took: list[float] = []
    again = retried(lambda: took.append(timed(fn)), what, before)
    return took[-1], again


def parse_sides(text: str) -> list[str]:
    sides = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown or "ours" not in sides:
        raise argparse.ArgumentTypeError(
            f"--sides: {text!r}: give 'ours' and any of {', '.join(SIDES[1:])}"
        )
    return sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--name", default="bench", help="lab instance name")
    parser.add_argument("--keep", action="store_true", help="leave a lab started here running")
    parser.add_argument("--down", action="store_true", help="take the lab down, even one reused")
    parser.add_argument(
        "--sides", type=parse_sides, default=list(SIDES), help="comma-separated, 'ours' first"
    )
    args = parser.parse_args()
    if "ansible" in args.sides and (gone := ansible_net.missing_collections()):
        parser.exit(2, f"--sides ansible: {', '.join(gone)} missing: pip install -e '.[bench]'\n")

    lab = Lab(ROOT, args.name, LabOptions(routers=args.routers, hosts=0, vcenter=False))
    started = not lab.status().up
    try:
        run(lab, args)
    except Failed as exc:
        raise SystemExit(f"failed after {RETRIES} retries: {exc}") from exc
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
    folder = Path(LOCKS_DIR) / "ansible"
    ansible_net.write_project(folder, ansible_routers(inventory, devices, intended), WORKERS)

    def clean() -> None:
        retried(lambda: undo(lab, devices, intended), "undo")

    clean()
    sides: list[str] = args.sides
    times: dict[str, list[float]] = {side: [] for side in sides}
    retries = dict.fromkeys(sides, 0)
    runners = {
        "ours": lambda: ours(inventory, devices),
        "bare": lambda: bare(inventory, devices, intended),
        "ansible": lambda: ansible(folder, devices),
    }
    for i in range(args.rounds):
        for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
            seconds, again = measure(runners[side], side, clean)
            times[side].append(seconds)
            retries[side] += again
            read_back(lab, devices, intended, side)
            clean()
        print(f"round {i + 1}: " + "  ".join(f"{s} {times[s][-1]:.2f}s" for s in sides))
    report(times, len(devices), args.rounds)
    print("retried rounds: " + ", ".join(f"{s} {n}" for s, n in retries.items()))


def report(times: dict[str, list[float]], routers: int, rounds: int) -> None:
    rate = {side: routers / statistics.median(t) for side, t in times.items()}
    names = {"ours": "ours", "bare": "bare Nornir", "ansible": "Ansible network_cli"}
    print(
        f"throughput (median of {rounds}): "
        + ", ".join(f"{names[s]} {r:.1f} routers/s" for s, r in rate.items())
    )
    for side, target in TARGETS.items():
        if side in rate:
            ratio = rate["ours"] / rate[side]
            print(f"ratio ours/{side}: {ratio:.2f} (target >= {target:g})")
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
