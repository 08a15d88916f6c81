"""How long ``infra verify`` takes: the example landscape, and one network step on N routers.

    python benchmarks/verify.py [--name vbench] [--routers 50] [--rounds 3] [--down]

Two lab instances of its own (the shared lab is untouched): ``<name>`` (2 routers, 3 hosts,
vCenter) gets the example landscape applied once; ``<name>n`` (N routers, nothing else)
gets ``ipam.allocate`` + ``network.configure`` on all routers applied once. Then each
project is verified ``--rounds`` times, each round from cold (new engine, new connections),
in-process and recorded like ``infra verify``. Prints each round and the median, against
the targets of issue 15 (landscape <= 10 s, 50 routers <= 15 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from infra_automation.config import load_settings  # noqa: E402
from infra_automation.engine import Engine  # noqa: E402
from infra_automation.lab import Lab  # noqa: E402
from infra_automation.lab.base import LabOptions  # noqa: E402
from infra_automation.verify import Verification  # noqa: E402
from tests.integration.landscape_root import make_root, write_request  # noqa: E402

LANDSCAPE = """\
service: project-landscape
project: bench
requester: bench@example.com
params: {web_vms: 2, vm_size: small}
"""
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


def prepare(lab: Lab, request: str, catalog: str | None = None) -> Path:
    root = make_root(Path(tempfile.mkdtemp(prefix="verify-bench-")) / "root", lab.inventory_path)
    if catalog is not None:
        (root / "catalog").unlink()
        (root / "catalog").mkdir()
        (root / "catalog" / "net-bench.yml").write_text(catalog)
    path = write_request(root, "request", request)
    engine = Engine(load_settings(root, env={}), load_observers=False)
    try:
        began = time.monotonic()
        result = engine.apply(engine.load_request(path))
        failed = {k: r.error for k, r in result.steps.items() if r.error}
        if result.failed:
            raise SystemExit(f"apply failed: {failed}")
        print(f"  applied in {time.monotonic() - began:.1f}s")
    finally:
        engine.close()
    return root


def rounds(root: Path, project: str, count: int) -> list[float]:
    times = []
    for i in range(count):
        engine = Engine(load_settings(root, env={}), load_observers=False)
        try:
            began = time.monotonic()
            report = Verification(engine).run(project)
            times.append(time.monotonic() - began)
        finally:
            engine.close()
        print(f"  round {i + 1}: {times[-1]:.2f}s  {report.state} {report.counts()}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="vbench", help="lab instance name (up to 9 characters)")
    parser.add_argument("--routers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--down", action="store_true", help="take the labs down after")
    parser.add_argument("--no-landscape", action="store_true", help="only the N routers")
    args = parser.parse_args()
    os.environ.setdefault("ANSIBLE_HOME", str(ROOT / ".infra" / "ansible-home"))

    landscape_lab = Lab(ROOT, args.name, LabOptions(routers=2, hosts=3))
    net_lab = Lab(ROOT, f"{args.name}n", LabOptions(routers=args.routers, hosts=0, vcenter=False))
    results = {}
    for title, lab, request, catalog, project in (
        ("landscape (2 routers, vCenter, 2 VMs on 2 hosts)", landscape_lab, LANDSCAPE, None,
         "bench"),
        (f"network on {args.routers} routers", net_lab,
         LANDSCAPE.replace("project-landscape", "net-bench").replace(
             "params: {web_vms: 2, vm_size: small}\n", ""), NETWORK, "bench"),
    ):  # fmt: skip
        if args.no_landscape and lab is landscape_lab:
            continue
        lab.up()
        print(f"{title}: lab {lab.name!r} up")
        root = prepare(lab, request, catalog)
        times = rounds(root, project, args.rounds)
        results[title] = statistics.median(times)
    print()
    for title, median in results.items():
        print(f"verify {title}: median {median:.2f}s")
    print("targets: landscape <= 10 s, 50 routers <= 15 s")
    if args.down:
        landscape_lab.down()
        net_lab.down()


if __name__ == "__main__":
    main()
