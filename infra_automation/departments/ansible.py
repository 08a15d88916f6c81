"""The OS, web, backup and monitoring departments: Ansible playbooks through ansible-runner.

One executor, ``os.playbook``: the catalog step names the playbook (a file of
``<root>/playbooks/``) and sets the department. The executor

- builds an Ansible inventory for the step's targets from our :class:`Inventory`: names of
  inventory hosts are used as they are, other names (VMs created upstream) are resolved
  through the inventory's host binding with the address given in ``params.hosts``;
- hands every variable (request values, the step's secrets from ``ctx.secrets`` only) to
  ``ansible-playbook -e @FIFO``: a named pipe that Ansible reads once, so no secret is ever
  written to a file, and never on the command line or in its environment;
- gives ``ansible-playbook`` a minimal environment (never ``INFRA_*`` variables) and one
  private dir per step (``<root>/.infra/ansible/jobs/<pid>-<start>-...``, mode 0700: the
  inventory, ansible-runner's files; Ansible's local temp in a short-named
  ``<tmp>/infra-ansible-<pid>-<start>-tmp-*``) that is removed when the step ends and swept
  by the next step of any run when its owner process is gone;
- runs ``ansible-playbook`` (found next to this Python, not on whatever PATH holds) under
  :func:`guard_main`, which ties the play to this process: when the process dies, whatever
  kills it (SIGKILL included), the play and all of Ansible's forked workers die too;
- streams each task's result per host to ``ctx.emit`` with ``--diff`` (and ``--check`` in
  preview), and returns per-host stats, diffs and :class:`ErrorKind` as
  :class:`TargetResult`, what the playbook read back from each host (``set_stats`` key
  ``infra_report``) as typed outputs, and Ansible's output (secrets masked) as the log
  artifact ``<root>/.infra/ansible/<run_id>/<step_id>.log``.

Speed (section "speed" below): plays run under mitogen's ``mitogen_linear`` strategy when
mitogen is installed (extra ``fast``) and supports the installed ansible-core, else under
Ansible's own ``linear`` (``INFRA_ANSIBLE_MITOGEN=0`` forces stock, ``=1`` requires mitogen).
The Ansible steps of one run share an :class:`AnsibleSession` (``ctx.resources``): SSH
ControlPersist masters that the guard leaves to the run when a play ends by itself and the
run closes when it ends, and a fact cache (``gathering = smart``) so that each host's facts
are gathered once per run. :func:`inventory_view` is the inventory as Ansible's own tools
see it, through the project's inventory plugin
(``infra_automation/ansible_plugins/inventory/infra_inventory.py``).

Playbooks report read-back values with the ``report`` role (``playbooks/roles/report``).
Host key checking and other connection settings come from inventory host data
(``ansible_*`` keys), never from here.
"""

from __future__ import annotations

import difflib
import errno
import functools
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
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
from infra_automation.departments import ansible_guard
from infra_automation.departments.ansible_batch import Batches, run_batches
from infra_automation.departments.ansible_guard import GUARD_GRACE, GUARD_TIMEOUT_RC
from infra_automation.departments.ansible_guard import GUARD_ORPHANED_RC as GUARD_ORPHANED_RC
from infra_automation.departments.ansible_guard import guard_main as guard_main
from infra_automation.exceptions import ConfigurationError, ExecutorUnavailable
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.files import write_atomic
from infra_automation.inventory import Host, Inventory
from infra_automation.results import ErrorKind, Status, StepResult, TargetResult
from infra_automation.secrets import Secrets, redact
from infra_automation.validation import HostLabel, Hostname, Name, SafeText

PLAYBOOKS_DIR = "playbooks"
JOBS_DIR = "jobs"
REPORT_KEY = "infra_report"
RESERVED_PREFIXES = ("ansible_", "infra_")
# Inventory hosts with a password get this reference to an extra var (read from the FIFO).
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

    name: HostLabel
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
        try:
            session = run_session(ctx)
            batches = run_batches(ctx) if session else None
        except ConfigurationError as exc:
            return StepResult.failure(str(exc), kind=ErrorKind.INVALID)
        try:
            return self._play(ctx, check, session, batches)
        finally:
            if batches is not None:
                batches.arrive(ctx.step_id)  # joined a batch, or failed before: no one waits

    def _play(
        self,
        ctx: StepContext,
        check: bool,
        session: AnsibleSession | None,
        batches: Batches | None,
    ) -> StepResult:
        made = self._job(ctx, check, session)
        if isinstance(made, StepResult):
            return made
        job, planned = made
        if batches is None:
            return job.run(planned)
        return batches.run(job, planned, lambda: self._followers(ctx, check, session))

    def _job(
        self, ctx: StepContext, check: bool, session: AnsibleSession | None
    ) -> tuple[AnsibleJob, tuple[str, ...]] | StepResult:
        """The step's play and the hosts it plans for, or why it cannot run."""
        params = ctx.typed_params(PlaybookParams)
        playbook = ctx.root / PLAYBOOKS_DIR / params.playbook
        if not playbook.is_file():
            return StepResult.failure(
                f"params.playbook: no playbook {playbook}", kind=ErrorKind.INVALID
            )
        try:
            binary = ansible_playbook()
            strategy = choose_strategy()
            targets, planned = resolve_targets(ctx, params, check=check)
            secret_values = read_secrets(ctx, params)
        except ConfigurationError as exc:
            return StepResult.failure(str(exc), kind=ErrorKind.INVALID)
        except ExecutorUnavailable as exc:
            return StepResult.failure(str(exc), kind=ErrorKind.INTERNAL)
        if not targets and not planned:
            return StepResult.failure("no targets: the step names no hosts", kind=ErrorKind.INVALID)
        if not targets:
            return _planned_only(params, planned)
        job = AnsibleJob(ctx, params, playbook, binary, targets, secret_values, check)
        job.strategy = strategy
        job.session = session
        return job, tuple(planned)

    def _followers(
        self, ctx: StepContext, check: bool, session: AnsibleSession | None
    ) -> list[AnsibleJob]:
        """The plays of the steps that follow this one (``StepContext.followers``), as
        prepared now; a follower whose play cannot be built here is left to run alone."""
        jobs = []
        for follower in ctx.followers():
            made = self._job(follower, check, session)  # in the lead's mode: one process
            if not isinstance(made, StepResult) and not made[1]:
                jobs.append(made[0])
        return jobs


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


def step_secrets(ctx: StepContext) -> Secrets:
    """The step's secrets: ``ctx.secrets`` is the one seam (the scheduler always sets it)."""
    if ctx.secrets is None:
        raise ConfigurationError(f"step {ctx.step_id}: no secrets were handed to the step")
    return ctx.secrets


def read_secrets(ctx: StepContext, params: PlaybookParams) -> dict[str, str]:
    values: dict[str, str] = {}
    for var, secret in params.secret_vars.items():
        try:
            values[var] = step_secrets(ctx).get(secret)
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
    kind: ErrorKind | None = None  # of the first failure (an unreachable host: of that)


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
        self.stats: dict[str, Mapping[str, int]] = {}  # the play recap, from its event
        # the same counted from task events, and what set_stats reported: a step that ran
        # in a batch (several steps' playbooks in one ansible-playbook) has no recap of its own
        self.counted: dict[str, dict[str, int]] = {}
        self.reported: dict[str, Any] = {}
        self.output: list[str] = []
        self.state = ctx.root / STATE_DIR / "ansible"
        self.home = self.state / "home"
        self.log_path = self.state / ctx.run_id / f"{ctx.step_id}.log"
        self.strategy = Strategy("linear")
        self.session: AnsibleSession | None = None

    def reset(self, note: str) -> None:
        """Forget what a batch that did not finish this step said about it (it runs alone)."""
        self.logs = {n: HostLog() for n in self.hosts}
        self.report, self.stats, self.counted, self.reported = {}, {}, {}, {}
        self.output.append(note)

    def run(self, planned: Sequence[str] = ()) -> StepResult:
        """The step's playbook in an ``ansible-playbook`` of its own."""
        launched = self.launch(self.extravars, self.on_event)
        if isinstance(launched, StepResult):
            return launched
        result = self.result(*launched, planned)
        self.write_log()
        return result

    def launch(
        self,
        extravars: Mapping[str, Any],
        handler: Callable[[Mapping[str, Any]], bool],
        *,
        timeout: int | None = None,
        forks: int | None = None,
        wrapper: str | None = None,
    ) -> tuple[str, int | None] | StepResult:
        """One ``ansible-playbook`` in this job's private dir: the step's playbook, or the
        playbook text ``wrapper`` (written there), with ``extravars`` through the FIFO,
        events to ``handler``; its status and exit code, or the failure to start it."""
        try:
            from ansible_runner import Runner
            from ansible_runner.exceptions import AnsibleRunnerException
        except ImportError as exc:
            raise ExecutorUnavailable(
                "ansible-runner is not installed: pip install 'infra-automation[ansible]'"
            ) from exc
        sweep_jobs(self.state)
        sweep_sessions()
        job = new_job_dir(self.state, self.ctx.run_id, self.ctx.step_id)
        tmp = new_temp_dir()
        self.output.append(f"strategy: {self.strategy.name} ({self.strategy.note})\n")
        playbook = self.playbook
        if wrapper is not None:
            playbook = job / "batch.yml"
            playbook.write_text(wrapper)
        try:
            with SecretChannel(job / "extravars.fifo", dump_extravars(extravars)) as fifo:
                config = self._config(
                    job,
                    fifo.path,
                    tmp,
                    playbook,
                    timeout=timeout or self.params.timeout,
                    forks=forks or self.params.forks,
                )
                runner = Runner(config, event_handler=handler)
                runner.run()
        except (OSError, AnsibleRunnerException) as exc:
            return StepResult.failure(f"ansible-runner failed: {redact(str(exc))}")
        finally:
            shutil.rmtree(job, ignore_errors=True)
            shutil.rmtree(tmp, ignore_errors=True)
        return str(runner.status), runner.rc

    def _config(
        self, job: Path, extravars: Path, tmp: Path, playbook: Path, *, timeout: int, forks: int
    ) -> Any:
        """ansible-runner's config: files under ``job``, temporary files under ``tmp``, our
        environment, the guarded command."""
        from ansible_runner import RunnerConfig

        inventory = job / "hosts.json"
        passwords = set(self.extravars["infra_host_passwords"])
        inventory.write_text(json.dumps(build_inventory(self.hosts, passwords)))
        options = "--diff --check" if self.check else "--diff"
        ours = ansible_env(self.binary, self.playbook, self.home, tmp)
        # without a run's session, the play's own SSH masters: a shared folder (Ansible's
        # default) lets a play that ends stop the masters that parallel plays still use
        own = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp / "cp")}
        ours |= self.strategy.env | (self.session.env() if self.session else own)
        config = RunnerConfig(
            private_data_dir=str(job),
            playbook=str(playbook),
            inventory=str(inventory),
            ident="play",
            envvars=ours,
            cmdline=f"{options} -e @{extravars}",
            forks=forks,
            timeout=timeout + int(GUARD_GRACE) + 60,  # a backstop: the guard stops it
            quiet=True,
            suppress_env_files=True,
            settings={"suppress_output_file": True},
        )
        config.prepare()
        config.env = job_env(config.env, ours)
        command = [str(self.binary), *config.command[1:]]  # [ansible-playbook, ...]
        keep = self.session.control_dir if self.session else None
        config.command = guard_command(command, timeout, keep=keep)
        return config

    @functools.cached_property
    def extravars(self) -> dict[str, Any]:
        """Every variable of the play, the step's secrets read once (batches compare them)."""
        return {
            **self.params.vars,
            **{k: Unsafe(v) for k, v in self.secret_values.items()},
            "infra_project": self.ctx.project,
            "infra_run_id": self.ctx.run_id,
            "infra_step_id": self.ctx.step_id,
            "infra_department": self.ctx.department,
            "infra_state_dir": str(self.ctx.root / STATE_DIR),
            "infra_host_passwords": {k: Unsafe(v) for k, v in self.passwords().items()},
        }

    def passwords(self) -> dict[str, str]:
        return {
            name: step_secrets(self.ctx).get(host.password_secret)
            for name, host in self.hosts.items()
            if host.password_secret
        }

    def write_log(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.log_path, redact("".join(self.output)), mode=0o600)

    # events: progress for the run record, failures and diffs per host (kept in memory only)

    def on_event(self, event: Mapping[str, Any]) -> bool:
        if event.get("stdout"):
            self.output.append(str(event["stdout"]) + "\n")
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            artifact = data.get("artifact_data") or {}
            self.report = dict(artifact.get(REPORT_KEY) or {})
            self.stats = {k: dict(data.get(k) or {}) for k in STATS_KEYS}
            return False
        status = TASK_EVENTS.get(kind)
        host = data.get("host")
        if status is None or host not in self.logs:
            return False
        res = data.get("res") or {}
        if status == "failed" and data.get("ignore_errors"):
            status = "ignored"
        elif status == "ok" and res.get("changed"):
            status = "changed"
        task = str(data.get("task") or "")
        self._count(host, status)
        self._read_report(res)
        self._record(host, task, status, res)
        self.ctx.emit(
            "task",
            redact(
                {"host": host, "task": task, "role": data.get("role"), "status": status}
                | ({"error": task_error(res)} if status in ("failed", "unreachable") else {})
            ),
        )
        return False  # False: ansible-runner writes no job event file (they may hold secrets)

    def _count(self, host: str, status: str) -> None:
        """The recap's counts, as Ansible keeps them (an ignored failure counts as ok)."""
        counts = self.counted.setdefault(host, {})
        key = COUNTED[status]
        counts[key] = counts.get(key, 0) + 1
        if status == "changed":
            counts["ok"] = counts.get("ok", 0) + 1

    def _read_report(self, res: Mapping[str, Any]) -> None:
        """What a ``set_stats`` task of the report role said (the recap has it too)."""
        data = (res.get("ansible_stats") or {}).get("data") or {}
        if isinstance(data.get(REPORT_KEY), Mapping):
            self.reported.update(data[REPORT_KEY])

    def _record(self, host: str, task: str, status: str, res: Mapping[str, Any]) -> None:
        log = self.logs[host]
        if status == "failed":
            message = task_error(res)
            log.failures.append(f"task {task!r}: {message}")
            log.kind = log.kind or failure_kind(message)
        elif status == "unreachable":
            log.unreachable = task_error(res)
            log.kind = unreachable_kind(log.unreachable)
        path = str(res.get("dest") or res.get("path") or "")
        text = "".join(format_diff(d, path) for d in collect_diffs(res))
        if text and status in ("changed", "ok"):
            log.diffs.append(f"TASK [{task}]\n{text}")

    # the step result

    def result(self, status: str, rc: int | None, planned: Sequence[str]) -> StepResult:
        stats = _stats(self.stats) if self.stats else _counted_stats(self.counted)
        ran = bool(stats) or any(log.kind for log in self.logs.values())
        kind = run_kind(status, rc)
        tail = _tail(self.output)
        targets = tuple(
            self._target(n, stats.get(n), None if ran else (kind, tail)) for n in self.hosts
        ) + tuple(
            TargetResult(n, Status.SUCCESS, changed=True, details={"planned": True})
            for n in planned
        )
        outputs = self._outputs(stats, planned)
        artifacts = {"ansible": str(self.log_path)}
        result = StepResult.from_targets(targets, outputs=outputs, artifacts=artifacts)
        if kind is ErrorKind.TIMEOUT:
            return _with_error(result, f"playbook timed out after {self.params.timeout}s", kind)
        if rc != 0 and not result.failed:
            return _with_error(result, f"ansible-playbook failed (rc {rc}): {tail}", kind)
        return result

    def _target(
        self, name: str, stats: HostStats | None, no_play: tuple[ErrorKind, str] | None
    ) -> TargetResult:
        log = self.logs[name]
        error, kind = _target_error(log, stats or HostStats(), no_play, stats is not None)
        counted = stats or HostStats()
        return TargetResult(
            target=name,
            status=Status.FAILED if error else Status.SUCCESS,
            changed=counted.changed > 0,
            diff=redact("\n".join(log.diffs)),
            error=redact(error) if error else None,
            details={"stats": counted.model_dump(), "address": _address(self.hosts[name])},
            error_kind=kind,
        )

    def _outputs(self, stats: Mapping[str, HostStats], planned: Sequence[str]) -> dict[str, Any]:
        hosts: dict[str, HostFacts] = {}
        for name, host in self.hosts.items():
            reported = (self.report if self.stats else self.reported).get(name) or {}
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


STATS_KEYS = ("processed", "ok", "changed", "failures", "dark", "skipped")
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


# platforms (netutils' names, as Nornir uses them) -> Ansible's network_os for network_cli
NETWORK_OS = {
    "cisco_ios": "cisco.ios.ios",
    "cisco_xe": "cisco.ios.ios",
    "cisco_nxos": "cisco.nxos.nxos",
    "cisco_xr": "cisco.iosxr.iosxr",
    "arista_eos": "arista.eos.eos",
    "juniper_junos": "junipernetworks.junos.junos",
}


def inventory_view(inventory: Inventory) -> dict[str, Any]:
    """The whole inventory as Ansible sees it (``ansible-inventory``, the project's plugin):
    every host with the variables the executor gives it, the VM hosts bound so far whatever
    the binder (:meth:`Inventory.bound_hosts`: named as the VMs, ``bound_to`` their pool host
    or lab guest; a declared host of the same name wins), and no secret: hosts with a
    password get none (``ansible -k`` asks for it; the executor hands passwords to its plays
    itself)."""
    hosts = {n: inventory.hosts[n] for n in inventory.hosts}
    for vm, host in inventory.bound_hosts().items():
        hosts.setdefault(vm, host)
    return build_inventory(hosts, set())


def ansible_env(
    binary: Path, playbook: Path, home: Path, tmp: Path | None = None
) -> dict[str, str]:
    """Our settings for ``ansible-playbook``: our tools first on PATH, state under ``home``,
    every temporary file (Ansible's rendered content, module payloads) under ``tmp``."""
    home.mkdir(parents=True, exist_ok=True)
    temp: dict[str, str] = {}
    if tmp is not None:
        tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        temp = {"ANSIBLE_LOCAL_TEMP": str(tmp), "TMPDIR": str(tmp)}
    return temp | {
        "PATH": os.pathsep.join([str(binary.parent), os.environ.get("PATH", os.defpath)]),
        "ANSIBLE_HOME": str(home),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_ROLES_PATH": str(playbook.parent / "roles"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_TIMEOUT": "15",
        # the controller polls its workers' results every 1 ms by default: with parallel
        # plays on few cores that polling alone starves the workers
        "ANSIBLE_INTERNAL_POLL_INTERVAL": "0.01",
    }


def _connection_vars(host: Host) -> dict[str, Any]:
    network_os = NETWORK_OS.get(host.platform or "")
    pairs = {
        "ansible_host": host.hostname,
        "ansible_port": host.port,
        "ansible_user": host.username,
        "ansible_ssh_private_key_file": host.ssh_key_file,
        "ansible_connection": "ansible.netcommon.network_cli" if network_os else None,
        "ansible_network_os": network_os,
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


# task event status -> the recap's count it adds to ("changed" adds to ok as well)
COUNTED = {
    "ok": "ok",
    "changed": "changed",
    "ignored": "ok",
    "failed": "failed",
    "unreachable": "unreachable",
    "skipped": "skipped",
}


def _counted_stats(counted: Mapping[str, Mapping[str, int]]) -> dict[str, HostStats]:
    return {host: HostStats(**counts) for host, counts in counted.items()}


def _stats(raw: Mapping[str, Mapping[str, int]]) -> dict[str, HostStats]:
    keys = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failed",
        "dark": "unreachable",
        "skipped": "skipped",
    }
    out: dict[str, dict[str, int]] = {h: {} for h in raw.get("processed") or {}}
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


def _with_error(result: StepResult, error: str, kind: ErrorKind) -> StepResult:
    return replace(result, status=Status.FAILED, error=redact(error), error_kind=kind)


def _tail(output: Sequence[str], lines: int = 15) -> str:
    text = "".join(output).strip().splitlines()[-lines:]
    return " ".join(text)[:2000] or "(no output)"


def _target_error(
    log: HostLog, stats: HostStats, no_play: tuple[ErrorKind, str] | None, played: bool
) -> tuple[str | None, ErrorKind | None]:
    """A host's error and its kind: unreachable, a failed task, or a play that never ran."""
    if log.unreachable is not None or stats.unreachable:
        return (
            f"unreachable: {log.unreachable or 'no connection'}",
            log.kind or ErrorKind.UNREACHABLE,
        )
    if log.failures or stats.failed:
        return "; ".join(log.failures) or "failed", log.kind or ErrorKind.REJECTED
    if no_play is not None:
        kind, tail = no_play
        return f"the play did not run: {tail}", kind
    if not played:
        return "the play did not run on this host (not matched by its hosts:)", ErrorKind.INVALID
    return None, None


# --- error kinds at this edge ---------------------------------------------------------------

# ssh, sshpass and become say so when our credentials are refused
AUTH_PATTERN = re.compile(
    r"permission denied|authentication failed|invalid/incorrect password|incorrect password"
    r"|missing sudo password|incorrect sudo password|host key verification failed"
    r"|no more authentication methods",
    re.IGNORECASE,
)
TIMEOUT_PATTERN = re.compile(
    r"timed out|timeout \(\d+s\)|the command action failed to execute in the expected time",
    re.IGNORECASE,
)
# a failed task whose cause is the play, its variables or its module arguments, not the host
INVALID_PATTERN = re.compile(
    r"undefined variable|is undefined|template error|unsupported parameters"
    r"|missing required arguments|couldn't resolve module|value of \w+ must be one of",
    re.IGNORECASE,
)
# ansible-playbook's own exit codes when no host result explains the failure
RC_KINDS = {
    1: ErrorKind.INVALID,  # AnsibleError: e.g. a playbook or role that cannot be loaded
    2: ErrorKind.REJECTED,  # failed hosts
    4: ErrorKind.INVALID,  # parser error (or unreachable hosts, which the hosts explain)
    5: ErrorKind.INVALID,  # bad or incomplete options
    8: ErrorKind.REJECTED,  # a play was stopped by a failure (any_errors_fatal)
    GUARD_TIMEOUT_RC: ErrorKind.TIMEOUT,
}


def unreachable_kind(message: str) -> ErrorKind:
    """An unreachable host: refused credentials, no answer in time, or no connection."""
    if AUTH_PATTERN.search(message):
        return ErrorKind.AUTH
    if TIMEOUT_PATTERN.search(message):
        return ErrorKind.TIMEOUT
    return ErrorKind.UNREACHABLE


def failure_kind(message: str) -> ErrorKind:
    """A failed task: the host refused the change, unless the play or become was at fault."""
    if INVALID_PATTERN.search(message):
        return ErrorKind.INVALID
    if AUTH_PATTERN.search(message):
        return ErrorKind.AUTH
    if TIMEOUT_PATTERN.search(message):
        return ErrorKind.TIMEOUT
    return ErrorKind.REJECTED


def run_kind(status: str, rc: int | None) -> ErrorKind:
    """The kind of a play that failed as a whole (ansible-runner's status and the exit code):
    timeouts -> timeout; play, params and inventory problems -> invalid; a runner crash, a
    missing binary (rc 127), a killed or interrupted play -> internal."""
    if status == "timeout":
        return ErrorKind.TIMEOUT
    return RC_KINDS.get(rc if rc is not None else -1, ErrorKind.INTERNAL)


# --- speed: the strategy, and the SSH masters and facts the steps of one run share --------

MITOGEN_ENV = "INFRA_ANSIBLE_MITOGEN"  # "0": stock strategy, "1": mitogen or fail, else auto
# ansible-core minor releases mitogen 0.3 runs on (2.19 verified here with the guard and FIFO)
MITOGEN_CORE = ((2, 10), (2, 19))
CONTROL_PERSIST = 30  # seconds an idle SSH master of a run lives (the run closes them earlier)
SESSION_ENV = "INFRA_ANSIBLE_SESSION"  # "0": no SSH masters or facts shared by a run's steps
SESSION_KEY = "ansible.session"
SESSION_PREFIX = "infra-ansible-"


@dataclass(frozen=True)
class Strategy:
    """The strategy plugin ``ansible-playbook`` runs plays with, and why it was chosen."""

    name: str
    plugins: str | None = None  # the folder of a strategy plugin that is not Ansible's own
    note: str = ""

    @property
    def env(self) -> dict[str, str]:
        if self.plugins is None:
            return {}
        return {"ANSIBLE_STRATEGY": self.name, "ANSIBLE_STRATEGY_PLUGINS": self.plugins}


def choose_strategy(setting: str | None = None) -> Strategy:
    """``mitogen_linear`` when mitogen is installed and supports this ansible-core, otherwise
    Ansible's own ``linear``. ``INFRA_ANSIBLE_MITOGEN`` (or ``setting``): ``0`` always stock,
    ``1`` mitogen or an error saying why not, unset or ``auto``: mitogen where it can run."""
    raw = os.environ.get(MITOGEN_ENV, "auto") if setting is None else setting
    value = raw.strip().lower() or "auto"
    if value not in ("0", "1", "auto"):
        raise ConfigurationError(f"{MITOGEN_ENV}={raw!r}: expected 0, 1 or auto")
    if value == "0":
        return Strategy("linear", note=f"{MITOGEN_ENV}=0")
    plugins, note = mitogen_plugins()
    if plugins is None:
        if value == "1":
            raise ExecutorUnavailable(f"{MITOGEN_ENV}=1, but {note}")
        return Strategy("linear", note=note)
    return Strategy("mitogen_linear", str(plugins), note)


def mitogen_plugins() -> tuple[Path | None, str]:
    """mitogen's strategy plugin folder, or None; and what was found (or why not)."""
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or spec.origin is None:
        return None, "mitogen is not installed (pip install 'infra-automation[fast]')"
    core = _version("ansible-core")
    low, high = MITOGEN_CORE
    if not low <= core[:2] <= high:
        shown = ".".join(map(str, core)) or "unknown"
        return None, f"mitogen does not support ansible-core {shown} (only 2.10-2.19)"
    plugins = Path(spec.origin).parent / "plugins" / "strategy"
    if not (plugins / "mitogen_linear.py").is_file():
        return None, f"mitogen's strategy plugins are missing from {plugins.parent}"
    shown = ".".join(map(str, _version("mitogen")))
    return plugins, f"mitogen {shown}, ansible-core {'.'.join(map(str, core))}"


def _version(dist: str) -> tuple[int, ...]:
    try:
        text = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


@dataclass(frozen=True)
class AnsibleSession:
    """What the Ansible steps of one run share, in ``<tmp>/infra-ansible-<pid>-<start>-*``
    (short: SSH socket paths are limited to 108 bytes), mode 0700:

    - ``cp/``: the SSH ControlPersist masters, one per host: every play after the first
      one reuses its host's connection; the run closes them when it ends (``close``);
    - ``facts/``: Ansible's fact cache; with ``gathering = smart`` a host's facts are
      gathered by the first play of the run that reaches it and read from here after.

    A master carries no play: the guard of each play still kills every worker, and, when
    the step's process dies, this play's masters too. Masters of earlier steps whose run
    process died exit after ``CONTROL_PERSIST`` idle seconds or at the next step's sweep.
    """

    path: Path

    @property
    def control_dir(self) -> Path:
        return self.path / "cp"

    @property
    def fact_dir(self) -> Path:
        return self.path / "facts"

    def env(self) -> dict[str, str]:
        return {
            # no -C: compression costs CPU, the targets are near
            "ANSIBLE_SSH_ARGS": f"-o ControlMaster=auto -o ControlPersist={CONTROL_PERSIST}s"
            f" -o ControlPath={self.control_dir}/%C",
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.fact_dir),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "86400",
        }

    def close(self) -> None:
        close_masters(self.control_dir)
        shutil.rmtree(self.path, ignore_errors=True)


def new_session() -> AnsibleSession:
    owner = f"{os.getpid()}-{_start_time(os.getpid())}"
    path = Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{owner}-", dir=session_base()))
    for sub in ("cp", "facts"):
        (path / sub).mkdir(mode=0o700)
    return AnsibleSession(path)


def new_temp_dir() -> Path:
    """A step's temporary files (Ansible's local temp, mitogen's sockets): a short path, as
    UNIX sockets need (the step's private dir under a project root can be too long for
    mitogen, which then hangs at start), mode 0700, named like a session so that the sweep
    removes it when its owner is gone."""
    owner = f"{os.getpid()}-{_start_time(os.getpid())}"
    return Path(tempfile.mkdtemp(prefix=f"{SESSION_PREFIX}{owner}-tmp-", dir=session_base()))


# A UNIX socket path has at most 107 bytes; mitogen's sit two levels below the session dir.
SHORT_TEMP_MAX = 40


def session_base() -> Path:
    """Where sessions and step temp dirs go: the system temp dir, unless ``TMPDIR`` names a
    folder too deep for the sockets in them, then the root's ``/tmp``."""
    base = Path(tempfile.gettempdir())
    return base if len(str(base)) <= SHORT_TEMP_MAX else Path("/tmp")  # noqa: S108 - short path


def run_session(ctx: StepContext) -> AnsibleSession | None:
    """The run's session: made by its first Ansible step, closed by the scheduler at its end;
    none with ``INFRA_ANSIBLE_SESSION=0`` (each play its own connections and facts)."""
    raw = os.environ.get(SESSION_ENV, "1")
    if raw not in ("0", "1"):
        raise ConfigurationError(f"{SESSION_ENV}={raw!r}: expected 0 or 1")
    if raw == "0":
        return None
    return ctx.resources.get(SESSION_KEY, new_session, AnsibleSession.close)


def close_masters(control_dir: Path) -> None:
    """Ask each SSH master with a socket in ``control_dir`` to exit (``ssh -O exit``)."""
    ssh = shutil.which("ssh")
    if ssh is None or not control_dir.is_dir():
        return
    for socket in sorted(control_dir.iterdir()):
        subprocess.run(
            [ssh, "-o", f"ControlPath={socket}", "-O", "exit", "infra-master"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )


def sweep_sessions(tmp: Path | None = None) -> list[Path]:
    """Close and remove the sessions of processes that are gone (a killed run)."""
    removed: list[Path] = []
    for path in sorted(Path(tmp or session_base()).glob(f"{SESSION_PREFIX}*")):
        pid, _, rest = path.name.removeprefix(SESSION_PREFIX).partition("-")
        start = rest.partition("-")[0]
        if pid.isdigit() and _start_time(int(pid)) == start:
            continue
        AnsibleSession(path).close()
        removed.append(path)
    return removed


# --- the environment and the private dir of one job -----------------------------------------

# what ansible-playbook and ssh need from our environment; nothing else of it is passed on
FORWARDED_ENV = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "SSH_AUTH_SOCK")


def job_env(runner_env: Mapping[str, str], ours: Mapping[str, str]) -> dict[str, str]:
    """The environment of ``ansible-playbook``: what ansible-runner added to ``os.environ``,
    the operator's ``ANSIBLE_*`` settings, ``FORWARDED_ENV`` and ours; never ``INFRA_*``
    (secrets) or anything else of this process's environment."""
    added = {k: v for k, v in runner_env.items() if os.environ.get(k) != v}
    kept = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith("ANSIBLE_")}
    env = {**kept, **added, **ours}
    return {k: v for k, v in env.items() if not k.startswith("INFRA_")}


def _start_time(pid: int) -> str | None:
    """A process's start time (clock ticks since boot): with the pid, names one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def new_job_dir(state: Path, run_id: str, step_id: str) -> Path:
    """``<state>/jobs/<pid>-<start>-<run>-<step>-XXXX``, mode 0700, owned by this process."""
    jobs = state / JOBS_DIR
    jobs.mkdir(parents=True, exist_ok=True, mode=0o700)
    owner = f"{os.getpid()}-{_start_time(os.getpid())}"
    return Path(tempfile.mkdtemp(prefix=f"{owner}-{run_id}-{step_id}-", dir=jobs))


def sweep_jobs(state: Path) -> list[Path]:
    """Remove the job dirs of processes that are gone (killed mid-play), and what older
    versions left in ``<state>/<run>/<step>/`` (env/extravars, artifacts with the env)."""
    removed: list[Path] = []
    jobs = state / JOBS_DIR
    for path in sorted(jobs.iterdir()) if jobs.is_dir() else ():
        pid, _, rest = path.name.partition("-")
        start = rest.partition("-")[0]
        if not pid.isdigit() or _start_time(int(pid)) != start:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    for legacy in [*state.glob("*/*/env"), *state.glob("*/*/artifacts")]:
        if legacy.parts[len(state.parts)] not in (JOBS_DIR, "home"):
            shutil.rmtree(legacy, ignore_errors=True)
            removed.append(legacy)
    return removed


class SecretChannel:
    """Extra vars for ``-e @path`` through a FIFO (mode 0600): the text goes from this
    process's memory to the one reader, Ansible, which reads it once; no file holds it."""

    def __init__(self, path: Path, text: str, wait: float = 0.05) -> None:
        self.path = path
        self._data = text.encode()
        self._wait = wait
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="infra-extravars", daemon=True)

    def __enter__(self) -> SecretChannel:
        os.mkfifo(self.path, 0o600)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)

    def _feed(self) -> None:
        while not self._done.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # ENXIO: nobody reads yet
                    return
                self._done.wait(self._wait)
                continue
            try:
                os.set_blocking(fd, True)
                view = memoryview(self._data)
                while view:
                    view = view[os.write(fd, view) :]
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)
            return


# --- the guard: the play dies with the process that runs the step (ansible_guard.py) ---------


def guard_command(command: Sequence[str], timeout: int, keep: Path | None = None) -> list[str]:
    """``command`` under :func:`guard_main`, tied to this process, stopped after ``timeout``.
    When the play ends by itself, SSH masters with their socket in ``keep`` are left to the
    run (which closes them); when the guard stops the play, they are stopped with it. The
    guard runs as a script (no import of this package: it starts in a few milliseconds)."""
    options = [f"--keep={keep}"] if keep is not None else []
    return [
        *(sys.executable, "-I", ansible_guard.__file__, str(os.getpid()), str(timeout)),
        *(*options, "--", *command),
    ]
