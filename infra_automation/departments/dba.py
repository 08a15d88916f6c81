"""The DBA department: the project's PostgreSQL database, its owner role and its clients.

``dba.postgresql`` runs ``playbooks/database.yml`` (through the ``os.playbook`` executor,
with its guard, session, redaction and read-back) on the project's database VM and its
clients (the web VMs):

- on the server: PostgreSQL from Debian's packages, the cluster started without systemd
  (``pg_ctlcluster``), ``listen_addresses`` on the server's own address, ``pg_hba.conf``
  admitting the owner role to the project's database from the clients' addresses only
  (``scram-sha-256``), the database, its owner and a ``landing`` table with one row;
- on each client: the connection settings (``/etc/infra-dba/<project>.conninfo``, mode 0640,
  group ``www-data``) that the web tier's landing page reads, and a connection as the owner;
- read back and checked by the play: the database and its owner, the addresses the server
  listens on and admits, the row, a connection from every client, and that the owner is
  refused over TCP from the server's own address (not a client: ``pg_hba`` says no).

The owner's password is generated once, here, the first time the project's database is
applied (32 letters and digits from :mod:`secrets`), and kept as the named secret
``db_password_<database>`` in the inventory's secrets file (``generated/secrets.yml``, mode
0600); later runs read it back, so a re-apply keeps it. An operator may set it instead
(``INFRA_SECRET_DB_PASSWORD_<DATABASE>``, or in a backend such as Vault, which this module
never writes). It is registered for masking before any use and reaches Ansible only through
the executor's secret channel (``secret_vars``): never a parameter, an output, a log line,
the record or the docs. A dry run of a project whose password does not exist yet uses a
throwaway one and keeps nothing. ``dba.forget`` (decommission) removes the kept password.
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets as random_source
import string
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from infra_automation import yamlio
from infra_automation.departments.ansible import HostAddress, PlaybookExecutor, PlaybookParams
from infra_automation.exceptions import ConfigurationError
from infra_automation.executors.base import ExecutorInfo, StepContext
from infra_automation.files import write_atomic
from infra_automation.results import ErrorKind, StepResult
from infra_automation.secrets import ENV_PREFIX, FileBackend, Secrets, remember
from infra_automation.validation import Name, SafeText

if TYPE_CHECKING:
    from infra_automation.verify import ResourceCheck, VerifyContext, VerifyResult

PLAYBOOK = "database.yml"
PASSWORD_VAR = "database_password"  # noqa: S105 - a variable name, not a value
PASSWORD_LENGTH = 32
PASSWORD_ALPHABET = string.ascii_letters + string.digits
# What a password set by an operator may hold: it goes into a libpq connection string and a
# SQL literal (both escaped by the role), but never a space or a control character.
PASSWORD_RE = re.compile(r"^[\x21-\x7e]{12,128}$")
PgName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]


def pg_name(project: str) -> str:
    """A PostgreSQL identifier from a project name (``my-shop`` -> ``my_shop``)."""
    return project.replace("-", "_")


def secret_name(database: str) -> str:
    """The name of the secret that keeps the owner's password of ``database``."""
    return f"db_password_{database}"


# --- params and outputs ---------------------------------------------------------------------


class PostgresParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: Name
    server: HostAddress = Field(description="the database VM (a vmware.vms record)")
    clients: list[HostAddress] = Field(min_length=1, max_length=50, description="the web VMs")
    database: PgName | None = Field(default=None, description="default: the project's name")
    owner: PgName | None = Field(default=None, description="default: <database>_owner")
    message: SafeText = Field(default="", description="the row the landing page shows")
    timeout: int = Field(default=1800, ge=10, le=86400)

    @property
    def db(self) -> str:
        return self.database or pg_name(self.project)

    @property
    def role(self) -> str:
        return self.owner or f"{self.db}_owner"

    @property
    def row(self) -> str:
        return self.message or f"Hello from the {self.project} database"


class PostgresOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str
    owner: str
    server: str  # the database VM
    address: str = ""  # where the clients connect (the server's own address, read back)
    port: int = 5432
    server_version: str = ""
    clients: list[str] = Field(default_factory=list)  # addresses pg_hba admits (read back)
    client_hosts: list[str] = Field(default_factory=list)  # the VMs that connected
    refused_from: str = ""  # a non-client address the owner was refused from
    message: str = ""  # the row, read back
    check: bool = False
    hosts: dict[str, Any] = Field(default_factory=dict)  # what os.playbook read back per host


class ForgetParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: Name
    database: PgName | None = None

    @property
    def db(self) -> str:
        return self.database or pg_name(self.project)


class ForgetOutputs(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: str
    forgotten: bool  # a kept password was removed (or would be, in a dry run)


# --- the executors --------------------------------------------------------------------------


class PostgresExecutor:
    info = ExecutorInfo(
        key="dba.postgresql",
        department="dba",
        description="The project's PostgreSQL database and owner on its db VM, for its web VMs.",
        params=PostgresParams,
        outputs=PostgresOutputs,
        supports_check=True,
        requires=("ansible_runner",),
        extra="ansible",
        content=(
            f"playbooks/{PLAYBOOK}",
            "playbooks/roles/database/**",
            "playbooks/roles/report/**",
        ),
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=True)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=ctx.check)

    def verify(self, ctx: VerifyContext) -> VerifyResult:
        """The play in check mode (it reads back, changes nothing), compared with the record."""
        from infra_automation.verify import VerifyResult

        return VerifyResult(tuple(verify_checks(ctx.recorded, self._run(ctx.step, check=True))))

    def _run(self, ctx: StepContext, *, check: bool) -> StepResult:
        params = ctx.typed_params(PostgresParams)
        name = secret_name(params.db)
        try:
            password, generated = owner_password(ctx, name, check=check)
        except ConfigurationError as exc:
            return StepResult.failure(str(exc), kind=ErrorKind.INVALID)
        play_ctx = replace(
            ctx,
            params=playbook_params(params, name),
            secrets=Secrets(env={}, backend=KnownSecret(name, password, ctx.secrets)),
        )
        playbook = PlaybookExecutor()
        result = playbook.preview(play_ctx) if check else playbook.apply(play_ctx)
        outputs = database_outputs(params, result.outputs, check=check)
        return replace(result, changed=result.changed or generated, outputs=outputs)


class ForgetExecutor:
    info = ExecutorInfo(
        key="dba.forget",
        department="dba",
        description="Remove the kept password of the project's database owner (decommission).",
        params=ForgetParams,
        outputs=ForgetOutputs,
        supports_check=True,
        rerun_safe=True,
    )

    def preview(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=True)

    def apply(self, ctx: StepContext) -> StepResult:
        return self._run(ctx, check=ctx.check)

    def _run(self, ctx: StepContext, *, check: bool) -> StepResult:
        params = ctx.typed_params(ForgetParams)
        try:
            kept = secrets_file(ctx)
            forgotten = forget(kept, secret_name(params.db), check=check) if kept else False
        except ConfigurationError as exc:
            return StepResult.failure(str(exc), kind=ErrorKind.INVALID)
        diff = f"- secret {secret_name(params.db)} (kept password)\n" if forgotten else ""
        outputs = ForgetOutputs(database=params.db, forgotten=forgotten)
        return StepResult.success(changed=forgotten, diff=diff, outputs=outputs.model_dump())


def playbook_params(params: PostgresParams, secret: str) -> PlaybookParams:
    """The ``os.playbook`` params of the step: server first, then the clients."""
    clients = [c for c in params.clients if c.name != params.server.name]
    return PlaybookParams(
        playbook=PLAYBOOK,
        hosts=[params.server, *clients],
        vars={
            "database_server": params.server.name,
            "database_clients": [c.name for c in clients],
            "database_name": params.db,
            "database_owner": params.role,
            "database_message": params.row,
        },
        secret_vars={PASSWORD_VAR: secret},
        timeout=params.timeout,
    )


def database_outputs(
    params: PostgresParams, played: Mapping[str, Any], *, check: bool
) -> dict[str, Any]:
    """The step's outputs: the server's read-back facts, the clients that connected."""
    hosts = dict(played.get("hosts") or {})
    server = _facts(hosts.get(params.server.name))
    connected = [n for n, h in hosts.items() if _facts(h).get("connected") is True]
    outputs = PostgresOutputs(
        database=str(server.get("database") or params.db),
        owner=str(server.get("owner") or params.role),
        server=params.server.name,
        address=str(server.get("address") or ""),
        port=int(server.get("port") or 5432),
        server_version=str(server.get("server_version") or ""),
        clients=[str(a) for a in server.get("clients") or []],
        client_hosts=sorted(connected),
        refused_from=str(server.get("refused_from") or ""),
        message=str(server.get("message") or ""),
        check=check,
        hosts=hosts,
    )
    return outputs.model_dump()


UNREACHED = (ErrorKind.UNREACHABLE, ErrorKind.AUTH, ErrorKind.TIMEOUT)


def verify_checks(recorded: Mapping[str, Any], found: StepResult) -> list[ResourceCheck]:
    """Resources of the database against what the step recorded: the database and its
    owner, the listen address, the admitted clients, the row, each client's connection, the
    refusal from elsewhere, and the configuration files (a dry run that would change them)."""
    from infra_automation.verify import ResourceCheck

    database = str(recorded.get("database", ""))
    if found.failed:
        reason = found.error or "the database play failed"
        if found.error_kind in UNREACHED:
            return [
                ResourceCheck.unverifiable(f"database {database}", reason, kind=found.error_kind)
            ]
        return [ResourceCheck.drifted(f"database {database}", expected="as recorded", found=reason)]
    now = found.outputs
    checks = [
        ResourceCheck.compare(f"database {database}", _owned(recorded), _owned(now)),
        ResourceCheck.compare(
            "listen address", str(recorded.get("address")), str(now.get("address"))
        ),
        ResourceCheck.compare(
            "clients admitted", _listed(recorded, "clients"), _listed(now, "clients")
        ),
        ResourceCheck.compare("landing row", str(recorded.get("message")), str(now.get("message"))),
        ResourceCheck.compare(
            "refused from", str(recorded.get("refused_from")), str(now.get("refused_from"))
        ),
    ]
    connected = set(now.get("client_hosts") or [])
    checks += [
        ResourceCheck.compare(
            f"connection from {host}", "connected", "connected" if host in connected else "refused"
        )
        for host in recorded.get("client_hosts") or []
    ]
    files = "would change" if found.changed else "as applied"
    checks.append(ResourceCheck.compare("configuration", "as applied", files, reason=found.diff))
    return checks


def _owned(outputs: Mapping[str, Any]) -> str:
    return f"{outputs.get('database')} owned by {outputs.get('owner')}"


def _listed(outputs: Mapping[str, Any], key: str) -> str:
    return "\n".join(sorted(str(v) for v in outputs.get(key) or []))


def _facts(host: Any) -> Mapping[str, Any]:
    facts = host.get("facts") if isinstance(host, Mapping) else None
    return facts if isinstance(facts, Mapping) else {}


# --- the owner's password: generated once, kept as a secret ---------------------------------


class KnownSecret:
    """A secrets backend that knows one value and asks ``fallback`` for every other name."""

    def __init__(self, name: str, value: str, fallback: Secrets | None) -> None:
        self._name = name
        self._value = value
        self._fallback = fallback

    def find(self, name: str) -> str | None:
        if name == self._name:
            return self._value
        return self._fallback.find(name) if self._fallback is not None else None

    def where(self) -> str:
        return self._fallback.backend.where() if self._fallback is not None else "nowhere"


def owner_password(ctx: StepContext, name: str, *, check: bool) -> tuple[str, bool]:
    """The kept password (and False), or a new one kept now (and True); in a dry run a new
    one is a throwaway that nothing keeps."""
    if ctx.secrets is None:
        raise ConfigurationError(f"step {ctx.step_id}: no secrets were handed to the step")
    found = ctx.secrets.find(name)
    if found is not None:
        return checked_password(name, found), False
    password = new_password()
    if check:
        return password, True
    path = secrets_file(ctx)
    if path is None:
        raise ConfigurationError(
            f"secret {name!r} is not set, and the secrets backend "
            f"({ctx.secrets.backend.where()}) cannot keep a generated one: "
            f"export {ENV_PREFIX}{name.upper()} or add it to the backend"
        )
    return keep(path, name, password)


def new_password() -> str:
    password = "".join(random_source.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_LENGTH))
    remember(password)  # masked from now on, before anything can print it
    return password


def checked_password(name: str, value: str) -> str:
    if not PASSWORD_RE.fullmatch(value):
        raise ConfigurationError(
            f"secret {name!r}: a database password must be 12-128 printable ASCII characters "
            "without spaces"
        )
    return value


def secrets_file(ctx: StepContext) -> Path | None:
    """The secrets file generated secrets are kept in: the file backend's first file."""
    if ctx.secrets is None:
        return None
    backend = ctx.secrets.backend
    if isinstance(backend, FileBackend) and backend.files:
        return backend.files[0]
    return None


def keep(path: Path, name: str, password: str) -> tuple[str, bool]:
    """Add ``name`` to the secrets file unless another run kept one meanwhile (then that)."""
    with _locked(path):
        values = _read(path)
        if name in values:
            return checked_password(name, str(values[name])), False
        write_atomic(path, _with(path, values, name, password), mode=0o600)
    return password, True


def forget(path: Path, name: str, *, check: bool) -> bool:
    """Remove ``name`` from the secrets file; whether it was there."""
    with _locked(path):
        values = _read(path)
        if name not in values:
            return False
        if not check:
            rest = {k: str(v) for k, v in values.items() if k != name}
            write_atomic(path, _dump(rest), mode=0o600)
    return True


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return yamlio.load_mapping(
        path, literal=True, aliases=False, secret=True, max_bytes=yamlio.SECRETS_MAX_BYTES
    )


def _with(path: Path, values: Mapping[str, Any], name: str, password: str) -> str:
    """The file with one line added (the other lines as written); a new file if empty."""
    text = path.read_text(encoding="utf-8") if values else ""
    if text and not text.endswith("\n"):
        text += "\n"
    return text + _dump({name: password})


def _dump(values: Mapping[str, str]) -> str:
    return yaml.safe_dump(dict(values), sort_keys=True, default_flow_style=False) if values else ""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer of the secrets file at a time (runs and workers of this machine)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
