"""What the routes share: the engine, the identity store, the run queue, the login limiter,
and the dependency that authenticates and authorizes a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Annotated

from fastapi import Depends, Request

from infra_automation.changes import ChangeService
from infra_automation.docs.ledger import Ledgers, ledger_store
from infra_automation.docs.writer import DocsWriter
from infra_automation.engine import Engine
from infra_automation.identity import IdentityStore
from infra_automation.server.auth import LoginLimiter, Principal, authorize, problem
from infra_automation.server.runner import RunQueue


@dataclass
class ServerState:
    engine: Engine
    identity: IdentityStore
    runs: RunQueue
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    secure_cookies: bool = False
    poll_interval: float = 0.1  # seconds between reads of new events for a live stream

    @cached_property
    def changes(self) -> ChangeService:
        """The change records (one service for the server: its tables are checked once)."""
        return ChangeService(self.engine)

    @property
    def ledgers(self) -> Ledgers:
        return ledger_store(self.engine.settings.root, self.engine.db)

    @property
    def docs(self) -> DocsWriter:
        return DocsWriter(self.engine.settings.root, docs=self.engine.settings.docs_dir)


def get_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.infra
    return state


StateDep = Annotated[ServerState, Depends(get_state)]


def guard(request: Request, state: StateDep) -> Principal:
    return authorize(request, state.identity)


Caller = Annotated[Principal, Depends(guard)]


def queued(state: ServerState, run_id: str | None) -> str:
    """The id of a run the queue accepted; 429 with ``Retry-After`` if it was full (None)."""
    if run_id is not None:
        return run_id
    runs = state.runs
    error = problem(
        429, "busy", f"{runs.waiting} runs wait for a worker already: retry in {runs.retry_after} s"
    )
    error.headers = {"Retry-After": str(runs.retry_after)}
    raise error
