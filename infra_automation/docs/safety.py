"""Keeping secrets out of the docs, and Markdown escaping for values read from targets.

Every value that reaches the ledger or a page goes through :func:`scrub` (keys that look
secret are dropped, then known secret values are masked by
:func:`infra_automation.secrets.redact`). Every value printed into Markdown goes through one
of the escapers below, so a target's answer cannot break a table, inject HTML or open a link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from infra_automation.secrets import SECRET_WORDS, redact

_SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/?#@!$&'*+,;=%-]+$")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#])")


def looks_secret(key: str) -> bool:
    """True for keys such as ``password``, ``api_token``, ``ssh_private_key``."""
    lowered = key.lower().replace("-", "_")
    return any(word in lowered for word in SECRET_WORDS)


def drop_secret_keys(value: Any) -> Any:
    """A copy of ``value`` without mapping entries whose key looks secret (recursive)."""
    if isinstance(value, Mapping):
        return {str(k): drop_secret_keys(v) for k, v in value.items() if not looks_secret(str(k))}
    if isinstance(value, list | tuple):
        return [drop_secret_keys(v) for v in value]
    return value


def scrub(value: Any) -> Any:
    """Drop secret-looking keys, then mask every known secret value."""
    return redact(drop_secret_keys(value))


def scrub_text(value: str | None) -> str:
    return str(redact(value or ""))


def slug(value: str) -> str:
    """A safe single path component for a project name (no separators, no leading dot)."""
    cleaned = _SLUG_RE.sub("-", value).strip("-.") or "unnamed"
    return cleaned[:80]


def html(value: str) -> str:
    return "".join(_HTML.get(c, c) for c in value)


def text(value: Any) -> str:
    """Inline Markdown text: HTML and Markdown specials escaped, one line."""
    one_line = " ".join(display(value).split())
    return _MD_SPECIAL.sub(r"\\\1", html(one_line))


def cell(value: Any) -> str:
    """A table cell: like :func:`text`, but line breaks survive as ``<br>``."""
    lines = display(value).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "<br>".join(text(line) for line in lines if line.strip()) or " "


def code(value: Any) -> str:
    """Inline code that survives backticks and table pipes inside the value."""
    raw = " ".join(display(value).split())
    if not raw:
        return " "
    longest = max((len(m) for m in re.findall(r"`+", raw)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if raw.startswith("`") or raw.endswith("`") else ""
    # A pipe ends a table cell even inside code spans; HTML-escape it instead.
    return f"{ticks}{pad}{raw.replace('|', '&#124;')}{pad}{ticks}"


def fence(value: Any, lang: str = "") -> str:
    """A fenced code block longer than any backtick run inside ``value``."""
    body = display(value).replace("\r\n", "\n").replace("\r", "\n").rstrip("\n")
    longest = max((len(m) for m in re.findall(r"`{3,}", body)), default=0)
    ticks = "`" * max(3, longest + 1)
    lang = re.sub(r"[^A-Za-z0-9_+-]", "", lang)
    return f"{ticks}{lang}\n{body}\n{ticks}"


def link(url: Any, label: Any = None) -> str:
    """A Markdown link if ``url`` is a plain http(s) URL, else escaped text."""
    raw = display(url).strip()
    if not _URL_RE.fullmatch(raw):
        return text(raw)
    return f"[{text(label if label is not None else raw)}]({raw.replace(')', '%29')})"


def is_url(value: Any) -> bool:
    return isinstance(value, str) and bool(_URL_RE.fullmatch(value.strip()))


def display(value: Any) -> str:
    """A human rendering of a scalar or small structure (before escaping)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={display(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(display(v) for v in value)
    return str(value)


def when(value: str | None) -> str:
    """An ISO 8601 timestamp shown as ``2025-11-21 19:54:03 UTC``."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    offset = moment.utcoffset()
    if offset is None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if not offset:
        return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.isoformat(sep=" ", timespec="seconds")


MARKDOWN_HELPERS = {
    "text": text,
    "cell": cell,
    "code": code,
    "fence": fence,
    "link": link,
    "when": when,
}
"""Escapers handed to every docs template (``{{ cell(value) }}``)."""
