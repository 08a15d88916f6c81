"""One of the processes of the lease interleaving test: ``n`` randomized rounds of taking and
giving back leases on a few keys. While a process holds a key it holds a marker file made
with O_EXCL: a second holder at the same moment cannot create it, and counts an overlap.

    python lease_worker.py URL MARKER_DIR SEED N   -> prints {"acquired", "refused", "overlaps"}
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from infra_automation.exceptions import RunLocked
from infra_automation.leases import Leases
from infra_automation.record import open_database

KEYS = ["device:core", "device:edge", "project:shop"]


def _enter(markers: Path, key: str) -> int:
    try:
        os.close(os.open(markers / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return 1
    return 0


def main() -> None:
    url, markers, seed, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    db = open_database(url)
    counts = {"acquired": 0, "refused": 0, "overlaps": 0}
    with Leases(db, run_id=f"worker-{seed}", ttl=30) as leases:
        for _ in range(rounds):
            keys = rng.sample(KEYS, k=rng.choice([1, 1, 2]))
            try:
                if rng.random() < 0.5:
                    leases.acquire_all(keys, timeout=rng.choice([0.0, 0.05]))
                else:
                    for key in sorted(keys):
                        leases.acquire(key)
            except RunLocked:
                counts["refused"] += 1
                leases.release()
                continue
            counts["acquired"] += 1
            counts["overlaps"] += sum(_enter(markers, k) for k in keys)
            time.sleep(rng.uniform(0, 0.003))
            for key in keys:
                (markers / key).unlink(missing_ok=True)
            leases.release(*rng.sample(keys, k=len(keys)))
    db.dispose()
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
