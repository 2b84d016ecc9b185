"""SQLAlchemy models of the PostgreSQL schema (`api/migrations/` is the source of truth).

Every relationship is `lazy="raise"`: a query states what it loads (`selectinload`, joins), so no
hidden query runs on attribute access.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Identity, Numeric, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TIMESTAMP


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)
        datetime: TIMESTAMP(timezone=True),
        str: Text(),
        dict[str, Any]: JSONB(),
    }


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(primary_key=True)
    name: Mapped[str]
    slug: Mapped[str] = mapped_column(unique=True)
    timezone: Mapped[str] = mapped_column(server_default="UTC")
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Unit(Base):
    __tablename__ = "units"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("units.id"))
    name: Mapped[str]
    # Materialised id path, '/unit_root/unit_emea/': a subtree is a path prefix.
    path: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    parent: Mapped[Unit | None] = relationship(remote_side=[id], lazy="raise")


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    email: Mapped[str]
    display_name: Mapped[str] = mapped_column(server_default="")
    password_hash: Mapped[str | None]
    disabled: Mapped[bool] = mapped_column(server_default="false")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    memberships: Mapped[list[Membership]] = relationship(back_populates="user", lazy="raise")


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.id"), primary_key=True)
    role: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    user: Mapped[User] = relationship(back_populates="memberships", lazy="raise")
    unit: Mapped[Unit] = relationship(lazy="raise")


class Agent(Base):
    __tablename__ = "agents"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    unit_id: Mapped[str | None] = mapped_column(ForeignKey("units.id"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    parent_agent_id: Mapped[str | None] = mapped_column(ForeignKey("agents.id"))
    name: Mapped[str]
    email: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default="active")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())

    unit: Mapped[Unit | None] = relationship(lazy="raise")


class AgentStatusChange(Base):
    """Append-only (triggers reject UPDATE, DELETE and TRUNCATE): an agent's status from
    `effective_at` until its next change; `agents.status` is the one in effect now."""

    __tablename__ = "agent_status_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    status: Mapped[str]
    effective_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
    recorded_by: Mapped[str]


class Program(Base):
    __tablename__ = "programs"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str]
    landing_url: Mapped[str]
    currency: Mapped[str] = mapped_column(String(3), server_default="USD")
    lookback_days: Mapped[int] = mapped_column(server_default="30")
    attribution_model: Mapped[str] = mapped_column(server_default="last_click")
    coupon_beats_cookie: Mapped[bool] = mapped_column(server_default="true")
    binding_months: Mapped[int] = mapped_column(server_default="0")
    hold_days: Mapped[int] = mapped_column(server_default="30")
    # Click policies, read by the ingress with the program's links (migration 0009).
    click_max_age_hours: Mapped[int] = mapped_column(server_default="24")
    bot_user_agents: Mapped[list[str] | None] = mapped_column(ARRAY(Text()), nullable=True)
    relay_token_hash: Mapped[str | None] = mapped_column(nullable=True)
    relay_ips: Mapped[list[str]] = mapped_column(ARRAY(Text()), server_default="{}")
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Link(Base):
    __tablename__ = "links"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    code: Mapped[str] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class CouponCode(Base):
    __tablename__ = "coupon_codes"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    code: Mapped[str] = mapped_column(primary_key=True)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Shop(Base):
    __tablename__ = "shops"

    domain: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    secret: Mapped[str | None]  # None for OAuth installs: the app's client secret signs
    previous_secret: Mapped[str | None]
    active: Mapped[bool] = mapped_column(server_default="true")
    install: Mapped[str] = mapped_column(server_default="custom")  # custom | oauth
    access_token: Mapped[bytes | None]  # sealed (schemas/secretbox.py), never the plaintext
    token_scopes: Mapped[str | None]
    verified_at: Mapped[datetime] = mapped_column(server_default=func.now())
    installed_by: Mapped[str | None]  # the user who completed the OAuth install
    uninstalled_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ShopClaim(Base):
    """A company's claim of a shop domain with a custom app's webhook secret, until a webhook
    signed with it proves it (then it becomes a `Shop`). Never visible to other companies."""

    __tablename__ = "shop_claims"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    domain: Mapped[str] = mapped_column(primary_key=True)
    secret: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[datetime]


class ShopCollection(Base):
    """A Shopify collection of a shop and its products (`product_ids` None: not known yet)."""

    __tablename__ = "shop_collections"

    shop: Mapped[str] = mapped_column(
        ForeignKey("shops.domain", ondelete="CASCADE"), primary_key=True
    )
    collection_id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    title: Mapped[str | None]
    product_ids: Mapped[list[str] | None] = mapped_column(ARRAY(Text()), nullable=True)
    deleted: Mapped[bool] = mapped_column(server_default="false")
    source: Mapped[str]
    changed_at: Mapped[datetime]
    products_changed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ErpEndpoint(Base):
    __tablename__ = "erp_endpoints"

    token_hash: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class CommissionRule(Base):
    __tablename__ = "commission_rules"

    id: Mapped[str] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id"))
    body: Mapped[dict[str, Any]]
    created_by: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    # proposed -> active | rejected; only active versions are live for the dataflow.
    status: Mapped[str] = mapped_column(server_default="active")
    reviewed_by: Mapped[str | None]
    reviewed_at: Mapped[datetime | None]


class FxRate(Base):
    """Append-only (a trigger rejects UPDATE and DELETE): a rate applies from `valid_from` until
    the next one of the same currency."""

    __tablename__ = "fx_rates"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    valid_from: Mapped[datetime] = mapped_column(primary_key=True)
    rate: Mapped[Decimal] = mapped_column(Numeric(18, 8))
    created_by: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ExceptionRecord(Base):
    """A dead letter of one tenant (the exceptions inbox, migration 0010b). Only the resolution
    columns change, once (a trigger rejects any other UPDATE and every DELETE)."""

    __tablename__ = "exceptions"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str]
    reason: Mapped[str]
    stage: Mapped[str]
    source: Mapped[str | None]
    kind: Mapped[str | None]
    event_id: Mapped[str | None]
    entity_id: Mapped[str | None]
    shop: Mapped[str | None]
    occurred_at: Mapped[datetime | None]
    failed_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
    event: Mapped[dict[str, Any] | None]
    raw: Mapped[str | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None]
    resolution: Mapped[str | None]


class LedgerEntry(Base):
    """Append-only (a trigger rejects UPDATE and DELETE)."""

    __tablename__ = "ledger_entries"

    entry_id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    agent_id: Mapped[str]
    program_id: Mapped[str | None]
    conversion_id: Mapped[str]
    order_id: Mapped[str]
    line_item_id: Mapped[str | None]
    kind: Mapped[str]
    status: Mapped[str] = mapped_column(server_default="pending")
    level: Mapped[int] = mapped_column(server_default="0")
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    currency: Mapped[str] = mapped_column(String(3))
    fx_rate: Mapped[Decimal] = mapped_column(Numeric(18, 8), server_default="1")
    rule_id: Mapped[str | None]
    rule_version: Mapped[int | None]
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime] = mapped_column(server_default=func.now())
    reason: Mapped[str] = mapped_column(server_default="")
    source_event_id: Mapped[str]


class LedgerStatusEvent(Base):
    """Append-only (a trigger rejects UPDATE and DELETE)."""

    __tablename__ = "ledger_status_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.entry_id"))
    status: Mapped[str]
    actor: Mapped[str]
    reason: Mapped[str] = mapped_column(server_default="")
    changed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class AuditLogEntry(Base):
    """Append-only, hash-chained per tenant (see `api.audit`)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    seq: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str]
    action: Mapped[str]
    entity_type: Mapped[str]
    entity_id: Mapped[str]
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    request_id: Mapped[str | None]
    source_ip: Mapped[str | None]
    created_at: Mapped[datetime]
    prev_hash: Mapped[str]
    hash: Mapped[str]


class AuditPersonal(Base):
    """A personal value an audit entry refers to (`api.audit.personal`); deleted on erasure."""

    __tablename__ = "audit_personal"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    ref: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str]


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(unique=True)
    family_id: Mapped[str]
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.id"))
    role: Mapped[str]
    name: Mapped[str]
    key_prefix: Mapped[str]
    key_hash: Mapped[str] = mapped_column(unique=True)
    created_by: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    revoked_at: Mapped[datetime | None]

    unit: Mapped[Unit] = relationship(lazy="raise")


class AgentNote(Base):
    __tablename__ = "agent_notes"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    body: Mapped[str]
    author: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class Payout(Base):
    __tablename__ = "payouts"

    id: Mapped[str] = mapped_column(primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    agent_id: Mapped[str] = mapped_column(ForeignKey("agents.id"))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))
    entry_count: Mapped[int]
    period_start: Mapped[datetime | None]
    period_end: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(server_default="created")
    reference: Mapped[str] = mapped_column(server_default="")
    created_by: Mapped[str]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    paid_by: Mapped[str | None]
    paid_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None]
    cancelled_at: Mapped[datetime | None]


class PayoutItem(Base):
    """Append-only (a trigger rejects UPDATE and DELETE)."""

    __tablename__ = "payout_items"

    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"), primary_key=True)
    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.entry_id"), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(18, 4))


class PayoutClaim(Base):
    """The live payout of an entry (primary key: one per entry); deleted when it is cancelled."""

    __tablename__ = "payout_claims"

    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.entry_id"), primary_key=True)
    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"))


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    key: Mapped[str] = mapped_column(primary_key=True)
    fingerprint: Mapped[str]
    status_code: Mapped[int | None]
    response: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
