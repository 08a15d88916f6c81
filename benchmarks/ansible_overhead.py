"""Overhead of the os.playbook executor over bare ``ansible-playbook``, same play, one process.

Runs ``playbooks/web.yml`` on the lab's Debian hosts (idempotent re-runs after one warm-up
apply), alternating: our executor (ansible-runner, event streaming, inventory and secrets
handling, read-back outputs) and ``ansible-playbook`` started directly with the same
inventory, variables and environment. Prints the medians and their ratio (target <= 1.10).

    python benchmarks/ansible_overhead.py [--rounds 3] [--inventory inventories/lab]

Needs the lab up (``infra lab up``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from infra_automation.departments.ansible import (
    PlaybookExecutor,
    PlaybookParams,
    ansible_env,
    ansible_playbook,
    build_inventory,
)
from infra_automation.executors.base import StepContext
from infra_automation.inventory import Inventory, load_inventory
from infra_automation.results import Status

ROOT = Path(__file__).resolve().parents[1]
HOSTS = ("debian1", "debian2", "debian3")
PROJECT = "bench"
VARS = {"web_site_title": "ansible overhead benchmark"}


def run_executor(inventory: Inventory, run_id: str, step: int) -> float:
    ctx = StepContext(
        run_id=run_id,
        project=PROJECT,
        step_id=f"web{step}",
        department="web",
        params=PlaybookParams(playbook="web.yml", vars=VARS),  # type: ignore[arg-type]
        inventory=inventory,
        targets=HOSTS,
        root=ROOT,
    )
    start = time.perf_counter()
    result = PlaybookExecutor().apply(ctx)
    elapsed = time.perf_counter() - start
    if result.status is not Status.SUCCESS:
        raise SystemExit(f"executor run failed: {result.error}")
    return elapsed


def run_bare(inventory: Inventory, workdir: Path) -> float:
    playbook = ROOT / "playbooks" / "web.yml"
    binary = ansible_playbook()
    inv = workdir / "hosts.json"
    inv.write_text(json.dumps(build_inventory({h: inventory.hosts[h] for h in HOSTS}, set())))
    extravars = workdir / "extravars.json"
    extravars.write_text(json.dumps({**VARS, "infra_project": PROJECT}))
    home = ROOT / ".infra" / "ansible" / "home"
    env = {**os.environ, **ansible_env(binary, playbook, home)}
    argv = [str(binary), "-i", str(inv), "-e", f"@{extravars}", "--diff", str(playbook)]
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"bare ansible-playbook failed: {proc.stdout[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inventory", type=Path, default=ROOT / "inventories" / "lab")
    args = parser.parse_args()
    inventory = load_inventory(args.inventory)
    run_id = f"bench-{int(time.time())}"
    print(f"warm-up apply of web.yml on {', '.join(HOSTS)} ...")
    print(f"  warm-up: {run_executor(inventory, run_id, 0):.2f}s")
    ours: list[float] = []
    bare: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.rounds + 1):
            ours.append(run_executor(inventory, run_id, i))
            bare.append(run_bare(inventory, Path(tmp)))
            print(f"  round {i}: executor {ours[-1]:.2f}s  bare ansible-playbook {bare[-1]:.2f}s")
    mo, mb = statistics.median(ours), statistics.median(bare)
    print(f"median executor {mo:.2f}s, bare {mb:.2f}s, ratio {mo / mb:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
