"""Executors: the one extension point through which departments do real work.

An executor is keyed ``"<department>.<action>"`` and satisfies :class:`Executor`:
``preview`` (check mode: what would change, nothing is changed) and ``apply``.
Both return a :class:`~infra_automation.results.StepResult`; target failures are
results, not exceptions. Executors are found in :data:`REGISTRY`, which is filled
from the ``infra_automation.executors`` entry-point group (third parties add theirs
there) and by :func:`register` (tests, plugins loaded at run time).

Planning reads only what an executor declares (``REGISTRY.info(key)``: its params and
outputs models, the content files it uses); running instantiates it (``REGISTRY.get(key)``),
and only then are the SDKs it ``requires`` checked.
"""

from __future__ import annotations

from infra_automation.executors.base import (
    Executor,
    ExecutorInfo,
    NoParams,
    RunResources,
    StepContext,
)
from infra_automation.executors.registry import REGISTRY, ExecutorRegistry, register

__all__ = [
    "REGISTRY",
    "Executor",
    "ExecutorInfo",
    "ExecutorRegistry",
    "NoParams",
    "RunResources",
    "StepContext",
    "register",
]
