"""Pure permission decisions: subtree semantics, highest role wins, scopes."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

from api.authz.permissions import PERMISSIONS, ROLE_RANK, Role
from api.authz.policies import (
    Grant,
    Principal,
    calendar_month,
    can,
    can_anywhere,
    can_company_wide,
    effective_role,
    four_eyes_refusal,
    readable_scope,
)

ROOT, EMEA, TEAM, APAC = "/u_root/", "/u_root/u_emea/", "/u_root/u_emea/u_team/", "/u_root/u_apac/"


def principal(*grants: tuple[str, Role]) -> Principal:
    return Principal(
        kind="user",
        id="usr_1",
        tenant_id="co_1",
        grants=tuple(Grant(unit_id=p, unit_path=p, role=r) for p, r in grants),
    )


def test_a_role_applies_to_the_whole_subtree_and_nowhere_else() -> None:
    manager = principal((EMEA, Role.manager))
    assert can(manager, "agents.write", EMEA)
    assert can(manager, "agents.write", TEAM)
    assert not can(manager, "agents.write", ROOT)
    assert not can(manager, "agents.write", APAC)


def test_the_highest_applicable_role_wins() -> None:
    mixed = principal((ROOT, Role.observer), (EMEA, Role.manager))
    assert effective_role(mixed, TEAM) == Role.manager
    assert effective_role(mixed, APAC) == Role.observer
    assert can(mixed, "agents.write", TEAM)
    assert not can(mixed, "agents.write", APAC)


def test_operators_never_move_money() -> None:
    operator = principal((ROOT, Role.operator))
    for permission in ("ledger.approve", "payouts.write", "rules.activate"):
        assert not can_anywhere(operator, permission)


def test_permission_table_is_monotone_so_highest_wins_equals_any_grant() -> None:
    # Every permission of a lower-ranked role is held by every higher-ranked one.
    for permission, roles in PERMISSIONS.items():
        for low, high in itertools.permutations(Role, 2):
            if ROLE_RANK[low] < ROLE_RANK[high] and low in roles and low != Role.agent:
                assert high in roles, (permission, low, high)
            if low == Role.agent and low in roles and high in (Role.owner, Role.manager):
                assert high in roles, (permission, high)


def test_readable_scope_merges_nested_subtrees_and_marks_agent_reach() -> None:
    scope = readable_scope(principal((EMEA, Role.manager), (TEAM, Role.operator)), "agents.read")
    assert scope.subtree_paths == (EMEA,)
    assert not scope.own_rows
    agent = readable_scope(principal((TEAM, Role.agent)), "agents.read")
    assert agent.subtree_paths == ()
    assert agent.own_rows
    assert readable_scope(principal((TEAM, Role.agent)), "units.read").empty


def test_company_wide_needs_the_root_unit() -> None:
    assert can_company_wide(principal((ROOT, Role.owner)), "audit.read")
    assert not can_company_wide(principal((EMEA, Role.owner)), "audit.read")


def test_calendar_month_is_the_utc_month_and_rolls_over_the_year() -> None:
    assert calendar_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    # 00:30 on 1 March in UTC+2 is still February in UTC.
    plus_two = timezone(timedelta(hours=2))
    assert calendar_month(datetime(2026, 3, 1, 0, 30, tzinfo=plus_two))[0] == datetime(
        2026, 2, 1, tzinfo=UTC
    )


def test_four_eyes_refuses_the_creator_and_the_linked_user() -> None:
    me = frozenset({"api_key:k1", "user:u1"})
    assert four_eyes_refusal(me, creator=frozenset({"user:u1"}), linked_user=None)
    assert four_eyes_refusal(me, creator=frozenset(), linked_user="user:u1")
    assert four_eyes_refusal(me, creator=frozenset({"user:u2"}), linked_user="user:u3") is None
