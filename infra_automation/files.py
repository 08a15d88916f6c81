"""Writing files so that a crash never leaves half of one: temp file in the same folder, then
rename. One helper for the run's state files, the lab's generated inventory and secrets, the
docs ledger and pages, and the private inputs of an Ansible run."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` (UTF-8, LF) to ``path`` with ``mode``: a reader sees old or new, never part.

    ``mode=0o600`` for secrets: the temp file is created private (mkstemp), so the secret is
    never readable by others, not even for a moment.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
