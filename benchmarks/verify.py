"""How long infra verify takes, next to infra apply --check: the landscape, and N routers.

The example landscape's verify against ``infra apply --check`` of the same project, and the
verify of one network step on N routers.

    INFRA_LAB_NAME=hf .venv/bin/python benchmarks/verify.py [--part landscape|routers|both]
        [--routers 50] [--rounds 3] [--keep]

Lab instances of its own (default ``$INFRA_LAB_NAME``, else ``vbench``; the default lab is
never used): ``<name>`` (2 routers, 3 hosts, vCenter) and, for the routers part, ``<name>n``
(N routers, nothing else). An instance that is already up and healthy is reused and left
running; one the benchmark starts is taken down at the end unless ``--keep``.

- **landscape**: ``requests/example-landscape.yml`` (project ``shop``) is applied once, then
  each round, in this one process and each from cold (a new engine, new connections, docs
  observers loaded as the CLI loads them): ``infra verify --project shop`` (recorded), then
  ``infra apply --check`` of the same request. Prints both times per round, the medians and
  their ratio: verify reads facts, the dry run runs every play in check mode (issue 15:
  57-100 s for the dry run; verify <= 10 s).
- **routers**: ``ipam.allocate`` + ``network.configure`` on every router, then verify
  (issue 15: 50 routers <= 15 s).

Everything it applied is decommissioned at the end (``project-decommission``; the routers'
lines and the allocation for the routers part), and its throwaway project roots (the
repository's catalog, templates, playbooks linked in) are removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra_automation.config import load_settings  # noqa: E402
from infra_automation.engine import Engine, load_entry_point_observers  # noqa: E402
from infra_automation.lab import Lab  # noqa: E402
from infra_automation.lab.base import LabOptions  # noqa: E402
from infra_automation.verify import Verification  # noqa: E402
from tests.integration.landscape_root import make_root, write_request  # noqa: E402

PROJECT = "shop"  # the example request's project
LANDSCAPE_TARGET, ROUTERS_TARGET = 10.0, 15.0  # seconds (issue 15)
NETWORK = """\
name: net-bench
description: A project's network on every router
owner: network-team
steps:
  - id: ipam
    executor: ipam.allocate
    params: {hosts: 2}
  - id: network
    executor: network.configure
    needs: [ipam]
    targets: {group: routers}
    params:
      vlan_id: "{{ steps.ipam.outputs.vlan_id }}"
      subnet: "{{ steps.ipam.outputs.subnet }}"
      gateway: "{{ steps.ipam.outputs.gateway }}"
"""
NETWORK_DOWN = """\
name: net-bench-decommission
description: The project's network off every router
owner: network-team
steps:
  - id: lookup
    executor: ipam.lookup
  - id: network
    executor: network.unconfigure
    needs: [lookup]
    targets: {group: routers}
    params:
      vlan_id: "{{ steps.lookup.outputs.vlan_id }}"
      subnet: "{{ steps.lookup.outputs.subnet }}"
      gateway: "{{ steps.lookup.outputs.gateway }}"
  - id: release
    executor: ipam.release
    needs: [network]
"""
NET_REQUEST = f"service: net-bench\nproject: {PROJECT}\nrequester: bench@example.com\n"


@contextmanager
def lab_instance(name: str, options: LabOptions, keep: bool) -> Iterator[Lab]:
    """The instance, up; taken down afterwards only if this process started it."""
    lab = Lab(ROOT, name, options)
    lease = lab.acquire()
    try:
        yield lab
    finally:
        print(f"lab {name!r}: {lab.release(lease, keep=keep)}")


@contextmanager
def project_root(lab: Lab) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="verify-bench-"))
    try:
        yield make_root(base / "root", lab.inventory_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def engine_for(root: Path, *, docs: bool) -> Engine:
    return Engine(load_settings(root, env={}), load_observers=docs)


CLEANUP_FAILED: list[str] = []


def apply(root: Path, request: Path, *, what: str, cleanup: bool = False) -> float:
    """Apply ``request``; a failure ends the benchmark, or for a ``cleanup`` is reported (the
    figures are still printed, the exit code is 1)."""
    engine = engine_for(root, docs=False)
    try:
        began = time.monotonic()
        result = engine.apply(engine.load_request(request))
        took = time.monotonic() - began
    finally:
        engine.close()
    if result.failed:
        failed = {k: r.error for k, r in result.steps.items() if r.error}
        if not cleanup:
            raise SystemExit(f"{what} failed: {failed}")
        CLEANUP_FAILED.append(f"{what} ({result.run_id}): {failed}")
        print(f"  {what} FAILED in {took:.1f} s: {failed}")
        return took
    print(f"  {what} in {took:.1f} s")
    return took


def timed_verify(root: Path) -> tuple[float, str]:
    """``infra verify --project shop``: recorded, the docs observers as the CLI loads them."""
    engine = engine_for(root, docs=False)
    try:
        observers = [o for _, o, _ in load_entry_point_observers(root, engine.db) if o]
        began = time.monotonic()
        report = Verification(engine, observers=observers).run(PROJECT)
        took = time.monotonic() - began
    finally:
        engine.close()
    counts = ", ".join(f"{n} {s}" for s, n in report.counts().items() if n)
    return took, f"{report.state} ({counts})"


def timed_check(root: Path, request: Path) -> tuple[float, str]:
    """``infra apply --check`` of the request: a dry run, docs observers loaded."""
    engine = engine_for(root, docs=True)
    try:
        began = time.monotonic()
        result = engine.apply(engine.load_request(request), check=True)
        took = time.monotonic() - began
    finally:
        engine.close()
    state = "failed" if result.failed else "success"
    changed = sum(1 for r in result.steps.values() if r.changed)
    return took, f"{state} ({len(result.steps)} steps, {changed} would change)"


def landscape(args: argparse.Namespace) -> dict[str, float]:
    with (
        lab_instance(args.name, LabOptions(routers=2, hosts=3), args.keep) as lab,
        project_root(lab) as root,
    ):
        print(f"landscape: lab {lab.name!r}, requests/example-landscape.yml (project {PROJECT})")
        request = root / "requests" / "example-landscape.yml"
        apply(root, request, what="applied")
        try:
            verify_times, check_times = [], []
            for i in range(args.rounds):
                v, v_state = timed_verify(root)
                c, c_state = timed_check(root, request)
                verify_times.append(v)
                check_times.append(c)
                print(f"  round {i + 1}: verify {v:6.2f} s {v_state}")
                print(f"           apply --check {c:6.2f} s {c_state}")
        finally:
            down = root / "requests" / "example-decommission.yml"
            apply(root, down, what="decommissioned", cleanup=True)
    return {"verify": statistics.median(verify_times), "check": statistics.median(check_times)}


def routers(args: argparse.Namespace) -> float:
    options = LabOptions(routers=args.routers, hosts=0, vcenter=False)
    with lab_instance(f"{args.name}n", options, args.keep) as lab, project_root(lab) as root:
        print(f"network on {args.routers} routers: lab {lab.name!r}")
        (root / "catalog").unlink()
        (root / "catalog").mkdir()
        (root / "catalog" / "net-bench.yml").write_text(NETWORK)
        (root / "catalog" / "net-bench-decommission.yml").write_text(NETWORK_DOWN)
        apply(root, write_request(root, "request", NET_REQUEST), what="applied")
        try:
            times = []
            for i in range(args.rounds):
                took, state = timed_verify(root)
                times.append(took)
                print(f"  round {i + 1}: verify {took:6.2f} s {state}")
        finally:
            down = NET_REQUEST.replace("net-bench", "net-bench-decommission")
            request = write_request(root, "decommission", down)
            apply(root, request, what="decommissioned", cleanup=True)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    default_name = os.environ.get("INFRA_LAB_NAME") or "vbench"
    parser.add_argument("--name", default=default_name, help="lab instance (up to 9 characters)")
    parser.add_argument("--part", choices=("landscape", "routers", "both"), default="both")
    parser.add_argument("--routers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the labs this run starts")
    args = parser.parse_args()
    if args.name == "lab":
        parser.error("--name: the default lab is not for benchmarks; name an instance")
    os.environ.setdefault("ANSIBLE_HOME", str(ROOT / ".infra" / "ansible-home"))

    lines: list[str] = []
    parts: list[Callable[[], None]] = []
    if args.part in ("landscape", "both"):

        def run_landscape() -> None:
            found = landscape(args)
            v, c = found["verify"], found["check"]
            target = f"(target <= {LANDSCAPE_TARGET:.0f} s)"
            lines.append(f"landscape verify         median {v:6.2f} s  {target}")
            lines.append(f"landscape apply --check  median {c:6.2f} s")
            lines.append(f"apply --check / verify   {c / v:6.1f}x")

        parts.append(run_landscape)
    if args.part in ("routers", "both"):

        def run_routers() -> None:
            median = routers(args)
            lines.append(
                f"verify {args.routers} routers        median {median:6.2f} s"
                f"  (target <= {ROUTERS_TARGET:.0f} s for 50)"
            )

        parts.append(run_routers)
    for part in parts:
        part()
    print()
    print("\n".join(lines))
    if CLEANUP_FAILED:
        print("cleanup failed, see above: " + "; ".join(CLEANUP_FAILED))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
