"""Names shared by the writers and readers of registrations (shops, ERP endpoints, links).

The business core writes the PostgreSQL tables; the ingress caches them in memory and reloads
when a change is announced on `REGISTRY_CHANGED_CHANNEL` (and periodically, as a safety net).
"""

from __future__ import annotations

import hashlib

REGISTRY_CHANGED_CHANNEL = "refstream:registry:changed"


def erp_token_hash(token: str) -> str:
    """How an Odoo endpoint token is stored: SHA-256 hex (the token itself is shown once)."""
    return hashlib.sha256(token.encode()).hexdigest()
