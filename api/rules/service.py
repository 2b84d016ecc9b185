"""Commission rule versions and their review. The commission dataflow uses a program's newest
*active* version, so only `rules.activate` (owners, company-wide) makes a version live: an owner's
new version is active at once, a manager's (`rules.propose`) is proposed until an owner activates
or rejects it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.authz.policies import Principal, can_at
from api.collections.service import unknown_collections
from api.context import RequestMeta
from api.db import ReadSession
from api.errors import Conflict, Forbidden, NotFound, Unprocessable
from api.kit.crud import scoped_repository
from api.models import CommissionRule, Program
from api.programs.endpoints import SPEC as PROGRAMS
from api.rules.repository import RuleRepository
from api.rules.schemas import RuleVersionCreate, RuleVersionRead
from api.snapshots import snapshot
from schemas.commission_rules import CommissionRuleSet
from schemas.ids import derived_id

_SERVER_FIELDS = ("rule_id", "version", "program_id")


def to_read(rule: CommissionRule) -> RuleVersionRead:
    return RuleVersionRead(
        rule_id=rule.id,
        version=rule.version,
        program_id=rule.program_id,
        body=rule.body,
        created_by=rule.created_by,
        created_at=rule.created_at,
        status=rule.status,
        reviewed_by=rule.reviewed_by,
        reviewed_at=rule.reviewed_at,
    )


async def _program(session: ReadSession, principal: Principal, program_id: str) -> Program:
    program, _ = await scoped_repository(PROGRAMS)(session, principal, "rules.read").get_with_path(
        program_id
    )
    assert isinstance(program, Program)
    return program


async def list_versions(
    session: ReadSession, principal: Principal, program_id: str
) -> list[RuleVersionRead]:
    await _program(session, principal, program_id)
    rules = RuleRepository(session, tenant_id=principal.tenant_id, program_id=program_id)
    return [
        await _with_warnings(session, principal.tenant_id, to_read(r))
        for r in await rules.versions()
    ]


async def get_version(
    session: ReadSession, principal: Principal, program_id: str, version: int
) -> RuleVersionRead:
    await _program(session, principal, program_id)
    rules = RuleRepository(session, tenant_id=principal.tenant_id, program_id=program_id)
    rule = await rules.version(version)
    if rule is None:
        raise NotFound(f"Program {program_id!r} has no rules version {version}.")
    return await _with_warnings(session, principal.tenant_id, to_read(rule))


async def _with_warnings(
    session: ReadSession, tenant_id: str, read: RuleVersionRead
) -> RuleVersionRead:
    """`read` with a warning for each collection rate whose collection has no known membership:
    the dataflow cannot tell which lines it names, so it would silently never apply."""
    rates = read.body.get("collection_rates") or []
    named = [str(r["collection_id"]) for r in rates if isinstance(r, dict) and "collection_id" in r]
    unknown = await unknown_collections(session, tenant_id, named) if named else []
    warnings = [
        f"collection_rates: collection {c!r} has no known membership in any shop; its rate "
        "applies to no line until its products are known"
        for c in unknown
    ]
    return read.model_copy(update={"warnings": warnings})


def validated_rule_set(
    rules: dict[str, Any], *, rule_id: str, version: int, program: Program
) -> CommissionRuleSet:
    """The rule set of the new version, or `Unprocessable` listing what is wrong."""
    given = sorted(k for k in _SERVER_FIELDS if k in rules)
    if given:
        raise Unprocessable(f"Leave out {', '.join(given)}: the server sets them.")
    body = {**rules, "rule_id": rule_id, "version": version, "program_id": program.id}
    try:
        rule_set = CommissionRuleSet.model_validate(body)
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        raise Unprocessable(
            f"{len(errors)} problem(s) in the rule set.", extensions={"errors": errors}
        ) from exc
    if rule_set.currency != program.currency.strip():
        raise Unprocessable(f"The rules' currency must be the program's ({program.currency}).")
    return rule_set


async def create_version(
    session: AsyncSession,
    principal: Principal,
    program_id: str,
    body: RuleVersionCreate,
    meta: RequestMeta,
) -> RuleVersionRead:
    """Store the program's rules as version n+1 (n = the newest so far, of any status, 0 if
    none): active when the caller may activate rules, else proposed."""
    await _program(session, principal, program_id)
    if can_at(principal, "rules.activate", None):
        status = "active"
    elif can_at(principal, "rules.propose", None):
        status = "proposed"
    else:
        raise Forbidden("You cannot propose commission rules.")
    program = await _locked_program(session, program_id)
    rules = RuleRepository(session, tenant_id=principal.tenant_id, program_id=program_id)
    version = await rules.latest_version() + 1
    rule_id = derived_id("rul", principal.tenant_id, program_id)
    rule_set = validated_rule_set(body.rules, rule_id=rule_id, version=version, program=program)
    rule = CommissionRule(
        id=rule_id,
        version=version,
        tenant_id=principal.tenant_id,
        program_id=program_id,
        body=rule_set.model_dump(mode="json"),
        created_by=principal.actor,
        created_at=meta.now,
        status=status,
        reviewed_by=principal.actor if status == "active" else None,
        reviewed_at=meta.now if status == "active" else None,
    )
    session.add(rule)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("Another version was stored at the same time; try again.") from exc
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="commission_rule.create",
        entity_type="commission_rule",
        entity_id=f"{rule_id}@{version}",
        before=None,
        after=snapshot(rule),
        meta=meta,
    )
    return await _with_warnings(session, principal.tenant_id, to_read(rule))


async def _locked_program(session: AsyncSession, program_id: str) -> Program:
    # Lock the program so concurrent edits and reviews of its rules serialise (consecutive
    # versions rather than a conflict; one review decision per version).
    program = await session.scalar(
        select(Program).where(Program.id == program_id).with_for_update()
    )
    if program is None:
        raise NotFound(f"No program {program_id!r}.")
    return program


async def review_version(
    session: AsyncSession,
    principal: Principal,
    program_id: str,
    version: int,
    decision: Literal["active", "rejected"],
    meta: RequestMeta,
) -> RuleVersionRead:
    """Activate or reject a proposed version. Activation is refused when a newer version is
    already active: the dataflow uses the newest active version, so the older proposal would
    never go live (propose it again instead)."""
    await _program(session, principal, program_id)
    if not can_at(principal, "rules.activate", None):
        raise Forbidden("Only owners can review commission rules.")
    await _locked_program(session, program_id)
    rules = RuleRepository(session, tenant_id=principal.tenant_id, program_id=program_id)
    rule = await rules.version(version, lock=True)
    if rule is None:
        raise NotFound(f"Program {program_id!r} has no rules version {version}.")
    if rule.status != "proposed":
        raise Conflict(f"Version {version} is {rule.status}, not proposed.")
    if decision == "active" and await rules.latest_active_version() > version:
        raise Conflict(f"A newer version than {version} is active; propose these rules again.")
    before = snapshot(rule)
    rule.status = decision
    rule.reviewed_by = principal.actor
    rule.reviewed_at = meta.now
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="commission_rule.activate" if decision == "active" else "commission_rule.reject",
        entity_type="commission_rule",
        entity_id=f"{rule.id}@{version}",
        before=before,
        after=snapshot(rule),
        meta=meta,
    )
    return await _with_warnings(session, principal.tenant_id, to_read(rule))
