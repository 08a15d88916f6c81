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

# Names people choose (projects, folders, portgroups) are at most NAME_MAX long; names derived
# from them (a VM is ``<project>-<role>-NN``, also its host name) are DNS labels of at most
# HOST_LABEL_MAX (RFC 1123). A role is short enough that every valid project, role and number
# (up to 99) make a valid host label: the type of derived names is wide enough by construction.
NAME_MAX = 40
HOST_LABEL_MAX = 63
ROLE_MAX = HOST_LABEL_MAX - NAME_MAX - len("-") - len("-NN")  # 19
NAME_RE = re.compile(rf"^[a-z][a-z0-9-]{{0,{NAME_MAX - 2}}}[a-z0-9]$")
HOST_LABEL_RE = re.compile(rf"^[a-z][a-z0-9-]{{0,{HOST_LABEL_MAX - 2}}}[a-z0-9]$")
ROLE_RE = re.compile(rf"^[a-z][a-z0-9-]{{0,{ROLE_MAX - 2}}}[a-z0-9]$")
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
"""Lower-case DNS-label-like name: projects, folders, portgroups (2-40 chars, a-z 0-9 -)."""

HostLabel = Annotated[str, StringConstraints(pattern=HOST_LABEL_RE.pattern)]
"""A name derived from a project: VM and host names (2-63 chars, a-z 0-9 -, RFC 1123 label)."""

Role = Annotated[str, StringConstraints(pattern=ROLE_RE.pattern)]
"""The role part of a VM name (web, db: 2-19 chars), short enough for any project name."""

Hostname = Annotated[str, StringConstraints(pattern=HOSTNAME_RE.pattern)]
