"""One lab component on an instance of its own, so component tests never touch the shared lab."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from infra_automation.lab.base import Fragment, LabComponent, LabContext, LabOptions

ROOT = Path(__file__).resolve().parents[2]
C = TypeVar("C", bound=LabComponent)


@contextmanager
def own_instance(
    component: C, name: str, options: LabOptions
) -> Iterator[tuple[C, LabContext, Fragment]]:
    """``component`` up on instance ``name`` (state under ``.lab/<name>``), down afterwards."""
    ctx = LabContext(name=name, root=ROOT, state_dir=ROOT / ".lab" / name, options=options)
    assert component.requirements() == []
    fragment = component.up(ctx)
    try:
        yield component, ctx, fragment
    finally:
        component.down(ctx)
