"""Custom-app shop claims and their proof, and the end of an install (`app/uninstalled`).

A company that connects a shop through its own custom app gives refstream the app's webhook
secret (`POST /v1/shops`, `refstream shop add`). That files a **claim** (`shop_claims`), not a
shop: the claim becomes the company's shop when the ingress receives a webhook for the domain
signed with that secret, i.e. when the shop's Shopify actually sends its deliveries here signed
with it. Until then nothing is accepted for it, nothing about the domain is told to anyone, and
other companies may hold claims of the same domain (none learns of the others'). The first
proven claim wins; a later OAuth install (Shopify authenticates a staff member of the shop)
takes the shop over in any case.

Why a signed delivery rather than a signed challenge: an HMAC of a challenge computed with a
secret the caller typed proves only that the caller can compute an HMAC; a delivery that
arrives signed with the secret is the configuration working end to end (Shopify → ingress),
which is what a merchant wants to know anyway. It is still no proof against someone who forges
deliveries with a secret of their own choosing for a shop they do not own: they gain their own
forged traffic in their own company and block other custom-app claims of the domain until the
owner installs the app through OAuth, which releases it. That residual risk is why OAuth is the
way to connect a shop, and custom apps the exception.

These run on the ingress's request path only for deliveries of unknown shops (a claim's proof)
and for `app/uninstalled`: rare, so a short connection of their own is fine.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from ingest import shopify


@dataclass(frozen=True, slots=True)
class ClaimRecord:
    domain: str
    tenant_id: str
    secret: str


def proven_claim(
    raw: bytes, signature: str | None, claims: tuple[ClaimRecord, ...]
) -> ClaimRecord | None:
    """The claim whose secret signed `raw` (every claim is tried: timing tells nothing)."""
    found = None
    for claim in claims:
        if shopify.verify(raw, signature, (claim.secret,)) and found is None:
            found = claim
    return found


async def promote(dsn: str, claim: ClaimRecord) -> bool:
    """`claim` becomes its company's custom-app shop, unless the claim is gone or expired or a
    company owns the domain already (then nothing changes); True if it did."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        async with conn.transaction():
            secret = await conn.fetchval(
                "DELETE FROM shop_claims WHERE tenant_id = $1 AND domain = $2"
                " AND expires_at > now() AND secret = $3 RETURNING secret",
                claim.tenant_id,
                claim.domain,
                claim.secret,
            )
            if secret is None:
                return False
            inserted = await conn.fetchval(
                "INSERT INTO shops (domain, tenant_id, secret, install, verified_at)"
                " VALUES ($1, $2, $3, 'custom', now()) ON CONFLICT (domain) DO NOTHING"
                " RETURNING domain",
                claim.domain,
                claim.tenant_id,
                secret,
            )
            if inserted is None:
                raise _Owned
    except _Owned:  # the transaction rolled back: the claim stays, for nothing
        return False
    finally:
        await conn.close()
    return True


class _Owned(Exception):
    """The domain has an owner: undo the claim's deletion."""


async def uninstall(dsn: str, domain: str, tenant_id: str) -> bool:
    """The app was uninstalled from `domain`: its access token is deleted (Shopify revoked it
    too) and the shop is marked uninstalled, which stops the ingress accepting its webhooks.
    True if this call made the change (False: it was already uninstalled)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        changed = await conn.fetchval(
            "UPDATE shops SET access_token = NULL, token_scopes = NULL, uninstalled_at = now(),"
            " updated_at = now() WHERE domain = $1 AND tenant_id = $2"
            " AND uninstalled_at IS NULL RETURNING domain",
            domain,
            tenant_id,
        )
    finally:
        await conn.close()
    return changed is not None
