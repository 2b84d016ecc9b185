"""Referral clicks: pure helpers for building click events and redirect targets."""

from __future__ import annotations

import hashlib
import hmac
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

BOT_PATTERN = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|facebookexternalhit|embedly|preview|monitor|curl/|wget/"
    r"|python-requests|httpx|go-http-client|java/|headlesschrome|phantomjs|lighthouse",
    re.IGNORECASE,
)

VISITOR_COOKIE = "rs_vid"
CLICK_COOKIE = "rs_clid"
CLICK_PARAM = "rsclid"


def is_bot(user_agent: str | None) -> bool:
    """Flag, never drop: an empty user agent or a known crawler/tool signature."""
    return not user_agent or bool(BOT_PATTERN.search(user_agent))


def ip_hash(salt: str, ip: str | None) -> str | None:
    """Salted hash of the client IP: the IP itself is never stored."""
    if not ip:
        return None
    return hmac.new(salt.encode(), ip.encode(), hashlib.sha256).hexdigest()[:32]


def fingerprint(ip_digest: str | None, user_agent: str | None, link_code: str) -> str:
    """Identity of "the same visitor clicking the same link" for duplicate marking."""
    text = f"{ip_digest or '-'}|{user_agent or '-'}|{link_code}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def redirect_url(landing_url: str, click_id: str) -> str:
    """`landing_url` with `rsclid=<click id>` added (replacing any previous one)."""
    parts = urlsplit(landing_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != CLICK_PARAM]
    query.append((CLICK_PARAM, click_id))
    return urlunsplit(parts._replace(query=urlencode(query)))
