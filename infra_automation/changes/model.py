"""The change record: what a dry run says an apply would do, identified by its SHA-256.

:func:`build_change` turns a plan and its dry run into a :class:`ChangeRecord`. Its
:attr:`~ChangeRecord.content` holds everything the approvers approve, and nothing else:

- the request (service, project, params, inventory) and the requester;
- the plan: each step's id, department, executor, needs and pin (fingerprint);
- each step's dry-run diff, ``changed`` flag and per-target diffs;
- the configuration items the dry run touches (:func:`configuration_items`);
- the content revision (catalog service file and content files, by SHA-256);
- the change type (with the reason when it differs from the declared one) and the risk.

``id = sha256(canonical JSON of content)`` (sorted keys, no whitespace, UTF-8). Timestamps,
run ids and the git commit are kept next to it but outside the hash: an unrelated commit
of the checkout must not void an approval, while an edited catalog file or template does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from infra_automation.changes.policy import ChangeType, Risk
from infra_automation.planner import Plan
from infra_automation.results import RunResult, StepResult

# Output fields whose values name configuration items, by the item kind they name. A value
# may be a string, a list of strings, a list of mappings (their ``name``/``device``/``host``)
# or a mapping (its keys). Generic on purpose: no department is named here.
ITEM_FIELDS: Mapping[str, str] = {
    "devices": "device",
    "names": "vm",
    "vms": "vm",
    "portgroup": "portgroup",
    "hosts": "host",
}
_NAME_KEYS = ("name", "device", "host")


@dataclass(frozen=True, order=True)
class ConfigItem:
    """A configuration item: ``kind`` (project, device, vm, host, portgroup) and name."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> ConfigItem:
        kind, _, name = text.partition(":")
        return cls(kind, name)


def configuration_items(plan: Plan, result: RunResult) -> tuple[ConfigItem, ...]:
    """The project, every target of the dry run, and the items its outputs name."""
    found: set[ConfigItem] = {ConfigItem("project", plan.project)}
    for step in result.steps.values():
        found.update(_output_items(step.outputs))
    named = {item.name for item in found}
    for step in result.steps.values():
        found.update(ConfigItem("host", t.target) for t in step.targets if t.target not in named)
    return tuple(sorted(found))


def _output_items(outputs: Mapping[str, Any]) -> Iterator[ConfigItem]:
    for key, kind in ITEM_FIELDS.items():
        for name in _names(outputs.get(key)):
            yield ConfigItem(kind, name)


def _names(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value:
        yield value
    elif isinstance(value, Mapping):
        yield from (str(k) for k in value)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str) and item:
                yield item
            elif isinstance(item, Mapping):
                yield from (str(item[k]) for k in _NAME_KEYS if item.get(k))


@dataclass(frozen=True)
class ChangeRecord:
    """An immutable change record; ``id`` is the SHA-256 of :attr:`content`."""

    id: str
    content: Mapping[str, Any]
    dry_run: str = ""  # the run id of the check run it was computed from (not hashed)
    git: Mapping[str, Any] | None = None  # commit and dirty flag of the root (not hashed)
    created_at: datetime | None = None

    @property
    def service(self) -> str:
        return str(self.content["request"]["service"])

    @property
    def project(self) -> str:
        return str(self.content["request"]["project"])

    @property
    def requester(self) -> str:
        return str(self.content["requester"])

    @property
    def change_type(self) -> ChangeType:
        return ChangeType(self.content["type"])

    @property
    def type_reason(self) -> str:
        return str(self.content.get("type_reason") or "")

    @property
    def risk(self) -> Risk:
        return Risk(self.content["risk"])

    @property
    def departments(self) -> tuple[str, ...]:
        return tuple(sorted({str(s["department"]) for s in self.content["plan"]}))

    @property
    def items(self) -> tuple[ConfigItem, ...]:
        return tuple(ConfigItem.parse(i) for i in self.content["items"])

    @property
    def request_digest(self) -> str:
        return digest(self.content["request"])


@dataclass(frozen=True)
class ChangeFacts:
    """What :func:`build_change` needs besides the plan and the dry run."""

    requester: str
    change_type: ChangeType
    risk: Risk
    content_revision: Mapping[str, Any]
    type_reason: str = ""


def build_change(plan: Plan, dry_run: RunResult, facts: ChangeFacts) -> ChangeRecord:
    """The change record of ``plan`` as its (redacted) dry run ``dry_run`` previews it."""
    shown = dry_run.redacted()
    revision = dict(facts.content_revision)
    content = {
        "request": plan.request.to_dict(),
        "requester": facts.requester,
        "type": facts.change_type.value,
        "type_reason": facts.type_reason,
        "risk": facts.risk.value,
        "plan": [_planned(s) for s in plan.summary()],
        "steps": {sid: _step(r) for sid, r in sorted(shown.steps.items())},
        "items": [str(i) for i in configuration_items(plan, shown)],
        "content": {k: revision.get(k) for k in ("catalog", "files")},
    }
    content = json.loads(canonical(content))  # exactly what is hashed: JSON types only
    return ChangeRecord(
        id=digest(content), content=content, dry_run=dry_run.run_id, git=revision.get("git")
    )


def _planned(step: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("id", "department", "executor", "needs", "fingerprint", "pin")
    return {k: step.get(k) for k in keys}


def _step(result: StepResult) -> dict[str, Any]:
    return {
        "status": result.status.value,
        "changed": result.changed,
        "diff": result.diff,
        "error": result.error,
        "targets": [
            {"target": t.target, "changed": t.changed, "diff": t.diff, "status": t.status.value}
            for t in result.targets
        ],
    }


def canonical(value: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()
