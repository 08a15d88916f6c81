"""The OS, web, backup and monitoring departments: Ansible playbooks through ansible-runner.

One executor, ``os.playbook``: the catalog step names the playbook (a file of
``<root>/playbooks/``) and sets the department. The executor

- builds an Ansible inventory for the step's targets from our :class:`Inventory`: names of
  inventory hosts are used as they are, other names (VMs created upstream) are resolved
  through the inventory's host binding with the address given in ``params.hosts``;
- writes every variable (request values, the step's secrets) to ``env/extravars`` of a
  private data dir (mode 0600) under ``<root>/.infra/ansible/<run_id>/<step_id>``, never on
  the command line, and removes it after the run;
- runs ``ansible-playbook`` (found next to this Python, not on whatever PATH holds) with
  ``--diff`` (and ``--check`` in preview), streaming each task's result per host to
  ``ctx.emit``;
- returns per-host stats and diffs as :class:`TargetResult` and what the playbook read back
  from each host (``set_stats`` key ``infra_report``) as typed outputs.

Playbooks report read-back values with the ``report`` role (``playbooks/roles/report``).
Host key checking and other connection settings come from inventory host data
(``ansible_*`` keys), never from here.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)

from infra_automation.config import STATE_DIR
from infra_automation.exceptions import ConfigurationError, ExecutorUnavailable
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.files import write_atomic
from infra_automation.inventory import Host
from infra_automation.results import Status, StepResult, TargetResult
from infra_automation.secrets import Secrets, redact
from infra_automation.validation import Hostname, Name, SafeText

PLAYBOOKS_DIR = "playbooks"
REPORT_KEY = "infra_report"
RESERVED_PREFIXES = ("ansible_", "infra_")
# Inventory hosts with a password get this reference to an extra var (in env/extravars, 0600).
PASSWORD_REF = "{{ infra_host_passwords[inventory_hostname] }}"  # noqa: S105 - not a value

PlaybookFile = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}\.ya?ml$")]
VarName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
Scalar = SafeText | StrictBool | StrictInt | StrictFloat
Record = dict[VarName, Scalar | list[Scalar]]
VarValue = Scalar | Record | list[Scalar | Record]


# --- params and outputs ---------------------------------------------------------------------


class HostAddress(BaseModel):
    """A host created upstream (a VM): its name and the address it answers on.

    Extra fields are ignored so that a VMware step's VM records can be passed as they are.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Name
    ip: Hostname | None = Field(
        default=None, validation_alias=AliasChoices("ip", "address", "ip_address")
    )


class PlaybookParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    playbook: PlaybookFile = Field(description="file name under <root>/playbooks/")
    hosts: list[HostAddress] = Field(
        default_factory=list, description="hosts created upstream, added to the step's targets"
    )
    vars: dict[VarName, VarValue] = Field(default_factory=dict)
    secret_vars: dict[VarName, Name | VarName] = Field(
        default_factory=dict, description="variable name -> secret name (value never logged)"
    )
    timeout: int = Field(default=1800, ge=10, le=86400)
    forks: int = Field(default=10, ge=1, le=200)

    @field_validator("vars", "secret_vars")
    @classmethod
    def _not_reserved(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if name.startswith(RESERVED_PREFIXES):
                raise ValueError(f"{name!r}: names starting with ansible_ or infra_ are reserved")
        return value

    @model_validator(mode="after")
    def _secrets_apart(self) -> PlaybookParams:
        both = sorted(set(self.vars) & set(self.secret_vars))
        if both:
            raise ValueError(f"set both in vars and secret_vars: {', '.join(both)}")
        return self


class HostStats(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0


class HostFacts(BaseModel):
    """What the playbook read back from one host (``report`` role), plus its stats."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str
    address: str = ""
    bound_to: str | None = None
    stats: HostStats = Field(default_factory=HostStats)
    packages: dict[str, str] = Field(default_factory=dict)
    services: dict[str, str] = Field(default_factory=dict)  # name -> running / stopped
    url: str | None = None
    facts: dict[str, Any] = Field(default_factory=dict)


class PlaybookOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    playbook: str
    check: bool = False
    hosts: dict[str, HostFacts] = Field(default_factory=dict)
    urls: list[str] = Field(default_factory=list)


# --- the executor ---------------------------------------------------------------------------


class PlaybookExecutor:
    info = ExecutorInfo(
        key="os.playbook",
        department="os",
        description="Run an Ansible playbook of <root>/playbooks on the step's hosts.",
        params=PlaybookParams,
        outputs=PlaybookOutputs,
        supports_check=True,
        requires=("ansible_runner",),
        extra="ansible",
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=True)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=ctx.check)

    def _run(self, ctx: StepContext, *, check: bool) -> StepResult:
        params = ctx.typed_params(PlaybookParams)
        playbook = ctx.root / PLAYBOOKS_DIR / params.playbook
        if not playbook.is_file():
            return StepResult.failure(f"params.playbook: no playbook {playbook}")
        try:
            binary = ansible_playbook()
            targets, planned = resolve_targets(ctx, params, check=check)
            secret_values = read_secrets(ctx, params)
        except ConfigurationError as exc:
            return StepResult.failure(str(exc))
        if not targets and not planned:
            return StepResult.failure("no targets: the step names no hosts")
        if not targets:
            return _planned_only(params, planned)
        job = AnsibleJob(ctx, params, playbook, binary, targets, secret_values, check)
        return job.run(planned)


# --- targets, secrets, tools ----------------------------------------------------------------


def ansible_playbook() -> Path:
    """``ansible-playbook`` of the environment this Python runs in."""
    bindir = Path(sys.executable).parent
    found = shutil.which("ansible-playbook", path=str(bindir))
    if found is None:
        raise ExecutorUnavailable(
            f"ansible-playbook not found in {bindir}: pip install 'infra-automation[ansible]'"
        )
    return Path(found)


def resolve_targets(
    ctx: StepContext, params: PlaybookParams, *, check: bool
) -> tuple[dict[str, Host], list[str]]:
    """Inventory hosts by target name; in check mode, names that cannot be bound yet."""
    addresses = {h.name: h.ip for h in params.hosts}
    names = list(dict.fromkeys([*ctx.targets, *addresses]))
    hosts: dict[str, Host] = {}
    planned: list[str] = []
    for name in names:
        if name in ctx.inventory.hosts:
            hosts[name] = ctx.inventory.connectable(name)
            continue
        try:
            hosts[name] = ctx.inventory.bind_host(name, addresses.get(name), dry_run=check)
        except ConfigurationError:
            if not check:
                raise
            planned.append(name)  # e.g. a VM that only exists once the run applies
    return hosts, planned


def read_secrets(ctx: StepContext, params: PlaybookParams) -> dict[str, str]:
    secrets: Secrets = ctx.secrets or ctx.inventory.secrets
    values: dict[str, str] = {}
    for var, secret in params.secret_vars.items():
        try:
            values[var] = secrets.get(secret)
        except ConfigurationError as exc:
            raise ConfigurationError(f"params.secret_vars.{var}: {exc}") from exc
    return values


def _planned_only(params: PlaybookParams, planned: Sequence[str]) -> StepResult:
    targets = tuple(
        TargetResult(n, Status.SUCCESS, changed=True, details={"planned": True}) for n in planned
    )
    outputs = PlaybookOutputs(
        playbook=params.playbook, check=True, hosts={n: HostFacts(host=n) for n in planned}
    )
    return StepResult.from_targets(targets, outputs=outputs.model_dump())


# --- one ansible-runner job -----------------------------------------------------------------


@dataclass
class HostLog:
    """What the event stream said about one host."""

    failures: list[str] = field(default_factory=list)
    unreachable: str | None = None
    diffs: list[str] = field(default_factory=list)


class AnsibleJob:
    def __init__(
        self,
        ctx: StepContext,
        params: PlaybookParams,
        playbook: Path,
        binary: Path,
        hosts: Mapping[str, Host],
        secret_values: Mapping[str, str],
        check: bool,
    ) -> None:
        self.ctx = ctx
        self.params = params
        self.playbook = playbook
        self.binary = binary
        self.hosts = dict(hosts)
        self.secret_values = dict(secret_values)
        self.check = check
        self.logs: dict[str, HostLog] = {n: HostLog() for n in hosts}
        self.report: dict[str, Any] = {}
        state = ctx.root / STATE_DIR / "ansible"
        self.home = state / "home"
        self.data_dir = state / ctx.run_id / ctx.step_id

    def run(self, planned: Sequence[str] = ()) -> StepResult:
        try:
            import ansible_runner
        except ImportError as exc:
            raise ExecutorUnavailable(
                "ansible-runner is not installed: pip install 'infra-automation[ansible]'"
            ) from exc
        ident = f"{'check' if self.check else 'apply'}-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            inventory = self._write_inputs()
            runner = ansible_runner.run(
                private_data_dir=str(self.data_dir),
                playbook=str(self.playbook),
                inventory=str(inventory),
                ident=ident,
                envvars=self._envvars(),
                cmdline="--diff --check" if self.check else "--diff",
                forks=self.params.forks,
                timeout=self.params.timeout,
                quiet=True,
                event_handler=self._on_event,
            )
        finally:
            self._remove_inputs()
        result = self._result(runner, ident, planned)
        sanitize_artifacts(self.data_dir / "artifacts" / ident)
        return result

    # inputs: inventory and extravars (the latter holds secrets: 0600, removed after the run)

    def _write_inputs(self) -> Path:
        env = self.data_dir / "env"
        inv = self.data_dir / "inventory"
        for folder in (env, inv):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True, mode=0o700)
        passwords = self._passwords()
        inventory = inv / "hosts.json"
        inventory.write_text(json.dumps(build_inventory(self.hosts, set(passwords)), indent=1))
        extravars = {
            **self.params.vars,
            **{k: Unsafe(v) for k, v in self.secret_values.items()},
            "infra_project": self.ctx.project,
            "infra_run_id": self.ctx.run_id,
            "infra_step_id": self.ctx.step_id,
            "infra_department": self.ctx.department,
            "infra_state_dir": str(self.ctx.root / STATE_DIR),
            "infra_host_passwords": {k: Unsafe(v) for k, v in passwords.items()},
        }
        write_atomic(env / "extravars", dump_extravars(extravars), mode=0o600)
        return inventory

    def _passwords(self) -> dict[str, str]:
        secrets = self.ctx.secrets or self.ctx.inventory.secrets
        return {
            name: secrets.get(host.password_secret)
            for name, host in self.hosts.items()
            if host.password_secret
        }

    def _remove_inputs(self) -> None:
        for folder in ("env", "inventory"):
            shutil.rmtree(self.data_dir / folder, ignore_errors=True)

    def _envvars(self) -> dict[str, str]:
        return ansible_env(self.binary, self.playbook, self.home)

    # events: progress for the run record, failures and diffs per host

    def _on_event(self, event: Mapping[str, Any]) -> bool:
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            artifact = data.get("artifact_data") or {}
            self.report = dict(artifact.get(REPORT_KEY) or {})
            return True
        status = TASK_EVENTS.get(kind)
        host = data.get("host")
        if status is None or host not in self.logs:
            return True
        res = data.get("res") or {}
        if status == "failed" and data.get("ignore_errors"):
            status = "ignored"
        elif status == "ok" and res.get("changed"):
            status = "changed"
        task = str(data.get("task") or "")
        self._record(host, task, status, res)
        self.ctx.emit(
            "task",
            redact(
                {"host": host, "task": task, "role": data.get("role"), "status": status}
                | ({"error": task_error(res)} if status in ("failed", "unreachable") else {})
            ),
        )
        return True

    def _record(self, host: str, task: str, status: str, res: Mapping[str, Any]) -> None:
        log = self.logs[host]
        if status == "failed":
            log.failures.append(f"task {task!r}: {task_error(res)}")
        elif status == "unreachable":
            log.unreachable = task_error(res)
        path = str(res.get("dest") or res.get("path") or "")
        text = "".join(format_diff(d, path) for d in collect_diffs(res))
        if text and status in ("changed", "ok"):
            log.diffs.append(f"TASK [{task}]\n{text}")

    # the step result

    def _result(self, runner: Any, ident: str, planned: Sequence[str]) -> StepResult:
        stats = _stats(runner.stats or {})
        targets = tuple(self._target(n, stats.get(n, HostStats())) for n in self.hosts) + tuple(
            TargetResult(n, Status.SUCCESS, changed=True, details={"planned": True})
            for n in planned
        )
        outputs = self._outputs(stats, planned)
        artifacts = {"ansible": str(self.data_dir / "artifacts" / ident)}
        result = StepResult.from_targets(targets, outputs=outputs, artifacts=artifacts)
        if runner.status == "timeout":
            return _with_error(result, f"playbook timed out after {self.params.timeout}s")
        if runner.rc != 0 and not result.failed:
            tail = _tail(runner)
            return _with_error(result, f"ansible-playbook failed (rc {runner.rc}): {tail}")
        return result

    def _target(self, name: str, stats: HostStats) -> TargetResult:
        log = self.logs[name]
        error: str | None = None
        if log.unreachable is not None or stats.unreachable:
            error = f"unreachable: {log.unreachable or 'no connection'}"
        elif log.failures or stats.failed:
            error = "; ".join(log.failures) or "failed"
        return TargetResult(
            target=name,
            status=Status.FAILED if error else Status.SUCCESS,
            changed=stats.changed > 0,
            diff=redact("\n".join(log.diffs)),
            error=redact(error) if error else None,
            details={"stats": stats.model_dump(), "address": _address(self.hosts[name])},
        )

    def _outputs(self, stats: Mapping[str, HostStats], planned: Sequence[str]) -> dict[str, Any]:
        hosts: dict[str, HostFacts] = {}
        for name, host in self.hosts.items():
            reported = self.report.get(name) or {}
            hosts[name] = HostFacts(
                host=name,
                address=_address(host),
                bound_to=host.data.get("bound_to"),
                stats=stats.get(name, HostStats()),
                packages={str(k): str(v) for k, v in (reported.get("packages") or {}).items()},
                services={str(k): str(v) for k, v in (reported.get("services") or {}).items()},
                url=reported.get("url") or None,
                facts=dict(reported.get("facts") or {}),
            )
        hosts.update({n: HostFacts(host=n) for n in planned})
        urls = [h.url for h in hosts.values() if h.url]
        outputs = PlaybookOutputs(
            playbook=self.params.playbook, check=self.check, hosts=hosts, urls=urls
        )
        return dict(redact(outputs.model_dump()))


TASK_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_unreachable": "unreachable",
    "runner_on_skipped": "skipped",
}


def build_inventory(hosts: Mapping[str, Host], with_password: set[str]) -> dict[str, Any]:
    """An Ansible YAML/JSON inventory: connection vars, host data as host vars, groups."""
    hostvars: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for name, host in hosts.items():
        hostvars[name] = {**host.data, **_connection_vars(host)}
        if name in with_password:
            hostvars[name]["ansible_password"] = PASSWORD_REF
        for group in host.groups:
            groups.setdefault(group.replace("-", "_"), {"hosts": {}})["hosts"][name] = {}
    return {"all": {"hosts": hostvars, "children": groups}}


def ansible_env(binary: Path, playbook: Path, home: Path) -> dict[str, str]:
    """Environment of ``ansible-playbook``: our tools first on PATH, state under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.pathsep.join([str(binary.parent), os.environ.get("PATH", os.defpath)]),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_ROLES_PATH": str(playbook.parent / "roles"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_TIMEOUT": "15",
    }


def _connection_vars(host: Host) -> dict[str, Any]:
    pairs = {
        "ansible_host": host.hostname,
        "ansible_port": host.port,
        "ansible_user": host.username,
        "ansible_ssh_private_key_file": host.ssh_key_file,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _address(host: Host) -> str:
    return f"{host.hostname}:{host.port or 22}" if host.hostname else ""


class Unsafe(str):
    """A value Ansible must never template (secrets may contain '{{', '{%' or '{#')."""

    __slots__ = ()


class _ExtravarsDumper(yaml.SafeDumper):
    pass


_ExtravarsDumper.add_representer(
    Unsafe, lambda dumper, value: dumper.represent_scalar("!unsafe", str(value), style="'")
)


def dump_extravars(extravars: Mapping[str, Any]) -> str:
    """YAML for ``-e @file``: secret values tagged ``!unsafe`` so Ansible keeps them verbatim."""
    return yaml.dump(dict(extravars), Dumper=_ExtravarsDumper, default_flow_style=False)


def sanitize_artifacts(folder: Path) -> None:
    """ansible-runner keeps the whole environment (``command``) and the output: drop the
    former, mask known secrets in the rest, so nothing secret stays on disk."""
    (folder / "command").unlink(missing_ok=True)
    if not folder.is_dir():
        return
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                text = path.read_text()
                masked = redact(text)
                if masked != text:
                    path.write_text(masked)


def _stats(raw: Mapping[str, Mapping[str, int]]) -> dict[str, HostStats]:
    keys = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failed",
        "dark": "unreachable",
        "skipped": "skipped",
    }
    out: dict[str, dict[str, int]] = {}
    for src, dst in keys.items():
        for host, count in (raw.get(src) or {}).items():
            out.setdefault(host, {})[dst] = int(count)
    return {h: HostStats(**v) for h, v in out.items()}


def task_error(res: Mapping[str, Any]) -> str:
    """The message of a failed or unreachable task result, on one line."""
    parts = [str(res.get("msg") or "")]
    for key in ("stderr", "module_stderr"):
        value = str(res.get(key) or "").strip()
        if value and value not in parts[0]:
            parts.append(value)
    if not any(parts):
        for item in res.get("results") or []:
            if isinstance(item, Mapping) and item.get("failed"):
                parts.append(task_error(item))
    return " | ".join(p for p in parts if p).replace("\n", " ")[:2000] or "failed"


def collect_diffs(res: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    diffs: list[Mapping[str, Any]] = []
    raw = res.get("diff")
    if isinstance(raw, Mapping):
        diffs.append(raw)
    elif isinstance(raw, list):
        diffs += [d for d in raw if isinstance(d, Mapping)]
    for item in res.get("results") or []:
        if isinstance(item, Mapping) and item.get("changed"):
            diffs += collect_diffs(item)
    return diffs


def format_diff(diff: Mapping[str, Any], path: str = "") -> str:
    """Like Ansible's own ``--diff`` output: ``prepared`` text, or before/after unified."""
    if diff.get("prepared"):
        return _eol(str(diff["prepared"]))
    before, after = diff.get("before"), diff.get("after")
    if (before is None and after is None) or before == after:
        return ""
    lines = difflib.unified_diff(
        _text(before).splitlines(keepends=True),
        _text(after).splitlines(keepends=True),
        fromfile=_header(diff.get("before_header"), f"before: {path}" if path else "before"),
        tofile=_header(diff.get("after_header"), f"after: {path}" if path else "after"),
    )
    return "".join(_eol(line) for line in lines)


def _header(value: Any, fallback: str) -> str:
    """Ansible names rendered templates by their temporary copy: show the target instead."""
    text = str(value or "")
    return fallback if not text or "ansible-local-" in text or "ansible-tmp-" in text else text


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, indent=2, sort_keys=True) + "\n"


def _eol(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


def _with_error(result: StepResult, error: str) -> StepResult:
    return replace(result, status=Status.FAILED, error=redact(error))


def _tail(runner: Any, lines: int = 15) -> str:
    with contextlib.suppress(Exception):
        text = str(runner.stdout.read())
        return " ".join(text.strip().splitlines()[-lines:])[:2000]
    return "(no output)"
