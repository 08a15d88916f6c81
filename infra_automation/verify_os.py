"""Verifier of ``os.playbook`` steps (OS baseline, web, backup, monitoring): each host's
live state against what the playbook read back when it ran.

Facts, not plays: one SSH command per host (the connection settings Ansible uses for it,
``ansible_host_key_checking`` and ``ansible_ssh_common_args`` included) reads the service
states (``service --status-all``), the cron tables and, where the step registered an
exporter, its metrics endpoint; the site URL is fetched over HTTP. Resources per host:

- ``service <name>``: each service the run found ``running`` is still running;
- ``site <url>``: the URL answers 200 with a page naming the project;
- ``backup schedule``: a cron line with the recorded schedule runs the project's backup;
- ``exporter <target>``: the node exporter answers on the recorded port;
- ``firewall inet <table>``: where the run read a host firewall back (``playbooks/firewall.yml``
  reports ``facts.firewall``, present), the table's input chain holds the recorded rules
  (a table deleted or flushed on the host is drift);
- ``container <name>``: where the run read an app back (``playbooks/app.yml`` reports
  ``facts.app``, present), its podman container is running, and its ``site`` (the app's
  page through nginx) carries the recorded page marker.

A host that SSH cannot reach makes its resources ``unverifiable`` (``unreachable``/``auth``).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infra_automation.departments import ansible
from infra_automation.inventory import Host
from infra_automation.results import ErrorKind
from infra_automation.verify import ResourceCheck, VerifyContext, VerifyResult

SSH_TIMEOUT = 15
HTTP_TIMEOUT = 5
SECTION = "### infra-verify "
_STATUS_RE = re.compile(r"^\s*\[\s*([+?-])\s*\]\s+(\S+)\s*$")
_PORT_RE = re.compile(r":(\d{1,5})$")
_TABLE_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}$")  # the firewall role's own check
_CONTAINER_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,127}$")  # podman's names, lower case
_NOT_A_RULE = re.compile(r"^(table |chain |type |[{}]|$)")  # as the role reads its rules back


@dataclass(frozen=True)
class HostState:
    """What one SSH command read on a host."""

    services: dict[str, str]
    cron: str
    exporter: str  # HTTP status of the exporter's /metrics, "" if not asked
    firewall: tuple[str, ...] | None = None  # the input chain's rules; None: no such table
    firewall_error: str = ""  # why nft could not list it, when not because it is missing
    container: str = ""  # podman's status of the app's container, "" if not asked


class PlaybookVerifier:
    def verify(self, ctx: VerifyContext) -> VerifyResult:
        recorded = ctx.recorded.get("hosts")
        if not isinstance(recorded, Mapping) or not recorded:
            return VerifyResult.unverifiable("hosts", "the record lists no host")
        params = ctx.typed_params(ansible.PlaybookParams)
        hosts, _ = ansible.resolve_targets(ctx.step, params, check=True)
        checks: list[ResourceCheck] = []
        for name, data in recorded.items():
            host = hosts.get(str(name))
            if host is None or not isinstance(data, Mapping):
                checks.append(ResourceCheck.unverifiable(f"host {name}", "not in the inventory"))
                continue
            checks += _host_checks(ctx.step.project, host, str(name), data)
        return VerifyResult(tuple(checks))


def _host_checks(
    project: str, host: Host, name: str, data: Mapping[str, Any]
) -> list[ResourceCheck]:
    raw = data.get("facts")
    facts: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    exporter = _exporter_port(facts.get("target"))
    table = firewall_table(facts.get("firewall"))
    app = recorded_app(facts.get("app"))
    running = [s for s, state in (data.get("services") or {}).items() if state == "running"]
    state, error, kind = read_host(host, exporter, table, container=app.get("container"))
    checks: list[ResourceCheck] = []
    resources = [f"service {s}" for s in running]
    if facts.get("schedule"):
        resources.append("backup schedule")
    if exporter is not None:
        resources.append(f"exporter {facts.get('target')}")
    if table is not None:
        resources.append(f"firewall inet {table}")
    if app:
        resources.append(f"container {app['container']}")
    if state is None:
        checks += [ResourceCheck.unverifiable(r, error, target=name, kind=kind) for r in resources]
    else:
        checks += [_service(s, state, name) for s in running]
        if facts.get("schedule"):
            checks.append(_schedule(project, str(facts["schedule"]), state, name))
        if exporter is not None:
            checks.append(_exporter(str(facts.get("target")), state, name))
        if table is not None:
            checks.append(check_firewall(table, facts["firewall"], state, name))
        if app:
            checks.append(_container(app["container"], state, name))
    if data.get("url"):
        checks.append(check_site(project, str(data["url"]), name, app.get("page_marker")))
    return checks


def recorded_app(raw: Any) -> dict[str, str]:
    """The app a containers step read back as present: its container and page marker."""
    if not isinstance(raw, Mapping) or raw.get("state") != "present":
        return {}
    name = str(raw.get("container") or "")
    if not _CONTAINER_RE.fullmatch(name):
        return {}
    return {"container": name, "page_marker": str(raw.get("page_marker") or "")}


def _container(name: str, state: HostState, host: str) -> ResourceCheck:
    found = state.container or "absent"
    return ResourceCheck.compare(
        f"container {name}", "running", found, target=host, reason=f"container {name} is {found}"
    )


def _exporter_port(target: Any) -> int | None:
    match = _PORT_RE.search(str(target or ""))
    return int(match.group(1)) if match and 0 < int(match.group(1)) < 65536 else None


def firewall_table(recorded: Any) -> str | None:
    """The nftables table a firewall step left on the host (its read-back says present, the
    name passes the role's own check); None: nothing to verify."""
    if not isinstance(recorded, Mapping) or recorded.get("present") is not True:
        return None
    family, _, table = str(recorded.get("table") or "").partition(" ")
    return table if family == "inet" and _TABLE_RE.fullmatch(table) else None


def firewall_rules(listing: str) -> tuple[str, ...]:
    """The rules of ``nft -s list chain ...``'s output, read as the role reads them back."""
    lines = (line.strip() for line in listing.splitlines())
    return tuple(line for line in lines if not _NOT_A_RULE.match(line))


def check_firewall(
    table: str, recorded: Mapping[str, Any], state: HostState, host: str
) -> ResourceCheck:
    expected = "\n".join(str(rule) for rule in recorded.get("rules") or [])
    if state.firewall is None and state.firewall_error:
        return ResourceCheck.unverifiable(
            f"firewall inet {table}", f"nft: {state.firewall_error}", target=host
        )
    if state.firewall is None:
        found, reason = f"(no table inet {table})", f"the table inet {table} is gone"
    else:
        found = "\n".join(state.firewall) or "(no rules: the table was flushed)"
        reason = "the firewall's rules are not those loaded"
    return ResourceCheck.compare(
        f"firewall inet {table}", expected, found, target=host, reason=reason
    )


def _service(service: str, state: HostState, host: str) -> ResourceCheck:
    found = state.services.get(service, "(not installed)")
    return ResourceCheck.compare(
        f"service {service}", "running", found, target=host, reason=f"{service} is {found}"
    )


def _schedule(project: str, schedule: str, state: HostState, host: str) -> ResourceCheck:
    wanted = " ".join(schedule.split())
    job = f"infra-backup-{project}"
    lines = [" ".join(line.split()) for line in state.cron.splitlines()]
    ours = [line for line in lines if job in line and not line.startswith("#")]
    found = "\n".join(ours) if ours else "(no cron line runs the backup)"
    expected = next((line for line in ours if line.startswith(wanted + " ")), None)
    return ResourceCheck.compare(
        "backup schedule",
        expected or f"{wanted} ... {job}",
        found,
        target=host,
        reason="the backup is not scheduled as recorded",
    )


def _exporter(target: str, state: HostState, host: str) -> ResourceCheck:
    found = f"HTTP {state.exporter}" if state.exporter not in ("", "000") else "not answering"
    return ResourceCheck.compare(
        f"exporter {target}", "HTTP 200", found, target=host, reason="node exporter " + found
    )


def check_site(project: str, url: str, host: str, marker: str | None = None) -> ResourceCheck:
    """The site answers 200 with a page that names the project (and holds ``marker``)."""
    page = f"page of project {project}" + (f" with {marker}" if marker else "")
    expected = f"HTTP 200, {page}"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as answer:  # noqa: S310 - http(s) URL from the record
            body = answer.read(65536).decode("utf-8", "replace")
            ours = project in body and (not marker or marker in body)
            found = f"HTTP {answer.status}, " + (page if ours else "another page")
    except urllib.error.HTTPError as exc:
        found = f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        found = f"not answering ({getattr(exc, 'reason', exc)})"
    return ResourceCheck.compare(f"site {url}", expected, found, target=host, reason=found)


def read_host(
    host: Host, exporter: int | None, table: str | None = None, *, container: str | None = None
) -> tuple[HostState | None, str, ErrorKind | None]:
    """(state, "", None), or (None, why, kind) when SSH cannot read the host."""
    script = [
        f"echo '{SECTION}services'; service --status-all 2>&1",
        f"echo '{SECTION}cron'; cat /etc/cron.d/* 2>/dev/null",
    ]
    if exporter is not None:
        script.append(
            f"echo '{SECTION}exporter'; curl -s -o /dev/null -w '%{{http_code}}' --max-time 3 "
            f"http://127.0.0.1:{exporter}/metrics"
        )
    if table is not None and _TABLE_RE.fullmatch(table):
        script.append(
            f"echo '{SECTION}firewall'; nft -s list chain inet {table} input 2>&1"
            f" || echo '{SECTION}firewall-failed'"
        )
    if container is not None and _CONTAINER_RE.fullmatch(container):
        script.append(
            f"echo '{SECTION}container'; podman container inspect --format "
            f"'{{{{.State.Status}}}}' {shlex.quote(container)} 2>/dev/null"
        )
    try:
        done = subprocess.run(  # fixed argv, no shell on our side
            [*ssh_command(host), "; ".join(script) + "; true"],
            capture_output=True,
            text=True,
            timeout=SSH_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return (
            None,
            f"ssh {host.hostname}:{host.port}: no answer in {SSH_TIMEOUT} s",
            ErrorKind.TIMEOUT,
        )
    except OSError as exc:
        return None, f"ssh cannot run: {exc}", ErrorKind.INTERNAL
    if done.returncode == 255:
        message = " ".join(done.stderr.split())[-300:]
        kind = ErrorKind.AUTH if "Permission denied" in message else ErrorKind.UNREACHABLE
        return None, f"ssh {host.hostname}:{host.port}: {message}", kind
    return parse_state(done.stdout), "", None


def ssh_command(host: Host) -> list[str]:
    """``ssh`` with the settings Ansible uses for the host."""
    command = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
    if host.port:
        command += ["-p", str(host.port)]
    if host.ssh_key_file:
        command += ["-i", host.ssh_key_file, "-o", "IdentitiesOnly=yes"]
    if host.data.get("ansible_host_key_checking") is False:
        command += ["-o", "StrictHostKeyChecking=no"]
    command += shlex.split(str(host.data.get("ansible_ssh_common_args") or ""))
    user = f"{host.username}@" if host.username else ""
    return [*command, f"{user}{host.hostname}"]


def parse_state(output: str) -> HostState:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith(SECTION):
            current = line[len(SECTION) :].strip()
            sections.setdefault(current, [])
            continue
        sections.setdefault(current, []).append(line)
    services: dict[str, str] = {}
    for line in sections.get("services", []):
        match = _STATUS_RE.match(line)
        if match:
            mark, name = match.groups()
            services[name] = {"+": "running", "-": "stopped"}.get(mark, "unknown")
    return HostState(
        services=services,
        cron="\n".join(sections.get("cron", [])),
        exporter="".join(sections.get("exporter", [])).strip(),
        container="".join(sections.get("container", [])).strip(),
        **_firewall_section(sections),
    )


def _firewall_section(sections: Mapping[str, list[str]]) -> dict[str, Any]:
    """The rules, or None and why: nft's own "No such file or directory" is a table (or its
    chain) that is gone; any other failure (no permission, no nft) is the error."""
    listing = "\n".join(sections.get("firewall", []))
    if "firewall" not in sections:
        return {}
    if "firewall-failed" not in sections:
        return {"firewall": firewall_rules(listing)}
    missing = "No such file or directory" in listing
    return {"firewall": None, "firewall_error": "" if missing else " ".join(listing.split())[-300:]}


def playbook() -> PlaybookVerifier:
    return PlaybookVerifier()
