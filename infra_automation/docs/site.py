"""The mkdocs site: a default ``mkdocs.yml`` for roots that have none, and ``mkdocs build``.

The pages' pictures are inline SVG and need nothing from the network; ``css/infra.css``
(:data:`SITE_CSS`, written into the docs folder if missing) makes tables and pictures fit
a 1,280 px page.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from infra_automation.docs.ledger import Ledgers, LedgerStore
from infra_automation.docs.writer import DocsWriter, docs_dir
from infra_automation.exceptions import RenderError
from infra_automation.files import write_atomic

CONFIG_NAME = "mkdocs.yml"
DEFAULT_CONFIG = """\
# Written by infra-automation because this project root had no mkdocs.yml; edit freely.
site_name: Infrastructure as built
docs_dir: {docs_dir}
site_dir: site
theme:
  name: mkdocs
  highlightjs: false  # the theme would load highlight.js from a CDN: the site stays offline
markdown_extensions:
  - tables
  - fenced_code
  - toc:
      permalink: true
extra_css:
  - css/infra.css
"""
CSS_NAME = "css/infra.css"
SITE_CSS = """\
/* The as-built pages fit a 1,280 px wide window: tables wrap long values instead of
   overflowing, pictures (inline SVG drawn by infra-automation) scale to the column. */
table { max-width: 100%; }
td, th { overflow-wrap: anywhere; word-break: break-word; }
td code { white-space: pre-wrap; word-break: break-all; }
figure.infra-figure { margin: 1em 0; max-width: 100%; }
figure.infra-figure svg { display: block; max-width: 100%; height: auto; }
pre { white-space: pre-wrap; word-break: break-all; }
"""
DEFAULT_HOME = """\
# Infrastructure as built

The [projects](projects/index.md) this landscape serves, written from what actually happened
in each run.
"""


def mkdocs_available() -> bool:
    return importlib.util.find_spec("mkdocs") is not None


def ensure_config(root: Path) -> Path:
    """``<root>/mkdocs.yml`` (and ``docs/index.md``), created only if missing."""
    config = root / CONFIG_NAME
    docs = docs_dir(root)
    if not config.exists():
        relative = docs.relative_to(root) if docs.is_relative_to(root) else docs
        write_atomic(config, DEFAULT_CONFIG.format(docs_dir=json.dumps(str(relative))))
    home = docs / "index.md"
    if not home.exists():
        write_atomic(home, DEFAULT_HOME)
    css = docs / CSS_NAME
    if not css.exists():
        write_atomic(css, SITE_CSS)
    return config


def build_site(
    root: Path,
    *,
    site_dir: Path | None = None,
    strict: bool = True,
    timeout: float = 600,
    ledgers: Ledgers | None = None,
) -> Path:
    """Run ``mkdocs build [--strict]`` for ``root``; returns the site folder.

    Raises :class:`RenderError` naming ``mkdocs.yml`` with mkdocs' own messages on failure.
    """
    config = ensure_config(root)
    writer = DocsWriter(root)
    if not (writer.projects_dir / "index.md").is_file():  # docs/index.md links to it
        writer.write_index((ledgers or LedgerStore.for_root(root)).all())
    site = site_dir or root / "site"
    command = [sys.executable, "-m", "mkdocs", "build", "-f", str(config), "-d", str(site)]
    if strict:
        command.insert(4, "--strict")
    try:
        done = subprocess.run(
            command, cwd=root, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderError(str(config), None, f"mkdocs build did not run: {exc}") from exc
    if done.returncode != 0:
        messages = (done.stderr or done.stdout).strip().splitlines()[-20:]
        raise RenderError(str(config), None, "mkdocs build failed:\n" + "\n".join(messages))
    return site
