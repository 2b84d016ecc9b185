"""Click policies of a program: the vocabulary shared by the API (which validates and stores
them on `programs`) and the ingress (which applies them to every click of the program's links).
"""

from __future__ import annotations

import hashlib
import ipaddress

# A pixel click older than this is re-dated to its arrival (the ingress's former fixed rule).
DEFAULT_CLICK_MAX_AGE_HOURS = 24
# The dataflow's allowed lateness (7 days): an older click would be dead-lettered as late.
MAX_CLICK_MAX_AGE_HOURS = 168

# Headers of a server-side relay, honoured only when the relay is authenticated for the program.
RELAY_TOKEN_HEADER = "X-Refstream-Relay-Token"
FORWARDED_USER_AGENT_HEADER = "X-Refstream-Forwarded-User-Agent"
FORWARDED_FOR_HEADER = "X-Refstream-Forwarded-For"

RELAY_TOKEN_MIN_LENGTH = 32
BOT_PATTERN_MAX_LENGTH = 200
BOT_PATTERNS_MAX = 100
RELAY_IPS_MAX = 50


def relay_token_hash(token: str) -> str:
    """How a program's relay token is stored: SHA-256 hex (the API never shows it again)."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_bot_pattern(pattern: str) -> str:
    """A bot rule as stored: a lower-case substring of the User-Agent, 2-200 printable chars."""
    text = pattern.strip().lower()
    if not 2 <= len(text) <= BOT_PATTERN_MAX_LENGTH:
        raise ValueError(f"a bot pattern has 2 to {BOT_PATTERN_MAX_LENGTH} characters")
    if not text.isprintable():
        raise ValueError("a bot pattern has printable characters only")
    return text


def normalise_relay_network(text: str) -> str:
    """A relay address as stored: an IPv4/IPv6 address or network in CIDR form (`10.0.0.0/8`);
    host bits set (`10.0.0.1/8`) are refused rather than silently widened."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an IP address or CIDR network") from exc
