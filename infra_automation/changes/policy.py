"""The change policy: ``change:`` blocks of a catalog service and of an inventory.

A catalog service declares its change type and risk::

    change:
      type: standard            # standard | normal | emergency (default: normal)
      risk: low                 # low | medium | high (default: medium)
      success_threshold: 0.95   # standard only: below this success rate it becomes normal
      history: 20               # ... over the service's last N finished runs

A service without a ``change:`` block takes the inventory's ``change.defaults`` (by default
``{type: standard, success_threshold: 0}``: recorded as a change, run at once), so a site
turns gating on by declaring its services' types, or ``defaults: {type: normal}``.

An inventory (``inventory.yml``) declares who approves and when changes may run::

    change:
      defaults: {type: normal}  # for services without a change: block (see above)
      approval:
        mode: departments       # one approver per affected department | cab: N of the CAB
        approvers: {network: [alice], vmware: [bob]}   # a department not listed: anyone
        cab: [carol, dave]      # mode cab (empty: anyone)
        quorum: 2               # mode cab
        expires_hours: 168      # an approval older than this no longer counts (0: never)
      emergency: {retrospective_hours: 24}
      windows:                  # normal changes run only inside one of these (if any)
        - {name: weeknights, start: "mon 20:00", end: "fri 06:00", timezone: Europe/Berlin}
      blackouts:                # no change of ``types`` runs inside these
        - {name: weekend freeze, start: "fri 18:00", end: "mon 06:00", timezone: Europe/Berlin}
        - {name: year end, start: "2026-12-23T00:00", end: "2027-01-02T00:00"}

A window's ``start``/``end`` is either weekly (``"<mon..sun> HH:MM"``) or a date and time
(ISO 8601, read in the window's ``timezone``). ``types`` (default: windows ``[normal]``,
blackouts ``[standard, normal]``) says which change types the window binds.

The core loaders do not know these blocks yet; they are read here from the raw YAML and
validated by the models below (errors name the file and the field).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from infra_automation import yamlio
from infra_automation.exceptions import ConfigurationError, InputFileError
from infra_automation.validation import SafeText

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKLY_RE = re.compile(r"^(mon|tue|wed|thu|fri|sat|sun) ([01][0-9]|2[0-3]):([0-5][0-9])$")
WEEK = timedelta(days=7)


class ChangeType(enum.StrEnum):
    STANDARD = "standard"  # pre-approved; runs at once while the service's history holds
    NORMAL = "normal"  # waits for approvals
    EMERGENCY = "emergency"  # runs at once; flagged until a retrospective approval


class Risk(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class ApprovalMode(enum.StrEnum):
    DEPARTMENTS = "departments"  # one approver per affected department
    CAB = "cab"  # ``quorum`` distinct members of the CAB


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceChange(_Model):
    """The ``change:`` block of a catalog service."""

    type: ChangeType = ChangeType.NORMAL
    risk: Risk = Risk.MEDIUM
    success_threshold: float = Field(default=0.95, ge=0, le=1)
    history: int = Field(default=20, ge=1, le=1000)


class ApprovalPolicy(_Model):
    mode: ApprovalMode = ApprovalMode.DEPARTMENTS
    approvers: dict[str, list[SafeText]] = Field(default_factory=dict)
    cab: list[SafeText] = Field(default_factory=list)
    quorum: int = Field(default=1, ge=1, le=50)
    expires_hours: float = Field(default=168, ge=0, le=24 * 365)

    @property
    def expires(self) -> timedelta | None:
        return timedelta(hours=self.expires_hours) if self.expires_hours else None


class EmergencyPolicy(_Model):
    retrospective_hours: float = Field(default=24, gt=0, le=24 * 90)


class Window(_Model):
    """A weekly or a dated span of time, in a timezone."""

    name: SafeText
    start: str
    end: str
    timezone: str = "UTC"
    types: list[ChangeType] | None = None

    @field_validator("start", "end")
    @classmethod
    def _moment(cls, value: str) -> str:
        if not _WEEKLY_RE.fullmatch(value):
            try:
                datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(
                    f"{value!r} is neither '<mon..sun> HH:MM' nor an ISO 8601 date and time"
                ) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r}") from None
        return value

    def binds(self, change_type: ChangeType, default: tuple[ChangeType, ...]) -> bool:
        return change_type in (self.types if self.types is not None else default)

    def contains(self, moment: datetime) -> bool:
        """Whether the aware datetime ``moment`` falls inside the window (start included)."""
        local = moment.astimezone(ZoneInfo(self.timezone))
        weekly = _WEEKLY_RE.fullmatch(self.start), _WEEKLY_RE.fullmatch(self.end)
        if weekly[0] and weekly[1]:
            return _in_week(local, _offset(weekly[0]), _offset(weekly[1]))
        start, end = self._dated(self.start), self._dated(self.end)
        return start <= local < end

    def _dated(self, value: str) -> datetime:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(self.timezone))
        return moment

    def describe(self) -> str:
        return f"{self.name} ({self.start} - {self.end} {self.timezone})"


def _offset(match: re.Match[str]) -> timedelta:
    """Time since Monday 00:00 of a weekly moment."""
    day, hour, minute = WEEKDAYS.index(match[1]), int(match[2]), int(match[3])
    return timedelta(days=day, hours=hour, minutes=minute)


def _in_week(local: datetime, start: timedelta, end: timedelta) -> bool:
    midnight = datetime.combine(local.date(), time(), local.tzinfo)
    now = local - midnight + timedelta(days=local.weekday())
    if start <= end:
        return start <= now < end
    return now >= start or now < end  # wraps over the week's end (fri 18:00 - mon 06:00)


def _undeclared() -> ServiceChange:
    return ServiceChange(type=ChangeType.STANDARD, success_threshold=0.0)


class InventoryChange(_Model):
    """The ``change:`` block of an inventory; ``defaults`` stands for the ``change:`` block
    of a service that declares none (default: standard, whatever its history)."""

    defaults: ServiceChange = Field(default_factory=_undeclared)
    approval: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    emergency: EmergencyPolicy = Field(default_factory=EmergencyPolicy)
    windows: list[Window] = Field(default_factory=list)
    blackouts: list[Window] = Field(default_factory=list)


WINDOW_TYPES = (ChangeType.NORMAL,)
BLACKOUT_TYPES = (ChangeType.STANDARD, ChangeType.NORMAL)


@dataclass(frozen=True)
class Policy:
    """What governs one change: its service's block and its inventory's block."""

    service: ServiceChange
    site: InventoryChange

    def window_refusal(self, change_type: ChangeType, moment: datetime) -> str | None:
        """Why a change of ``change_type`` may not run at ``moment``, or None."""
        for blackout in self.site.blackouts:
            if blackout.binds(change_type, BLACKOUT_TYPES) and blackout.contains(moment):
                return f"inside the blackout window {blackout.describe()}"
        windows = [w for w in self.site.windows if w.binds(change_type, WINDOW_TYPES)]
        if windows and not any(w.contains(moment) for w in windows):
            names = ", ".join(w.describe() for w in windows)
            return f"outside the change windows of {change_type} changes: {names}"
        return None


def read_block(path: Path | None, model: type[_Model]) -> Any:
    """The ``change:`` block of the YAML file ``path``, validated by ``model`` (its
    defaults when the file or the block is missing)."""
    block = raw_block(path)
    return parse_block(block or {}, model, str(path))


def raw_block(path: Path | None) -> Mapping[str, Any] | None:
    """The raw ``change:`` mapping of a YAML file, or None when there is none."""
    if path is None or not path.is_file():
        return None
    try:
        data = yamlio.load_mapping(path)
    except InputFileError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc}") from exc
    block = data.get("change")
    if block is not None and not isinstance(block, Mapping):
        raise ConfigurationError(f"{path}: change: expected a mapping")
    return block


def parse_block(data: Mapping[str, Any], model: type[_Model], source: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"change.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigurationError(f"{source}: {errors}") from exc
