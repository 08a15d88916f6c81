"""Result objects: failures are data, not exceptions."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from infra_automation.exceptions import StepsFailed


class ErrorKind(enum.StrEnum):
    """Why a step or target failed: what a UI shows and a retry policy decides on.

    Mapped at each executor's edge (:func:`error_kind_of` maps the exception tree).
    """

    UNREACHABLE = "unreachable"  # the target did not answer (connection refused, no route)
    AUTH = "auth"  # the target refused our credentials
    TIMEOUT = "timeout"  # the target did not answer in time
    REJECTED = "rejected"  # the target refused the change (config line, vSphere fault, play)
    INVALID = "invalid"  # our input was wrong (params, outputs, configuration, a template)
    INTERNAL = "internal"  # a bug or an unexpected failure on our side


class Status(enum.StrEnum):
    """Lifecycle of a step (and of a run)."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class TargetResult:
    """The part of a step that acted on one target (a router, a VM, a host)."""

    target: str
    status: Status
    changed: bool = False
    diff: str = ""
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    error_kind: ErrorKind | None = None

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED


@dataclass(frozen=True)
class StepResult:
    """What one step did. Executors build these; the scheduler fills in the timings."""

    status: Status
    changed: bool = False
    diff: str = ""
    outputs: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    targets: tuple[TargetResult, ...] = ()
    artifacts: Mapping[str, str] = field(default_factory=dict)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error_kind: ErrorKind | None = None

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def with_timings(self, started_at: datetime, finished_at: datetime) -> StepResult:
        return replace(self, started_at=started_at, finished_at=finished_at)

    @classmethod
    def success(
        cls,
        *,
        changed: bool = False,
        diff: str = "",
        outputs: Mapping[str, Any] | None = None,
        targets: tuple[TargetResult, ...] = (),
        artifacts: Mapping[str, str] | None = None,
    ) -> StepResult:
        return cls(
            status=Status.SUCCESS,
            changed=changed,
            diff=diff,
            outputs=dict(outputs or {}),
            targets=targets,
            artifacts=dict(artifacts or {}),
        )

    @classmethod
    def failure(
        cls,
        error: str,
        *,
        kind: ErrorKind = ErrorKind.INTERNAL,
        changed: bool = False,
        diff: str = "",
        outputs: Mapping[str, Any] | None = None,
        targets: tuple[TargetResult, ...] = (),
        artifacts: Mapping[str, str] | None = None,
    ) -> StepResult:
        return cls(
            status=Status.FAILED,
            changed=changed,
            diff=diff,
            outputs=dict(outputs or {}),
            error=error,
            targets=targets,
            artifacts=dict(artifacts or {}),
            error_kind=kind,
        )

    @classmethod
    def from_targets(
        cls,
        targets: tuple[TargetResult, ...],
        *,
        outputs: Mapping[str, Any] | None = None,
        artifacts: Mapping[str, str] | None = None,
    ) -> StepResult:
        """Aggregate per-target results: failed if any target failed."""
        failed = [t for t in targets if t.failed]
        diff = "".join(
            f"--- {t.target}\n{t.diff}" + ("" if t.diff.endswith("\n") else "\n")
            for t in targets
            if t.diff
        )
        error = "; ".join(f"{t.target}: {t.error}" for t in failed) or None
        kinds = [t.error_kind or ErrorKind.INTERNAL for t in failed]
        return cls(
            status=Status.FAILED if failed else Status.SUCCESS,
            changed=any(t.changed for t in targets),
            diff=diff,
            outputs=dict(outputs or {}),
            error=error,
            targets=targets,
            artifacts=dict(artifacts or {}),
            error_kind=worst_kind(kinds),
        )


# When targets of one step fail for different reasons, the step shows the first of these.
KIND_ORDER = tuple(ErrorKind)


def worst_kind(kinds: list[ErrorKind]) -> ErrorKind | None:
    """The kind a step shows for its failed targets' kinds (None when nothing failed)."""
    return min(kinds, key=KIND_ORDER.index) if kinds else None


def error_kind_of(exc: BaseException) -> ErrorKind:
    """The kind of an exception that reached an executor's edge or the step boundary."""
    from infra_automation.exceptions import (
        ConfigurationError,
        PlanningError,
        RenderError,
        RequestValidationError,
        TargetAuthError,
        TargetRejected,
        TargetTimeout,
        TargetUnreachable,
    )

    table: tuple[tuple[type[BaseException] | tuple[type[BaseException], ...], ErrorKind], ...] = (
        (TargetAuthError, ErrorKind.AUTH),
        ((TargetTimeout, TimeoutError), ErrorKind.TIMEOUT),
        ((TargetUnreachable, ConnectionError), ErrorKind.UNREACHABLE),
        (TargetRejected, ErrorKind.REJECTED),
        (
            (ConfigurationError, PlanningError, RenderError, RequestValidationError),
            ErrorKind.INVALID,
        ),
    )
    for types, kind in table:
        if isinstance(exc, types):
            return kind
    return ErrorKind.INTERNAL


@dataclass(frozen=True)
class RunResult:
    """The outcome of a whole run: one StepResult per step id."""

    run_id: str
    project: str
    check: bool
    steps: Mapping[str, StepResult]

    @property
    def failed(self) -> bool:
        return any(r.status is not Status.SUCCESS for r in self.steps.values())

    @property
    def failed_steps(self) -> tuple[str, ...]:
        return tuple(k for k, r in self.steps.items() if r.status is Status.FAILED)

    @property
    def skipped_steps(self) -> tuple[str, ...]:
        return tuple(k for k, r in self.steps.items() if r.status is Status.SKIPPED)

    @property
    def changed(self) -> bool:
        return any(r.changed for r in self.steps.values())

    def raise_for_status(self) -> None:
        if self.failed:
            raise StepsFailed(self)

    def redacted(self) -> RunResult:
        """A copy with every known secret masked (for printing, JSON and JUnit reports)."""
        from infra_automation.secrets import redact

        def mask(r: StepResult) -> StepResult:
            targets = tuple(
                replace(
                    t,
                    diff=redact(t.diff),
                    error=redact(t.error),
                    details=redact(dict(t.details)),
                )
                for t in r.targets
            )
            return replace(
                r,
                diff=redact(r.diff),
                error=redact(r.error),
                outputs=redact(dict(r.outputs)),
                artifacts=redact(dict(r.artifacts)),
                targets=targets,
            )

        return replace(self, steps={k: mask(r) for k, r in self.steps.items()})
