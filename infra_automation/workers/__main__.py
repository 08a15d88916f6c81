"""``python -m infra_automation.workers [--queues ...] [--concurrency N]``: ``infra worker``
without the rest of the CLI (project root: ``$INFRA_ROOT`` or the current directory)."""

from __future__ import annotations

import logging

import typer

from infra_automation.cli.worker import worker_cmd
from infra_automation.config import load_plugins, load_settings


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    load_plugins(load_settings().plugins)
    typer.run(worker_cmd)


if __name__ == "__main__":
    main()
