"""One exception tree for infra-automation.

::

    InfraError
    ├── ConfigurationError            settings, catalog or inventory files are wrong
    │   ├── CatalogError              a service definition is invalid or missing
    │   └── InputFileError            a YAML input file cannot be read or parsed (file, line)
    ├── RequestValidationError        a service request failed validation (carries field errors)
    ├── PlanningError                 the plan cannot be built
    │   ├── CycleError                steps depend on each other in a loop (names the cycle)
    │   ├── UnknownStepError          a dependency or reference names a step that does not exist
    │   └── ReferenceError_           a parameter reads outputs of a step that is not upstream
    ├── RenderError                   a template failed (names template and line)
    ├── ExecutorError
    │   ├── ExecutorNotFound          no executor registered under that key
    │   └── ExecutorUnavailable       registered, but its SDK is not installed (names the extra)
    ├── TargetError                   a real target refused or failed
    │   ├── TargetUnreachable         (also ConnectionError)
    │   ├── TargetAuthError           (also PermissionError)
    │   ├── TargetTimeout             (also TimeoutError)
    │   └── TargetRejected            the target rejected a change (config line, vSphere fault)
    ├── RunError
    │   ├── RunLocked                 another run of the same project is active
    │   ├── RunNotFound
    │   ├── RecordError               the run record cannot be written or read (locked, disk full)
    │   ├── ResumeRefused             finished steps changed definition since the run (lists them)
    │   └── StepsFailed               raised by RunResult.raise_for_status()
    ├── LabError                      the local lab cannot be started / is missing packages
    ├── ServiceError                  the infra server refused or failed an API call (status)
    └── ChangeError                   a change record cannot be found or used (names the id)

The library never prints and never exits; only the CLI maps these to messages and exit codes.
Executors return failed results rather than raising; the step boundary converts any exception
that escapes an executor into a failed result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from infra_automation.results import RunResult


class InfraError(Exception):
    """Base class of every error raised by infra-automation."""


class ConfigurationError(InfraError):
    """Settings, catalog or inventory files are wrong."""


class CatalogError(ConfigurationError):
    """A service definition is invalid or cannot be found."""


@dataclass(frozen=True)
class FieldError:
    """One bad field of a request: dotted location and the reason."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class RequestValidationError(InfraError):
    """The request is invalid; ``errors`` names each bad field and why."""

    def __init__(self, errors: Sequence[FieldError], source: str = "request") -> None:
        self.errors = tuple(errors)
        self.source = source
        lines = "\n".join(f"  - {e}" for e in self.errors)
        super().__init__(f"invalid {source}:\n{lines}")


class PlanningError(InfraError):
    """The plan cannot be built from the service and request."""


class CycleError(PlanningError):
    """Steps depend on each other in a loop."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__("dependency cycle: " + " -> ".join(self.cycle))


class UnknownStepError(PlanningError):
    """A dependency or reference names a step that does not exist."""


class ReferenceError_(PlanningError):
    """A parameter reads outputs of a step that is not upstream of it."""


class RenderError(InfraError):
    """A template failed to render; the message names the template and line."""

    def __init__(self, template: str, line: int | None, message: str) -> None:
        self.template = template
        self.line = line
        where = f"{template}:{line}" if line else template
        super().__init__(f"{where}: {message}")


class ExecutorError(InfraError):
    """Base for executor lookup problems."""


class ExecutorNotFound(ExecutorError):
    """No executor is registered under the key."""


class ExecutorUnavailable(ExecutorError):
    """The executor exists but its SDK is not installed."""


class TargetError(InfraError):
    """A real target (router, vCenter, host) refused or failed."""


class TargetUnreachable(TargetError, ConnectionError):
    """The target cannot be reached."""


class TargetAuthError(TargetError, PermissionError):
    """The target refused our credentials."""


class TargetTimeout(TargetError, TimeoutError):
    """The target did not answer in time."""


class TargetRejected(TargetError):
    """The target rejected a change (a config line, a vSphere fault)."""


class RunError(InfraError):
    """Problems with runs as a whole."""


class RunLocked(RunError):
    """Another run of the same project is active."""


class RunNotFound(RunError):
    """No run with that id."""


class RecordError(RunError):
    """The run record cannot be written or read (database locked past its timeout, disk full)."""


class StepsFailed(RunError):
    """One or more steps failed; carries the run result."""

    def __init__(self, result: RunResult) -> None:
        self.result = result
        names = ", ".join(s for s in result.failed_steps)
        super().__init__(f"run {result.run_id}: failed steps: {names}")


class LabError(InfraError):
    """The local lab cannot be started, or something it needs is missing."""


class InputFileError(ConfigurationError):
    """A YAML input file (request, catalog, inventory, secrets) cannot be read or parsed.

    Names the file and, where known, the line and column; never quotes the file's content.
    """

    def __init__(
        self, path: Path, problem: str, *, line: int | None = None, column: int | None = None
    ) -> None:
        self.path = path
        self.problem = problem
        self.line = line
        self.column = column
        where = f"{path}:{line}:{column}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class ResumeRefused(RunError):
    """A resume was asked to refuse, and finished steps of the run changed definition."""

    def __init__(self, run_id: str, changes: Sequence[str]) -> None:
        self.run_id = run_id
        self.changes = tuple(changes)
        lines = "\n".join(f"  - {c}" for c in self.changes)
        super().__init__(
            f"run {run_id}: the definition of finished steps changed since it ran:\n{lines}\n"
            "re-run them (the default) or apply the request again"
        )


class ServiceError(InfraError):
    """The infra server (``infra --server URL``) refused or failed a call: HTTP ``status``,
    the ``error`` code of its body and its message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        self.status = status
        self.error = error
        super().__init__(f"server answered {status} ({error}): {message}")


class ChangeError(InfraError):
    """A change record cannot be found or used (unknown id, ambiguous prefix, bad policy)."""
