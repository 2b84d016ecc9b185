"""Response headers every answer carries, and the one credential-bearing answers carry."""

from __future__ import annotations

from fastapi import Response

# No MIME sniffing, no framing (the dashboard's CSP says the same with frame-ancestors), and no
# API URL (ids, filters) leaked to another site as a referrer.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def no_store(response: Response) -> None:
    """Dependency of routes whose body carries a credential (tokens, keys, tickets): no cache,
    shared or private, may keep it."""
    response.headers["Cache-Control"] = "no-store"
