"""infra-automation: from a service request to a finished, documented landscape."""

from infra_automation.exceptions import InfraError
from infra_automation.results import RunResult, Status, StepResult, TargetResult

__version__ = "0.1.0"

__all__ = ["InfraError", "RunResult", "Status", "StepResult", "TargetResult", "__version__"]
