"""The change flow: the gate an apply passes, approvals, rejections and the outcome.

::

    changes = ChangeService(engine)                      # webhook: $INFRA_CHANGE_WEBHOOK
    outcome = changes.gate(request, requester="jane")    # dry run -> change record -> decision
    if outcome.decision is Decision.RUN:
        result = engine.run(outcome.plan)
        changes.finish(outcome.change.id, result)
    changes.approve(change_id, "carol")                  # -> ApprovalResult (accepted or why not)

:meth:`ChangeService.gate` dry-runs the request (a check run, recorded as such), builds the
change record and decides:

- ``refused`` — the dry run failed; the type override is not allowed; the change was
  rejected; it overlaps an open change on the same configuration items (named); or a
  blackout / change window forbids it now (named). Nothing runs.
- ``voided`` — an open change of the same request had another hash (re-plan, drift,
  edited catalog): it is voided with its approvals, and this change waits for approval.
- ``waiting`` — a normal change without its approvals (``missing`` lists them).
- ``run`` — standard (while its service's history holds), emergency (flagged until a
  retrospective approval), or normal with its approvals: the caller runs ``outcome.plan``,
  best through :meth:`ChangeService.claim` (approved -> implementing: from then on the
  change can be neither rejected nor voided) and :meth:`ChangeService.finish`.

The conflict check and the write of the change are one transaction
(:meth:`~infra_automation.changes.store.ChangeStore.admit`). A change left ``implementing``
by a process that died (no live run of its project, claimed more than
:data:`CLAIM_GRACE` ago) is recorded ``failed`` by the next gate, so it holds its items no
longer. Each state change also reaches the project's documentation history
(:class:`~infra_automation.docs.changes.ChangeDocs`) when the engine writes docs.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from infra_automation.changes.model import ChangeFacts, ChangeRecord, build_change
from infra_automation.changes.policy import (
    ApprovalMode,
    ChangeType,
    InventoryChange,
    Policy,
    ServiceChange,
    parse_block,
    raw_block,
    read_block,
)
from infra_automation.changes.store import (
    OPEN,
    Approval,
    ChangeStore,
    ChangeView,
    Notify,
    State,
    StateChange,
)
from infra_automation.changes.webhook import Webhook, webhook_url
from infra_automation.engine import Engine
from infra_automation.events import utcnow
from infra_automation.exceptions import ChangeError, ConfigurationError
from infra_automation.inventory import HAND_WRITTEN
from infra_automation.pinning import content_revision
from infra_automation.planner import Plan
from infra_automation.record import live_runs, runs
from infra_automation.request import Request
from infra_automation.results import RunResult

log = logging.getLogger(__name__)
EXIT_WAITING = 3  # the change waits for approval (also after a void)
EXIT_REFUSED = 4  # the change may not run (rejected, conflict, window, self-approval, ...)
CLAIM_GRACE = timedelta(minutes=2)  # from a claim until its run must hold the project lease


class ChangeRefused(ChangeError):
    """The change may not run: it is not approved (waiting, rejected, voided, implementing)."""


class Decision(enum.StrEnum):
    RUN = "run"
    WAITING = "waiting"
    VOIDED = "voided"
    REFUSED = "refused"


@dataclass(frozen=True)
class GateOutcome:
    """What the apply path does next; ``plan`` is what to run when ``decision`` is RUN."""

    decision: Decision
    reason: str
    change: ChangeView | None = None
    plan: Plan | None = None
    dry_run: RunResult | None = None
    voided: str | None = None  # the change this one voided
    conflict: str | None = None  # the open change this one overlaps
    missing: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        if self.decision is Decision.RUN:
            return 0
        return EXIT_REFUSED if self.decision is Decision.REFUSED else EXIT_WAITING


@dataclass(frozen=True)
class ApprovalResult:
    accepted: bool
    reason: str
    change: ChangeView
    missing: tuple[str, ...] = field(default=())


Clock = Callable[[], datetime]


class ChangeService:
    """Change records of one engine's project root and database."""

    def __init__(
        self,
        engine: Engine,
        *,
        webhook: str | None = None,
        notify: Notify | None = None,
        clock: Clock = utcnow,
        docs: bool | None = None,
    ) -> None:
        """``docs``: write each state change to the project's documentation history
        (default: when the engine loads its observers, i.e. writes docs for its runs)."""
        self.engine = engine
        self.clock = clock
        url = webhook or webhook_url()
        if notify is None and url:
            notify = Webhook(url)
        observers = [notify] if notify is not None else []
        self.docs: Notify | None = None
        if engine.load_observers if docs is None else docs:
            from infra_automation.docs.changes import ChangeDocs  # docs need no change code

            self.docs = ChangeDocs(engine.settings.root, self._changes_of)
            observers.append(self.docs)
        self.store = ChangeStore(engine.db, notify=_fan_out(observers))

    def _changes_of(self, project: str) -> list[ChangeView]:
        return self.store.changes(project=project, limit=1000)

    # --- policy -------------------------------------------------------------------------

    def policy(self, service: str, inventory: str | None) -> Policy:
        source = self.engine.catalog().sources.get(service)
        site = read_block(self._inventory_dir(inventory) / HAND_WRITTEN, InventoryChange)
        block = raw_block(source)
        declared = (
            site.defaults if block is None else parse_block(block, ServiceChange, str(source))
        )
        return Policy(service=declared, site=site)

    def managed(self, service: str, inventory: str | None) -> bool:
        """Whether change management governs ``service``: it or its inventory declares a
        ``change:`` block. Without one, ``infra apply`` runs at once, as it always did."""
        source = self.engine.catalog().sources.get(service)
        site = self._inventory_dir(inventory) / HAND_WRITTEN
        return raw_block(source) is not None or raw_block(site) is not None

    def _inventory_dir(self, inventory: str | None) -> Path:
        settings = self.engine.settings
        if not inventory:
            return settings.inventory
        folder = (settings.root / inventory).resolve()
        if not folder.is_relative_to(settings.root.resolve()):
            raise ConfigurationError(f"inventory: {inventory!r} is outside the project root")
        return folder

    def _policy_of(self, view: ChangeView) -> Policy:
        request = view.record.content["request"]
        return self.policy(view.record.service, request.get("inventory"))

    # --- the gate -----------------------------------------------------------------------

    def gate(
        self,
        request: Request,
        *,
        requester: str | None = None,
        change_type: ChangeType | None = None,
        allowed: bool = False,
        change_id: str | None = None,
        now: datetime | None = None,
    ) -> GateOutcome:
        """Dry-run ``request``, record its change and decide whether it runs now.

        ``requester``: the authenticated caller (default: the request's ``requester``).
        ``change_type``: a per-request override of the service's type, honoured only when
        the caller says the requester is ``allowed`` to. ``change_id``: the change the caller
        means to run (an approved one); a dry run that differs from it voids it.
        """
        now = now or self.clock()
        who = (requester or request.requester or "").strip()
        if not who:
            raise ChangeError("a change needs a requester (the request's or the caller's)")
        policy = self.policy(request.service, request.inventory)
        declared = policy.service.type
        if change_type is not None and change_type is not declared and not allowed:
            return GateOutcome(
                Decision.REFUSED,
                f"{who} may not override the change type of {request.service} "
                f"({declared}) with {change_type}",
            )
        plan = self.engine.plan(request)
        dry_run = self.engine.run(plan, check=True)
        if dry_run.failed:
            failed = ", ".join(dry_run.failed_steps or dry_run.skipped_steps)
            return GateOutcome(
                Decision.REFUSED,
                f"the dry run {dry_run.run_id} failed ({failed}): no change record is made",
                plan=plan,
                dry_run=dry_run,
            )
        kind, why = self._effective_type(policy, change_type or declared, request.service)
        record = self._record(plan, dry_run, who, kind, why, policy)
        return self._decide(record, policy, plan, dry_run, change_id, now)

    def _record(
        self,
        plan: Plan,
        dry_run: RunResult,
        who: str,
        kind: ChangeType,
        why: str,
        policy: Policy,
    ) -> ChangeRecord:
        root = self.engine.settings.root
        source = self.engine.catalog().sources.get(plan.service)
        revision = content_revision(plan, root, catalog_file=source)
        facts = ChangeFacts(who, kind, policy.service.risk, revision, why)
        return build_change(plan, dry_run, facts)

    def _effective_type(
        self, policy: Policy, kind: ChangeType, service: str
    ) -> tuple[ChangeType, str]:
        """A standard change stays standard only while its service's history holds."""
        if kind is not ChangeType.STANDARD:
            return kind, ""
        rate, count = self.success_rate(service, policy.service.history)
        threshold = policy.service.success_threshold
        if count and rate < threshold:
            return ChangeType.NORMAL, (
                f"standard change treated as normal: {service} succeeded in {rate:.0%} of its "
                f"last {count} runs (below {threshold:.0%})"
            )
        return kind, ""

    def success_rate(self, service: str, last: int) -> tuple[float, int]:
        """Share of successful runs among the service's last ``last`` finished applies."""
        query = (
            sa.select(runs.c.status)
            .where(
                runs.c.service == service,
                runs.c.check_mode.is_(False),
                runs.c.status.in_(["success", "failed"]),
            )
            .order_by(runs.c.started_at.desc())
            .limit(last)
        )
        with self.engine.db.connect() as conn:
            statuses = list(conn.execute(query).scalars())
        if not statuses:
            return 1.0, 0
        return statuses.count("success") / len(statuses), len(statuses)

    def _decide(
        self,
        record: ChangeRecord,
        policy: Policy,
        plan: Plan,
        dry_run: RunResult,
        change_id: str | None,
        now: datetime,
    ) -> GateOutcome:
        self.recover_interrupted()
        previous = self._previous(record, change_id)
        voided = self._void(previous, record) if previous is not None else None
        state, reason = _proposed(record)
        ignore = frozenset({previous.id}) if previous is not None else frozenset()
        admitted = self.store.admit(
            record, state, reason=reason, supersedes=voided or "", ignore=ignore
        )
        view = admitted.change
        base = GateOutcome(Decision.REFUSED, "", view, plan, dry_run, voided)
        if view.state is State.REJECTED:
            return replace(base, reason=f"change {_short(view)} was rejected: {view.reason}")
        if view.state is State.IMPLEMENTING:
            reason = f"change {_short(view)} is being implemented by a run already"
            return replace(base, reason=reason)
        conflict = admitted.conflict
        if conflict is not None:
            reason = (
                f"change {_short(view)} overlaps the {conflict.state} change {_short(conflict)} "
                f"({conflict.record.service} for {conflict.record.project}, requested by "
                f"{conflict.record.requester}) on {', '.join(admitted.shared)}"
            )
            return replace(base, reason=reason, conflict=conflict.id)
        view = self._settle(view, policy, now)
        missing = self.missing(view, policy, now)
        if view.state is State.WAITING:
            decision = Decision.VOIDED if voided else Decision.WAITING
            reason = f"change {_short(view)} waits for approval by {', '.join(missing)}"
            if record.type_reason:
                reason += f" ({record.type_reason})"
            if voided:
                reason = f"change {voided[:12]} was voided (its dry run changed); " + reason
            return replace(base, decision=decision, reason=reason, change=view, missing=missing)
        return self._run_now(view, policy, now, replace(base, change=view))

    def _run_now(
        self, view: ChangeView, policy: Policy, now: datetime, base: GateOutcome
    ) -> GateOutcome:
        kind = view.record.change_type
        refusal = policy.window_refusal(kind, now)
        if refusal is not None:
            if kind is not ChangeType.NORMAL:  # pre-approved only for "at once": propose again
                view = self._move(view, State.REFUSED, refusal, OPEN)
            reason = f"change {_short(view)} may not run now: {refusal}"
            return replace(base, reason=reason, change=view)
        if kind is ChangeType.EMERGENCY and view.retrospective_due is None:
            due = now + timedelta(hours=policy.site.emergency.retrospective_hours)
            self.store.annotate(
                view.id,
                actor="infra",
                reason=f"emergency change runs; retrospective approval due by {due.isoformat()}",
                retrospective_due=due,
            )
            view = self.store.get(view.id)
        reason = f"change {_short(view)} ({kind}) runs"
        return replace(base, decision=Decision.RUN, reason=reason, change=view)

    def _previous(self, record: ChangeRecord, change_id: str | None) -> ChangeView | None:
        """The open change this dry run re-computes: the one named, or the newest open
        change of the very same request."""
        if change_id is not None:
            named = self.store.get(change_id)
            return named if named.id != record.id and named.state in OPEN else None
        same = [
            v
            for v in self.store.open_changes()
            if v.record.request_digest == record.request_digest and v.id != record.id
        ]
        return same[-1] if same else None

    def _void(self, previous: ChangeView, record: ChangeRecord) -> str | None:
        reason = f"voided: the dry run changed (now change {record.id[:12]})"
        moved = self.store.move(
            previous.id,
            State.VOIDED,
            actor="infra",
            reason=reason,
            expect=OPEN,
            superseded_by=record.id,
        )
        if moved is None:
            return None
        self.store.void_approvals(previous.id, reason)
        return previous.id

    def _settle(self, view: ChangeView, policy: Policy, now: datetime) -> ChangeView:
        """A normal change is approved once its approvals suffice, waiting again if they
        no longer do (expired)."""
        if view.record.change_type is not ChangeType.NORMAL or view.state not in OPEN:
            return view
        missing = self.missing(view, policy, now)
        if not missing and view.state is State.WAITING:
            return self._move(view, State.APPROVED, "approved", frozenset({State.WAITING}))
        if missing and view.state is State.APPROVED:
            why = f"approvals no longer suffice (expired): needs {', '.join(missing)}"
            return self._move(view, State.WAITING, why, frozenset({State.APPROVED}))
        return view

    def _move(
        self, view: ChangeView, state: State, reason: str, expect: frozenset[State]
    ) -> ChangeView:
        moved = self.store.move(view.id, state, actor="infra", reason=reason, expect=expect)
        return moved if moved is not None else self.store.get(view.id)

    # --- approvals ----------------------------------------------------------------------

    def missing(self, view: ChangeView, policy: Policy, now: datetime) -> tuple[str, ...]:
        """The approvals a normal change still needs (empty: approved)."""
        live = [a for a in view.approvals if a.counts(now)]
        rules = policy.site.approval
        if rules.mode is ApprovalMode.CAB:
            need = rules.quorum - len({_person(a.approver) for a in live})
            members = ", ".join(rules.cab) or "anyone"
            return (f"{need} more of the CAB ({members})",) if need > 0 else ()
        covered = {a.department for a in live}
        return tuple(f"department {d}" for d in view.record.departments if d not in covered)

    def approve(
        self,
        change_id: str,
        approver: str,
        *,
        department: str | None = None,
        comment: str | None = None,
    ) -> ApprovalResult:
        """Approve a waiting change (or give an emergency change its retrospective
        approval). Refused, as a result: the requester herself, an approver not allowed,
        a change that is not open."""
        view = self.store.get(change_id)
        policy = self._policy_of(view)
        now = self.clock()
        refusal = self._approval_refusal(view, approver, policy)
        if refusal is not None:
            return ApprovalResult(False, refusal, view, self.missing(view, policy, now))
        if view.flagged:
            return self._retrospective(view, approver, comment, now)
        if view.state not in OPEN or view.record.change_type is not ChangeType.NORMAL:
            return ApprovalResult(False, f"change {_short(view)} is {view.state}", view)
        scopes = self._scopes(view, approver, department, policy)
        if not scopes:
            why = f"{approver} may approve none of {', '.join(view.record.departments)}"
            if department is not None:
                why = f"{approver} may not approve for department {department!r} of this change"
            return ApprovalResult(False, why, view, self.missing(view, policy, now))
        expires = policy.site.approval.expires
        for scope in scopes:
            self.store.add_approval(
                Approval(
                    change_id=view.id,
                    change_hash=view.record.id,
                    approver=approver,
                    department=scope,
                    decision="approved",
                    at=now,
                    expires_at=now + expires if expires else None,
                    comment=comment,
                )
            )
        view = self._settle(self.store.get(view.id), policy, now)
        if self.docs is not None and view.state is State.WAITING:  # no state change told them
            _fan_out([self.docs])(view, view.history[-1])
        missing = self.missing(view, policy, now)
        return ApprovalResult(True, f"approved by {approver}", view, missing)

    def _approval_refusal(self, view: ChangeView, approver: str, policy: Policy) -> str | None:
        if not approver.strip():
            return "an approval needs the approver's name"
        if _person(approver) == _person(view.record.requester):
            return f"{approver} requested change {_short(view)} and cannot approve it"
        if view.state is State.REJECTED:
            return f"change {_short(view)} was rejected and can never run"
        return None

    def _scopes(
        self, view: ChangeView, approver: str, department: str | None, policy: Policy
    ) -> list[str | None]:
        rules = policy.site.approval
        if rules.mode is ApprovalMode.CAB:
            member = not rules.cab or _person(approver) in {_person(p) for p in rules.cab}
            return [None] if member else []
        wanted = [d for d in view.record.departments if department in (None, d)]
        return [d for d in wanted if _may_approve(approver, rules.approvers.get(d))]

    def _retrospective(
        self, view: ChangeView, approver: str, comment: str | None, now: datetime
    ) -> ApprovalResult:
        self.store.add_approval(
            Approval(view.id, view.record.id, approver, None, "retrospective", now, None, comment)
        )
        self.store.annotate(
            view.id,
            actor=approver,
            reason=f"retrospective approval by {approver}",
            retrospective_by=approver,
            retrospective_at=now,
        )
        view = self.store.get(view.id)
        return ApprovalResult(True, f"retrospective approval by {approver}", view)

    def reject(self, change_id: str, actor: str, *, comment: str | None = None) -> ApprovalResult:
        """Reject an open change (its requester may withdraw it): it can never run."""
        view = self.store.get(change_id)
        policy = self._policy_of(view)
        own = _person(actor) == _person(view.record.requester)
        if not own and not self._scopes(view, actor, None, policy):
            return ApprovalResult(False, f"{actor} may not reject change {_short(view)}", view)
        reason = f"rejected by {actor}" + (f": {comment}" if comment else "")
        moved = self.store.move(view.id, State.REJECTED, actor=actor, reason=reason, expect=OPEN)
        if moved is None:
            return ApprovalResult(False, f"change {_short(view)} is {view.state}", view)
        self.store.add_approval(
            Approval(view.id, view.record.id, actor, None, "rejected", self.clock(), None, comment)
        )
        return ApprovalResult(True, reason, self.store.get(view.id))

    # --- after the run ------------------------------------------------------------------

    def claim(self, change_id: str) -> ChangeView:
        """Just before its run starts: approved -> implementing, so that the change can be
        neither rejected nor voided any more. ChangeRefused when it is not approved (it was
        rejected, voided, or claimed by another run meanwhile): it must not run."""
        moved = self.store.move(
            change_id,
            State.IMPLEMENTING,
            actor="infra",
            reason="its run starts",
            expect=frozenset({State.APPROVED}),
        )
        if moved is None:
            view = self.store.get(change_id)
            raise ChangeRefused(
                f"change {_short(view)} is {view.state} ({view.reason}): it does not run"
            )
        return moved

    def release(self, change_id: str, reason: str) -> ChangeView | None:
        """A claimed change whose run did not start (nothing ran): approved again."""
        return self.store.move(
            change_id,
            State.APPROVED,
            actor="infra",
            reason=reason,
            expect=frozenset({State.IMPLEMENTING}),
        )

    def abandon(self, change_id: str, reason: str) -> ChangeView | None:
        """A claimed change whose run stopped without a result: failed (proposing it again
        reopens it, waiting for approvals again if it is normal)."""
        return self.store.move(
            change_id,
            State.FAILED,
            actor="infra",
            reason=reason,
            expect=frozenset({State.IMPLEMENTING}),
        )

    def recover_interrupted(self) -> list[str]:
        """Changes left implementing by a process that died: failed. Returns their ids."""
        claimed = self.store.changes(states=(State.IMPLEMENTING,), limit=1000)
        stale = [v for v in claimed if utcnow() - v.updated_at > CLAIM_GRACE]
        if not stale:
            return []
        with self.engine.db.connect() as conn:
            live = live_runs(conn)
            query = sa.select(runs.c.project).where(runs.c.id.in_(live)).distinct()
            busy = set(conn.execute(query).scalars()) if live else set()
        done = []
        for view in (v for v in stale if v.record.project not in busy):
            why = f"its run was interrupted (no live run of project {view.record.project})"
            if self.abandon(view.id, why) is not None:
                done.append(view.id)
        return done

    def finish(self, change_id: str, result: RunResult) -> ChangeView:
        """Record the run of an approved (or claimed) change: implemented, or failed."""
        state = State.FAILED if result.failed else State.IMPLEMENTED
        reason = f"run {result.run_id} {'failed' if result.failed else 'succeeded'}"
        moved = self.store.move(
            change_id,
            state,
            actor="infra",
            reason=reason,
            expect=frozenset({State.APPROVED, State.IMPLEMENTING}),
            run_id=result.run_id,
        )
        if moved is None:
            raise ChangeError(f"change {change_id[:12]} was not approved to run")
        return moved


def _short(view: ChangeView) -> str:
    return view.id[:12]


def _person(name: str) -> str:
    return name.strip().casefold()


def _may_approve(approver: str, listed: list[str] | None) -> bool:
    """A department that lists no approvers accepts anyone (but the requester)."""
    return not listed or _person(approver) in {_person(p) for p in listed}


def _proposed(record: ChangeRecord) -> tuple[State, str]:
    """The state a newly proposed change starts in, and why."""
    if record.change_type is ChangeType.NORMAL:
        return State.WAITING, "waits for approval"
    return State.APPROVED, f"{record.change_type} change: runs at once"


def _fan_out(observers: list[Notify]) -> Notify:
    """One notify for several observers; one that raises is logged and never stops a
    change (the state change is committed already)."""

    def notify(view: ChangeView, change: StateChange) -> None:
        for observer in observers:
            try:
                observer(view, change)
            except Exception:  # an observer never breaks a change
                log.exception("change observer %r failed on %s", observer, change.state)

    return notify


def gate(
    engine: Engine,
    request: Request,
    *,
    requester: str | None = None,
    change_type: ChangeType | None = None,
    allowed: bool = False,
    change_id: str | None = None,
) -> GateOutcome:
    """``ChangeService(engine).gate(...)``: the one call of the apply path."""
    return ChangeService(engine).gate(
        request,
        requester=requester,
        change_type=change_type,
        allowed=allowed,
        change_id=change_id,
    )
