"""Which request files changed since a git revision (for CI/CD: apply what a merge changed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra_automation.exceptions import ConfigurationError

REQUEST_SUFFIXES = (".yml", ".yaml")


def changed_requests(root: Path, since: str, folder: str = "requests") -> list[Path]:
    """Request files added or modified between ``since`` and HEAD (deleted files are left out;
    a symbolic link that leads out of ``root`` is an error).

    ``since`` is any git revision (a commit, ``origin/main``, ``HEAD~1``); it is passed to git
    as a single argument after validation, never through a shell.
    """
    if not since or since.startswith("-") or any(c.isspace() for c in since):
        raise ConfigurationError(f"not a git revision: {since!r}")
    argv = [
        "git",
        "-C",
        str(root),
        "diff",
        "--name-only",
        "--relative",  # paths relative to root, also when root is a subfolder of the repo
        "--diff-filter=AMR",
        f"{since}...HEAD",
        "--",
        folder,
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise ConfigurationError(f"git diff against {since!r} failed: {proc.stderr.strip()}")
    names = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    requests = [root / n for n in names if n.endswith(REQUEST_SUFFIXES)]
    for path in requests:
        _refuse_outside(path, root)
    return [p for p in requests if p.is_file()]


def _refuse_outside(path: Path, root: Path) -> None:
    """A committed symlink may point anywhere (``/etc/shadow``, another site's secrets): one
    whose target is outside the project root is refused. Only the link is resolved; the
    target is never opened."""
    if not path.resolve().is_relative_to(root.resolve()):
        shown = path.relative_to(root) if path.is_relative_to(root) else path
        raise ConfigurationError(
            f"{shown} is a symbolic link that leaves the project root: refused, not read"
        )
