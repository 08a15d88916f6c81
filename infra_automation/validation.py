"""Value constraints shared by requests, catalog parameters and executor inputs.

Anything that can reach a device config, a template or a shell is one of these types.
They refuse newlines, control characters, template syntax ({{ {% {#), config comment and
shell metacharacters by allow-listing what may appear, rather than deny-listing.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

# Letters, digits, space and a few punctuation marks; nothing that opens a new line, a
# comment (!, #), a template ({, %), a shell construct ($, `, ;, |, &, <, >, quotes, \).
SAFE_TEXT_RE = re.compile(r"^[A-Za-z0-9 ._,:/@()+=-]*$")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,38}[a-z0-9]$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")


def _safe_text(value: str) -> str:
    if not SAFE_TEXT_RE.fullmatch(value):
        bad = sorted({c for c in value if not SAFE_TEXT_RE.fullmatch(c)})
        shown = ", ".join(repr(c) for c in bad)
        raise ValueError(f"contains characters that are not allowed: {shown}")
    if value != value.strip():
        raise ValueError("must not start or end with a space")
    return value


def check_safe_text(value: str) -> str:
    """Validate one string; raises ValueError naming the forbidden characters."""
    return _safe_text(value)


SafeText = Annotated[str, StringConstraints(max_length=200), AfterValidator(_safe_text)]
"""Free text that may reach a device, template or shell (descriptions, labels)."""

Name = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
"""Lower-case DNS-label-like name: projects, VMs, folders (2-40 chars, a-z 0-9 -)."""

Hostname = Annotated[str, StringConstraints(pattern=HOSTNAME_RE.pattern)]
