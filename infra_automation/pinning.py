"""Pinned runs: what each planned step was defined as, and resuming only what is unchanged.

Every planned step carries a :class:`StepPin`: SHA-256 digests of

- its definition in the catalog (raw ``params``, ``targets``, ``when``, ``needs``),
- its executor's key and the JSON schema of the executor's params and outputs models,
- the content files the step uses (``path -> sha256``).

The pin's :attr:`~StepPin.fingerprint` digests all of these. It goes into the plan a run
records (:meth:`~infra_automation.planner.Plan.summary`), so a resume can tell which finished
steps are still what would run now (:func:`reusable_results`).

Content files are declared by the executor, as data, in ``ExecutorInfo.content``: glob
patterns relative to the project root, where ``{name}`` stands for the step's static param
``name``, e.g. ``("playbooks/{playbook}", "playbooks/roles/**")`` for ``os.playbook``. A
``templates/...`` pattern that matches nothing under the root is looked up in the package's
default templates (recorded as ``package:templates/...``); a pattern matching nothing at all
is recorded as missing, so adding the file later changes the pin too. Declaring is reading an
attribute of the executor's info: no SDK is imported.

:func:`content_revision` is what a run records next to its plan: the catalog service file,
the content files of all steps, and the git commit (with a dirty flag) of the root.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, PydanticUserError

from infra_automation.catalog import StepDef, TargetSelection, load_catalog
from infra_automation.config import load_settings
from infra_automation.exceptions import ConfigurationError, ResumeRefused
from infra_automation.render import package_templates
from infra_automation.results import Status, StepResult, TargetResult
from infra_automation.secrets import MASK

if TYPE_CHECKING:
    from infra_automation.executors.base import ExecutorInfo
    from infra_automation.planner import Plan
    from infra_automation.record import RunRecord, StepRecord

PACKAGE_PREFIX = "package:"
MISSING = "missing"
_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SAFE_PATH_RE = re.compile(r"[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*")
GIT_TIMEOUT = 10.0


# --- pins -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepPin:
    """Digests of what defines one planned step; ``content`` is None if no root was given."""

    executor: str
    definition: str
    params_model: str
    outputs_model: str
    content: Mapping[str, str] | None = field(default_factory=dict)

    @property
    def fingerprint(self) -> str:
        return _digest(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "executor": self.executor,
            "definition": self.definition,
            "params_model": self.params_model,
            "outputs_model": self.outputs_model,
            "content": None if self.content is None else dict(self.content),
        }

    @classmethod
    def from_dict(cls, data: Any) -> StepPin | None:
        """The pin of a recorded plan item, or None if it is missing or malformed."""
        if not isinstance(data, Mapping):
            return None
        content = data.get("content")
        try:
            return cls(
                executor=str(data["executor"]),
                definition=str(data["definition"]),
                params_model=str(data["params_model"]),
                outputs_model=str(data["outputs_model"]),
                content=None if content is None else {str(k): str(v) for k, v in content.items()},
            )
        except (KeyError, AttributeError):
            return None


def pin_step(step: StepDef, info: ExecutorInfo, root: Path | None) -> StepPin:
    """The pin of ``step`` as the catalog defines it now, run by the executor ``info``."""
    return StepPin(
        executor=step.executor,
        definition=_digest(step_definition(step)),
        params_model=model_digest(info.params),
        outputs_model=model_digest(info.outputs),
        content=None if root is None else content_files(declared_content(info), step, root),
    )


def step_definition(step: StepDef) -> dict[str, Any]:
    """The step's raw definition in the catalog (expressions unrendered)."""
    targets: Any = step.targets
    if isinstance(targets, TargetSelection):
        targets = targets.model_dump(exclude_none=True)
    return {"params": step.params, "targets": targets, "when": step.when, "needs": step.needs}


@cache
def model_digest(model: type[BaseModel]) -> str:
    """SHA-256 of the model's JSON schema (of its fields' reprs if it has no JSON schema)."""
    try:
        schema: Any = model.model_json_schema()
    except PydanticUserError:
        schema = {name: repr(f) for name, f in model.model_fields.items()}
    return _digest({"model": f"{model.__module__}.{model.__qualname__}", "schema": schema})


def declared_content(info: ExecutorInfo) -> tuple[str, ...]:
    """The content-file patterns ``info`` declares (``ExecutorInfo.content``)."""
    patterns = info.content
    if isinstance(patterns, str) or not isinstance(patterns, Iterable):
        raise ConfigurationError(f"executor {info.key!r}: content must be a tuple of patterns")
    return tuple(str(p) for p in patterns)


def content_files(patterns: Sequence[str], step: StepDef, root: Path) -> dict[str, str]:
    """``path -> sha256`` of the files ``patterns`` name for ``step`` (see module docstring)."""
    out: dict[str, str] = {}
    for pattern in patterns:
        filled = _fill(pattern, step.params)
        found = dict(_matches(root, filled))
        if not found and filled.startswith("templates/"):
            default = filled.removeprefix("templates/")
            found = {
                f"{PACKAGE_PREFIX}templates/{rel}": sha
                for rel, sha in _matches(package_templates(), default)
            }
        out.update(found or {filled: MISSING})
    return dict(sorted(out.items()))


def _fill(pattern: str, params: Mapping[str, Any]) -> str:
    """``{name}`` -> the static param value if it is a plain relative path, else ``*``."""

    def value(match: re.Match[str]) -> str:
        raw = params.get(match.group(1))
        ok = isinstance(raw, str) and _SAFE_PATH_RE.fullmatch(raw) and ".." not in raw.split("/")
        return str(raw) if ok else "*"

    return _PARAM_RE.sub(value, pattern)


def _matches(base: Path, pattern: str) -> Iterator[tuple[str, str]]:
    if not base.is_dir() or ".." in Path(pattern).parts or Path(pattern).is_absolute():
        return
    if pattern.endswith("**"):
        pattern += "/*"  # a folder and everything in it (a bare ** matches folders only)
    resolved = base.resolve()
    for path in sorted(base.glob(pattern)):
        if path.is_file() and path.resolve().is_relative_to(resolved):
            yield path.relative_to(base).as_posix(), file_digest(path)


def file_digest(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# --- content revision -------------------------------------------------------------------------


def content_revision(plan: Plan, root: Path, *, catalog_file: Path | None = None) -> dict[str, Any]:
    """What the run's definition came from: catalog service file, content files, git commit.

    ``catalog_file`` is the service's file (``Catalog.sources[service]``); found in the
    root's catalog folder when not given.
    """
    source = catalog_file or _catalog_file(root, plan.service)
    files: dict[str, str] = {}
    for step in plan.steps:
        if step.pin is not None and step.pin.content:
            files.update(step.pin.content)
    return {
        "catalog": {
            "service": plan.service,
            "file": _relative(source, root) if source else None,
            "sha256": file_digest(source) if source else None,
        },
        "files": dict(sorted(files.items())),
        "git": git_revision(root),
    }


def _catalog_file(root: Path, service: str) -> Path | None:
    try:
        return load_catalog(load_settings(root).catalog_dir).sources.get(service)
    except ConfigurationError:
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def git_revision(root: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git checkout ``root`` is in, or None if it is none."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return None
    status = _git(root, "status", "--porcelain", "--untracked-files=normal", "--", ".")
    return {"commit": head.strip(), "dirty": status is None or bool(status.strip())}


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=GIT_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


# --- resume -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """A finished step that a resume runs again, and why."""

    step_id: str
    kind: str  # executor | params | params_model | output_model | content | upstream | unpinned
    reason: str

    def __str__(self) -> str:
        return f"{self.step_id}: {self.reason}"


@dataclass(frozen=True)
class Reuse:
    """What a resume reuses (results by step id) and the finished steps it runs again."""

    results: Mapping[str, StepResult]
    changed: tuple[Change, ...] = ()

    def refuse_changed(self, run_id: str) -> None:
        """Raise :class:`ResumeRefused` listing the changed steps, if there are any."""
        if self.changed:
            raise ResumeRefused(run_id, [str(c) for c in self.changed])


def reusable_results(old: RunRecord, plan: Plan) -> Reuse:
    """Finished steps of ``old`` whose definition is unchanged in ``plan``, as results to reuse.

    A step is run again when its fingerprint differs from the recorded one (or none was
    recorded), when it depends on a step that runs again, or when an output of it was masked
    in the record (to get the value back; this alone does not re-run its dependents).
    """
    pinned = {str(item.get("id")): item for item in old.plan}
    finished = {s.step_id: s for s in old.steps if s.status == Status.SUCCESS.value}
    results: dict[str, StepResult] = {}
    changed: list[Change] = []
    rerun: set[str] = set()
    for step in plan.steps:  # topological order: upstream changes are known first
        record = finished.get(step.id)
        if record is None:
            continue
        change = _change(step.id, pinned.get(step.id), step.pin, step.fingerprint)
        upstream = [n for n in step.needs if n in rerun]
        if change is None and upstream:
            change = Change(step.id, "upstream", f"needs {', '.join(upstream)}, which run again")
        if change is not None:
            changed.append(change)
            rerun.add(step.id)
        elif MASK not in json.dumps(record.outputs, default=str):
            results[step.id] = _result(record)
    return Reuse(results=results, changed=tuple(changed))


def _change(
    step_id: str, item: Mapping[str, Any] | None, pin: StepPin | None, fingerprint: str
) -> Change | None:
    if item is None:
        return Change(step_id, "params", "not in the recorded plan")
    recorded = item.get("fingerprint")
    if not recorded:
        return Change(
            step_id, "unpinned", "the recorded run has no definition fingerprint (older record)"
        )
    if recorded == fingerprint:
        return None
    old = StepPin.from_dict(item.get("pin"))
    if old is None or pin is None:
        return Change(step_id, "unpinned", "definition fingerprint changed")
    kinds = _differences(old, pin)
    return Change(step_id, kinds[0][0], "; ".join(text for _, text in kinds))


def _differences(old: StepPin, new: StepPin) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if old.executor != new.executor:
        out.append(("executor", f"executor changed ({old.executor} -> {new.executor})"))
    if old.definition != new.definition:
        out.append(("params", "params, targets, when or needs changed in the catalog"))
    if old.params_model != new.params_model:
        out.append(("params_model", f"params model of {new.executor} changed"))
    if old.outputs_model != new.outputs_model:
        out.append(("output_model", f"output model of {new.executor} changed"))
    if old.content != new.content:
        out.append(("content", _content_change(old.content, new.content)))
    return out or [("params", "definition fingerprint changed")]


def _content_change(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> str:
    if old is None or new is None:
        return "content files were not pinned in one of the plans"
    paths = sorted(p for p in set(old) | set(new) if old.get(p) != new.get(p))
    return "content file changed: " + ", ".join(paths)


def _result(step: StepRecord) -> StepResult:
    return StepResult(
        status=Status.SUCCESS,
        changed=step.changed,
        diff=step.diff,
        outputs=dict(step.outputs),
        targets=_targets(step.targets),
        artifacts=dict(step.artifacts),
        started_at=step.started_at,
        finished_at=step.finished_at,
    )


def _targets(rows: Sequence[Mapping[str, Any]]) -> tuple[TargetResult, ...]:
    return tuple(
        TargetResult(
            target=str(r.get("target", "")),
            status=Status(r.get("status", "success")),
            changed=bool(r.get("changed", False)),
            diff=str(r.get("diff") or ""),
            error=r.get("error"),
            details=dict(r.get("details") or {}),
        )
        for r in rows
    )
