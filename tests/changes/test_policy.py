"""Change windows and blackouts (weekly and dated, timezone-aware) and the ``change:``
blocks' validation."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from infra_automation.changes.policy import (
    ChangeType,
    InventoryChange,
    Policy,
    ServiceChange,
    Window,
    read_block,
)
from infra_automation.exceptions import ConfigurationError

BERLIN = ZoneInfo("Europe/Berlin")
WEEKEND = Window(
    name="weekend freeze", start="fri 18:00", end="mon 06:00", timezone="Europe/Berlin"
)


@pytest.mark.parametrize(
    ("moment", "inside"),
    [
        (datetime(2026, 12, 4, 17, 59, tzinfo=BERLIN), False),  # Friday before 18:00
        (datetime(2026, 12, 4, 18, 0, tzinfo=BERLIN), True),
        (datetime(2026, 12, 6, 3, 0, tzinfo=BERLIN), True),  # Sunday night
        (datetime(2026, 12, 7, 5, 59, tzinfo=BERLIN), True),
        (datetime(2026, 12, 7, 6, 0, tzinfo=BERLIN), False),  # Monday 06:00
        (datetime(2026, 12, 4, 17, 30, tzinfo=UTC), True),  # 18:30 in Berlin (UTC+1)
        (datetime(2026, 7, 3, 16, 30, tzinfo=UTC), True),  # 18:30 in Berlin (summer, UTC+2)
        (datetime(2026, 7, 3, 15, 30, tzinfo=UTC), False),  # 17:30 in Berlin
    ],
)
def test_a_weekly_window_over_the_weekend(moment: datetime, inside: bool) -> None:
    assert WEEKEND.contains(moment) is inside


def test_a_dated_window_in_its_timezone() -> None:
    freeze = Window(
        name="year end", start="2026-12-23T00:00", end="2027-01-02T00:00", timezone="Europe/Berlin"
    )
    assert freeze.contains(datetime(2026, 12, 22, 23, 30, tzinfo=UTC))  # 00:30 in Berlin
    assert not freeze.contains(datetime(2026, 12, 22, 22, 30, tzinfo=UTC))


def test_blackouts_bind_standard_and_normal_changes_windows_only_normal() -> None:
    site = InventoryChange(
        blackouts=[WEEKEND],
        windows=[Window(name="nights", start="mon 20:00", end="mon 23:00")],
    )
    policy = Policy(ServiceChange(), site)
    saturday = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    monday_night = datetime(2026, 12, 7, 21, 0, tzinfo=UTC)
    assert "weekend freeze" in (policy.window_refusal(ChangeType.STANDARD, saturday) or "")
    assert policy.window_refusal(ChangeType.EMERGENCY, saturday) is None
    tuesday = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    assert "outside the change windows" in (policy.window_refusal(ChangeType.NORMAL, tuesday) or "")
    assert policy.window_refusal(ChangeType.NORMAL, monday_night) is None
    assert policy.window_refusal(ChangeType.STANDARD, tuesday) is None


@pytest.mark.parametrize(
    ("block", "field"),
    [
        (
            {"blackouts": [{"name": "x", "start": "friday 18:00", "end": "mon 06:00"}]},
            "change.blackouts.0.start",
        ),
        (
            {
                "windows": [
                    {"name": "x", "start": "mon 01:00", "end": "mon 02:00", "timezone": "Mars/Base"}
                ]
            },
            "change.windows.0.timezone",
        ),
        ({"approval": {"mode": "vote"}}, "change.approval.mode"),
        ({"approval": {"quorum": 0}}, "change.approval.quorum"),
        ({"surprise": 1}, "change.surprise"),
    ],
)
def test_a_bad_inventory_block_names_the_file_and_field(
    tmp_path: Path, block: dict[str, object], field: str
) -> None:
    import yaml

    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump({"change": block}))
    with pytest.raises(ConfigurationError) as caught:
        read_block(path, InventoryChange)
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_a_service_without_a_block_is_normal(tmp_path: Path) -> None:
    path = tmp_path / "svc.yml"
    path.write_text("name: svc\n")
    assert read_block(path, ServiceChange).type is ChangeType.NORMAL
