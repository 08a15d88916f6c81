"""Settings: where the project lives and where runs are recorded.

Read, later sources winning, from defaults, ``<root>/infra.toml`` and the environment::

    # infra.toml (every key optional)
    database_url = "sqlite:///.infra/runs.db"   # any SQLAlchemy URL
    inventory = "inventories/lab"              # default inventory folder of requests
    catalog_dir = "catalog"
    requests_dir = "requests"
    docs_dir = "docs"
    parallel = 4
    plugins = ["my_company.executors"]         # modules imported at start (they register executors)
    lease_ttl = 30          # seconds a dead run keeps its project and device locks (1-30)
    database_timeout = 30   # seconds a database write waits for a lock before the run fails
    broker_url = "redis://127.0.0.1:6379/0"   # Celery broker: runs go to `infra worker`s
    scheduler_queue = "runs"   # the queue of "schedule this run" (workers serving it schedule)
    verify_every = "1h"        # `infra worker --beat`: verify every project this often (off)
    drift_webhook = "https://hooks.example/drift"   # POST when verify finds drift (off)

    [queues]                   # department -> Celery queue (none: each department's name)
    os = "ansible"             # with [queues], map every department the catalog uses:
    network = "network"        # workers and submissions refuse one left out (exit 2)

Environment: ``INFRA_ROOT`` (the project root, default: the current directory),
``INFRA_DATABASE_URL``, ``INFRA_BROKER_URL``, ``INFRA_LEASE_TTL``, ``INFRA_DATABASE_TIMEOUT``
and ``INFRA_PLUGINS`` (comma-separated module names, added to ``plugins``). Relative paths are
relative to the root.
No broker URL: runs execute in the process that starts them (threads); with one, ``infra
apply`` submits them to the workers (:mod:`infra_automation.workers`).
"""

from __future__ import annotations

import importlib
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from infra_automation.exceptions import ConfigurationError

CONFIG_FILE = "infra.toml"
STATE_DIR = ".infra"


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one project root (all paths absolute)."""

    root: Path
    database_url: str
    inventory: Path
    catalog_dir: Path
    requests_dir: Path
    docs_dir: Path
    state_dir: Path
    parallel: int = 4
    plugins: tuple[str, ...] = ()
    lease_ttl: float = 30.0
    database_timeout: float = 30.0
    broker_url: str | None = None
    queues: Mapping[str, str] = field(default_factory=dict)
    scheduler_queue: str = "runs"
    verify_every: str | None = None  # e.g. "1h" (infra_automation.workers.beat parses it)
    drift_webhook: str | None = None

    def queue_of(self, department: str) -> str:
        """The Celery queue that carries the steps of ``department``."""
        return self.queues.get(department, department)


QUEUE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
DURATION = r"^([1-9][0-9]*[smhd])+$"  # "90s", "15m", "1h30m", "1d"


class _FileSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    database_url: str | None = None
    inventory: str = "inventories/lab"
    catalog_dir: str = "catalog"
    requests_dir: str = "requests"
    docs_dir: str = "docs"
    parallel: int = Field(default=4, ge=1, le=256)
    plugins: list[str] = Field(default_factory=list)
    lease_ttl: float = Field(default=30.0, gt=0, le=30)
    database_timeout: float = Field(default=30.0, gt=0, le=3600)
    broker_url: str | None = None
    scheduler_queue: str = Field(default="runs", pattern=QUEUE_NAME)
    queues: dict[str, Annotated[str, Field(pattern=QUEUE_NAME)]] = Field(default_factory=dict)
    verify_every: str | None = Field(default=None, pattern=DURATION)
    drift_webhook: str | None = Field(default=None, pattern=r"^https?://\S+$")


def load_settings(root: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings for ``root`` (or ``$INFRA_ROOT``, or the current directory)."""
    env = os.environ if env is None else env
    base = Path(root or env.get("INFRA_ROOT") or Path.cwd()).resolve()
    spec = _with_env(_read_file(base / CONFIG_FILE), env)
    state = base / STATE_DIR
    url = env.get("INFRA_DATABASE_URL") or spec.database_url or f"sqlite:///{state / 'runs.db'}"
    extra_plugins = [p.strip() for p in env.get("INFRA_PLUGINS", "").split(",") if p.strip()]
    return Settings(
        root=base,
        database_url=url,
        inventory=_under(base, spec.inventory),
        catalog_dir=_under(base, spec.catalog_dir),
        requests_dir=_under(base, spec.requests_dir),
        docs_dir=_under(base, spec.docs_dir),
        state_dir=state,
        parallel=spec.parallel,
        plugins=tuple(dict.fromkeys([*spec.plugins, *extra_plugins])),
        lease_ttl=spec.lease_ttl,
        database_timeout=spec.database_timeout,
        broker_url=env.get("INFRA_BROKER_URL") or spec.broker_url or None,
        queues=dict(spec.queues),
        scheduler_queue=spec.scheduler_queue,
        verify_every=spec.verify_every,
        drift_webhook=spec.drift_webhook,
    )


ENV_NUMBERS = {"lease_ttl": "INFRA_LEASE_TTL", "database_timeout": "INFRA_DATABASE_TIMEOUT"}


def _with_env(spec: _FileSettings, env: Mapping[str, str]) -> _FileSettings:
    """The file's settings with the numbers given in the environment, validated alike."""
    given = {key: env[name] for key, name in ENV_NUMBERS.items() if env.get(name)}
    if not given:
        return spec
    try:
        return _FileSettings.model_validate({**spec.model_dump(), **given})
    except ValidationError as exc:
        errors = "; ".join(
            f"{ENV_NUMBERS.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"environment: {errors}") from exc


def _under(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _read_file(path: Path) -> _FileSettings:
    if not path.is_file():
        return _FileSettings()
    try:
        data = tomllib.loads(path.read_text())
        return _FileSettings.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}") from exc
    except ValidationError as exc:
        errors = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"{path}: {errors}") from exc


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Import plugin modules (they register executors on import); returns their names."""
    loaded: list[str] = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigurationError(f"plugin {name!r} cannot be imported: {exc}") from exc
        loaded.append(name)
    return loaded
