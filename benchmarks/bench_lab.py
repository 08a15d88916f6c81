"""How long the lab takes: cold ``up`` (builds included), warm ``up``, repeated ``up``, ``down``.

Run as root from the project root::

    python benchmarks/bench_lab.py                 # warm/reuse/down + parallel-vs-sequential
    python benchmarks/bench_lab.py --cold          # + cold up in a fresh root (vcsim build)
    python benchmarks/bench_lab.py --image         # + the Debian image build (debootstrap)
    python benchmarks/bench_lab.py --cold-image    # cold up that also builds the image

It uses its own instance (``--name``, default ``bench``), never the shared default lab.
``--cold`` runs an instance in a temporary project root, so the vcsim binary is built with
an empty Go cache; the podman image store is shared by the machine, so the Debian image
build is measured on its own (``--image``: debootstrap + import under a throwaway tag),
or ``--cold-image`` builds it inside the cold ``up`` under a throwaway repository name.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from infra_automation.lab import Lab, LabOptions, hosts
from infra_automation.lab.base import LabContext
from infra_automation.lab.hosts import IMAGE_REPO, build_image, image_tag, podman

ROOT = Path(__file__).resolve().parents[1]


def timed(call: Callable[[], object]) -> float:
    t0 = time.monotonic()
    call()
    return time.monotonic() - t0


def warm(name: str, options: LabOptions, rounds: int) -> None:
    figures: dict[str, list[float]] = {"up": [], "up (sequential)": [], "again": [], "down": []}
    parallel, sequential = Lab(ROOT, name, options), Lab(ROOT, name, options, parallel=False)
    parallel.down()
    try:
        for _ in range(rounds):
            figures["up (sequential)"].append(timed(sequential.up))
            figures["down"].append(timed(sequential.down))
            figures["up"].append(timed(parallel.up))
            figures["again"].append(timed(parallel.up))
            figures["down"].append(timed(parallel.down))
    finally:
        parallel.down()
    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"lab {name} {options}: medians of {rounds} rounds")
    print(f"  warm up (caches built, nothing running): {med['up']:6.2f} s")
    print(f"  same, components one after the other:    {med['up (sequential)']:6.2f} s")
    print(f"    parallel / sequential:                 {med['up'] / med['up (sequential)']:6.2f}")
    print(f"  up again (everything running, reused):   {med['again']:6.2f} s")
    print(f"    again / warm up:                       {med['again'] / med['up']:6.2f}")
    print(f"  down:                                    {med['down']:6.2f} s")


def cold(options: LabOptions, fresh_image: bool) -> None:
    if fresh_image:  # a repository of its own: the image the other instances use stays
        hosts.IMAGE_REPO = "localhost/infra-lab-debian-bench"
    try:
        _cold(options)
    finally:
        if fresh_image:
            for tag in (hosts.image_tag(), f"{hosts.IMAGE_REPO}:latest"):
                subprocess.run(["podman", "rmi", tag], capture_output=True, check=False)
            hosts.IMAGE_REPO = IMAGE_REPO


def _cold(options: LabOptions) -> None:
    with tempfile.TemporaryDirectory(prefix="labcold") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # FRR daemons run as user frr: the state dir must be reachable
        (root / "inventories" / "lab").mkdir(parents=True)
        shutil.copy(ROOT / "inventories" / "lab" / "inventory.yml", root / "inventories" / "lab")
        lab = Lab(root, "cold", options)
        timings: dict[str, float] = {}
        try:
            total = timed(lambda: timings.update(lab.up().timings))
        finally:
            down = timed(lab.down)  # before the temporary root disappears
    image = "built" if hosts.IMAGE_REPO != IMAGE_REPO else "already in podman's store"
    print(f"cold up in a fresh project root (vcsim built, Go cache empty; image {image}):")
    for component, seconds in timings.items():
        print(f"  {component:8s} {seconds:6.2f} s")
    print(f"  total    {total:6.2f} s   (down {down:.2f} s)")


def image() -> None:
    with tempfile.TemporaryDirectory(prefix="labimage") as tmp:
        root = Path(tmp)
        ctx = LabContext("imagebench", root, root / ".lab" / "imagebench")
        tag = "localhost/infra-lab-debian:benchmark"
        seconds = timed(lambda: build_image(ctx, tag))
        # build_image also moves ':latest'; point it back at the image the lab uses
        podman(ctx, "tag", image_tag(), f"{IMAGE_REPO}:latest", check=False)
        podman(ctx, "rmi", tag, check=False)
    print(f"Debian image build (debootstrap + podman import): {seconds:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", default="bench")
    parser.add_argument("--routers", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--image", action="store_true")
    parser.add_argument("--cold-image", action="store_true", help="--cold, image built too")
    args = parser.parse_args()
    options = LabOptions(routers=args.routers, hosts=args.hosts)
    if args.rounds:
        warm(args.name, options, args.rounds)
    if args.cold or args.cold_image:
        cold(options, fresh_image=args.cold_image)
    if args.image:
        image()


if __name__ == "__main__":
    main()
