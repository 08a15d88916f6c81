"""The executor Protocol and the context handed to each step."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel, ConfigDict

from infra_automation.results import StepResult

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from infra_automation.inventory import Inventory
    from infra_automation.secrets import Secrets

T = TypeVar("T")
P = TypeVar("P", bound=BaseModel)


class NoParams(BaseModel):
    """Parameters model for executors that take none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoOutputs(BaseModel):
    """Outputs model for executors that produce none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class ExecutorInfo:
    """What the engine needs to know about an executor before running it.

    ``params`` validates the rendered step parameters (typed input); ``outputs``
    validates what the step hands to downstream steps (typed output). The planner
    checks that ``steps.<id>.outputs.<field>`` references name a field of the
    upstream executor's ``outputs`` model.
    """

    key: str
    department: str
    description: str
    params: type[BaseModel] = NoParams
    outputs: type[BaseModel] = NoOutputs
    supports_check: bool = True
    requires: tuple[str, ...] = ()  # optional SDK modules, e.g. ("pyVmomi",): checked by get()
    extra: str = ""  # the pip extra that installs them, e.g. "vmware"
    # Content files a step uses (pinned in the run; a change re-runs the step on resume):
    # globs under the project root, "{param}" = a static param (see infra_automation.pinning).
    content: tuple[str, ...] = ()
    # May run again after its worker died mid-step (read-only or idempotent): a worker that
    # dies leaves such a step to another worker; any other waits for `infra resume`.
    rerun_safe: bool = False


@runtime_checkable
class Executor(Protocol):
    """A department action. Implementations must not raise for target failures."""

    info: ExecutorInfo

    def preview(self, ctx: StepContext) -> StepResult:
        """Check mode: report what apply would change (diff, planned outputs); change nothing."""
        ...

    def apply(self, ctx: StepContext) -> StepResult:
        """Make the change; return what changed, the diff and the outputs."""
        ...


class RunResources:
    """Per-run shared resources (device connections, vCenter sessions).

    The first step that asks for ``key`` creates it; later steps of the same run reuse it;
    the scheduler closes everything when the run ends (``close`` callbacks, LIFO).
    Thread-safe: steps run in parallel.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._items: dict[str, Any] = {}
        self._closers: list[tuple[str, Callable[[Any], None]]] = []
        self._key_locks: dict[str, threading.Lock] = {}

    def get(
        self,
        key: str,
        factory: Callable[[], T],
        close: Callable[[T], None] | None = None,
    ) -> T:
        with self._lock:
            if key in self._items:
                return self._items[key]  # type: ignore[no-any-return]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._items:
                    return self._items[key]  # type: ignore[no-any-return]
            value = factory()
            with self._lock:
                self._items[key] = value
                if close is not None:
                    self._closers.append((key, close))
            return value

    def close(self) -> list[str]:
        """Close all resources; returns error messages of closers that failed."""
        errors: list[str] = []
        with self._lock:
            closers = list(reversed(self._closers))
            items = dict(self._items)
            self._closers.clear()
            self._items.clear()
        for key, closer in closers:
            try:
                closer(items[key])
            except Exception as exc:
                errors.append(f"{key}: {exc}")
        return errors


def _no_emit(kind: str, data: Mapping[str, Any]) -> None:
    return None


def _no_followers() -> tuple[StepContext, ...]:
    return ()


@dataclass(frozen=True)
class StepContext:
    """Everything a step may use. Built by the scheduler, one per step execution.

    ``params`` is the validated instance of the executor's ``info.params`` model.
    ``emit(kind, data)`` records an event in the run record and the progress view
    (e.g. ``emit("task", {"host": "web1", "task": "install nginx", "status": "ok"})``).
    ``db`` is the run record's SQLAlchemy engine (IPAM keeps its allocations there).
    ``peers``: the steps of the run the scheduler started at the same moment with the same
    executor (an executor may wait for them to share work: ``os.playbook`` runs such steps
    on the same hosts in one ``ansible-playbook``); empty for a step started alone.
    ``followers()``: the contexts, prepared now, of the steps that wait for this one only and
    have the same executor, whose params do not name this step (so this step's outputs
    cannot change them). An executor may start their work right after this step's, in one
    process (``os.playbook`` does, gated: a follower's work begins only once the scheduler
    started that step); each still starts, and is recorded, when the scheduler starts it.
    """

    run_id: str
    project: str
    step_id: str
    department: str
    params: BaseModel
    inventory: Inventory
    check: bool = False
    targets: tuple[str, ...] = ()
    secrets: Secrets | None = None
    resources: RunResources = field(default_factory=RunResources)
    emit: Callable[[str, Mapping[str, Any]], None] = _no_emit
    db: Engine | None = None
    root: Path = field(default_factory=Path.cwd)
    upstream: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    peers: tuple[str, ...] = ()
    followers: Callable[[], tuple[StepContext, ...]] = _no_followers

    def typed_params(self, model: type[P]) -> P:
        """The params as the executor's own model (narrowed for mypy)."""
        if not isinstance(self.params, model):
            return model.model_validate(self.params.model_dump())
        return self.params
