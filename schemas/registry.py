"""Names shared by the writers and readers of registrations (shops, ERP endpoints, links).

The business core writes the PostgreSQL tables; the ingress caches them in memory and reloads
when a change is announced on `REGISTRY_CHANGED_CHANNEL` (and periodically, as a safety net).
"""

from __future__ import annotations

import hashlib
import re

REGISTRY_CHANGED_CHANNEL = "refstream:registry:changed"

# Shopify's own rule for a shop's domain (OAuth's `shop`, `X-Shopify-Shop-Domain`).
SHOP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


def valid_shop(shop: str) -> bool:
    """True for a `*.myshopify.com` host name as Shopify sends it (lower case, no port)."""
    return len(shop) <= 255 and SHOP_PATTERN.fullmatch(shop) is not None


def erp_token_hash(token: str) -> str:
    """How an Odoo endpoint token is stored: SHA-256 hex (the token itself is shown once)."""
    return hashlib.sha256(token.encode()).hexdigest()
