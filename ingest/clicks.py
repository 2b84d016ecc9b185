"""Referral clicks: the click policies (time, bots, relays, duplicates) and redirect targets.

Pure functions over plain values; the endpoints read the request, the registry the program's
`ClickPolicy` (`programs` columns from migration 0009), and both call these.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ingest.hmac_prepared import digest_of, pad_states
from schemas.click_policy import (
    DEFAULT_CLICK_MAX_AGE_HOURS,
    FORWARDED_FOR_HEADER,
    FORWARDED_USER_AGENT_HEADER,
    RELAY_TOKEN_HEADER,
    relay_token_hash,
)
from schemas.ids import derived_id, visitor_tag

# The built-in bot rule, used by programs without their own `bot_user_agents`.
BOT_PATTERN = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|facebookexternalhit|embedly|preview|monitor|curl/|wget/"
    r"|python-requests|httpx|go-http-client|java/|headlesschrome|phantomjs|lighthouse",
    re.IGNORECASE,
)
# A client clock may run this far ahead before its click is re-dated.
FUTURE_TOLERANCE = timedelta(minutes=5)

VISITOR_COOKIE = "rs_vid"
CLICK_COOKIE = "rs_clid"
CLICK_PARAM = "rsclid"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
RedateReason = Literal["too_old", "in_future"]


@dataclass(frozen=True, slots=True)
class ClickPolicy:
    """A program's click policy. `bot_substrings` None = the built-in `BOT_PATTERN`."""

    max_age: timedelta = timedelta(hours=DEFAULT_CLICK_MAX_AGE_HOURS)
    bot_substrings: tuple[str, ...] | None = None
    relay_token_hash: str | None = None
    relay_networks: tuple[Network, ...] = ()

    @classmethod
    def from_settings(
        cls,
        *,
        max_age_hours: int,
        bot_user_agents: Iterable[str] | None,
        relay_token_hash: str | None,
        relay_ips: Iterable[str],
    ) -> ClickPolicy:
        """From the program's stored columns (validated by the API on the way in)."""
        return cls(
            max_age=timedelta(hours=max_age_hours),
            bot_substrings=(
                None if bot_user_agents is None else tuple(p.lower() for p in bot_user_agents)
            ),
            relay_token_hash=relay_token_hash,
            relay_networks=tuple(_networks(relay_ips)),
        )


def _networks(texts: Iterable[str]) -> Iterable[Network]:
    for text in texts:
        # The API stores only valid networks; a row written past it must not stop the reload.
        with contextlib.suppress(ValueError):
            yield ipaddress.ip_network(text, strict=False)


DEFAULT_POLICY = ClickPolicy()


def is_bot(user_agent: str | None, policy: ClickPolicy = DEFAULT_POLICY) -> bool:
    """Flag, never drop: an empty user agent, or one matching the program's rule (any of its
    case-insensitive substrings; the built-in pattern when the program has none)."""
    if not user_agent:
        return True
    if len(user_agent) <= 512:  # browsers send a handful of distinct ones: remembered
        return _matches_bot_rule(user_agent, policy.bot_substrings)
    return _matches_bot_rule.__wrapped__(user_agent, policy.bot_substrings)


@functools.lru_cache(maxsize=4096)
def _matches_bot_rule(user_agent: str, substrings: tuple[str, ...] | None) -> bool:
    """The regular expression search cost ~5 % of a redirect (bench/ingress --profile-kind
    clicks); the same User-Agent comes back with every click of the same browser build."""
    if substrings is None:
        return bool(BOT_PATTERN.search(user_agent))
    lowered = user_agent.lower()
    return any(s in lowered for s in substrings)


def click_time(
    claimed: datetime | None, now: datetime, policy: ClickPolicy = DEFAULT_POLICY
) -> tuple[datetime, RedateReason | None]:
    """The time a pixel click is recorded at, and why it was re-dated to `now` (None: it was
    not): a claim older than the program's max age, or more than 5 minutes ahead."""
    if claimed is None:
        return now, None
    if claimed < now - policy.max_age:
        return now, "too_old"
    if claimed > now + FUTURE_TOLERANCE:
        return now, "in_future"
    return claimed, None


class BadRelayHeaders(ValueError):
    """A forwarded-for header that is not one IP address."""


class RelayHeaders(NamedTuple):
    """What a server-side relay sent: its token and the shopper's User-Agent and IP.

    (A named tuple, as `Shopper`: immutable like a frozen dataclass, made in a third of the
    time; one or two of them per click.)"""

    token: str | None
    user_agent: str | None
    ip: str | None

    @property
    def forwarding(self) -> bool:
        return self.user_agent is not None or self.ip is not None

    @classmethod
    def read(cls, headers: Mapping[str, str]) -> RelayHeaders:
        """From request headers (a case-insensitive mapping, or one keyed by lower-case names
        as ASGI sends them); `BadRelayHeaders` for a forwarded IP that is not exactly one
        IPv4/IPv6 address."""
        ip = headers.get(_FORWARDED_FOR)
        token = headers.get(_RELAY_TOKEN)
        user_agent = headers.get(_FORWARDED_USER_AGENT)
        if ip is None and token is None and user_agent is None:
            return _NO_RELAY  # nearly every click: no relay
        if ip is not None:
            try:
                ip = str(ipaddress.ip_address(ip.strip()))
            except ValueError as exc:
                raise BadRelayHeaders(
                    f"{FORWARDED_FOR_HEADER} must be one IP address (the shopper's)"
                ) from exc
        return cls(token, user_agent, ip)


_NO_RELAY = RelayHeaders(None, None, None)
_FORWARDED_FOR = FORWARDED_FOR_HEADER.lower()
_RELAY_TOKEN = RELAY_TOKEN_HEADER.lower()
_FORWARDED_USER_AGENT = FORWARDED_USER_AGENT_HEADER.lower()


def relay_trusted(policy: ClickPolicy, token: str | None, peer_ip: str | None) -> bool:
    """Whether the sender is one of the program's relays: it presents the program's relay
    token, or connects from one of the program's relay networks."""
    if token and policy.relay_token_hash is not None:
        given = relay_token_hash(token)
        if hmac.compare_digest(given, policy.relay_token_hash):
            return True
    if peer_ip and policy.relay_networks:
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return False
        return any(address in network for network in policy.relay_networks)
    return False


class Shopper(NamedTuple):
    """Whom a click is judged as: the shopper's User-Agent and IP, and what became of a relay's
    forwarded headers (None: none were sent)."""

    user_agent: str | None
    ip: str | None
    relay: Literal["honoured", "ignored"] | None


def shopper(
    policy: ClickPolicy, relay: RelayHeaders, *, peer_ip: str | None, user_agent: str | None
) -> Shopper:
    """A trusted relay's forwarded User-Agent and IP replace the request's own (a forwarded
    header left out counts as empty); an untrusted sender's forwarded headers are ignored."""
    if not relay.forwarding:
        return Shopper(user_agent, peer_ip, None)
    if relay_trusted(policy, relay.token, peer_ip):
        return Shopper(relay.user_agent or None, relay.ip, "honoured")
    return Shopper(user_agent, peer_ip, "ignored")


def ip_hash(salt: str, ip: str | None) -> str | None:
    """Salted hash of the client IP: the IP itself is never stored. HMAC-SHA256 keyed by the
    salt (the first 32 hex digits), computed from the key's two padded SHA-256 states, which
    are prepared once per salt: `hmac.digest` prepares OpenSSL's HMAC anew on every call,
    which cost two thirds of its time on an address (same bytes: tests/ingest/test_clicks)."""
    if not ip:
        return None
    digest: str = digest_of(_hmac_states(salt), ip.encode()).hexdigest()
    return digest[:32]


@functools.lru_cache(maxsize=8)
def _hmac_states(salt: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    """The salt's HMAC pad states, for `ip_hash`."""
    return pad_states(salt)


# Printable ASCII but `"` and `\`: what `json.dumps` writes as it is (ensure_ascii).
_JSON_AS_IS = re.compile(r"[ !#-\[\]-~]*")


def fingerprint(
    ip_digest: str | None, user_agent: str | None, link_code: str, visitor_id: str | None = None
) -> str:
    """Identity of "the same visitor clicking the same link" for duplicate marking: the visitor
    id and User-Agent when the client sent an id (two shoppers behind one NAT are two visitors;
    one browser keeps its User-Agent), else the IP and User-Agent."""
    if visitor_id:
        agent = user_agent or ""
        if _JSON_AS_IS.fullmatch(link_code + agent + visitor_id):  # json.dumps escapes nothing
            text = f'["visitor", "{link_code}", "{agent}", "{visitor_id}"]'
        else:
            text = json.dumps(["visitor", link_code, agent, visitor_id])
    else:
        text = f"{ip_digest or '-'}|{user_agent or '-'}|{link_code}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def pixel_click_id(tenant_id: str, link_code: str, client_event_id: str) -> str:
    """The stable contract of `POST /v1/clicks`: a click with a `client_event_id` has the id
    `clk_` + hex BLAKE2b-128 of `tenant_id`, the link's code and `client_event_id` joined by
    U+001F (`schemas.ids.derived_id`), so an integrator can cite it before the 202 returns."""
    return derived_id("clk", tenant_id, link_code, client_event_id)


def redirect_url(landing_url: str, click_id: str) -> str:
    """`landing_url` with `rsclid=<click id>` added (replacing any previous one)."""
    template = _redirect_template(landing_url)
    if template is not None and _PLAIN_ID.fullmatch(click_id):  # urlencode keeps it as is
        return template[0] + click_id + template[1]
    return _redirect_url(landing_url, click_id)


_PLAIN_ID = re.compile(r"[A-Za-z0-9_]+")
_SLOT = f"rsclidslot{secrets.token_hex(8)}"  # no landing URL contains it


@functools.lru_cache(maxsize=4096)
def _redirect_template(landing_url: str) -> tuple[str, str] | None:
    """The redirect around the click id, split once per landing URL (urlsplit, parse_qsl and
    urlencode cost more than the rest of a redirect's string work)."""
    rendered = _redirect_url(landing_url, _SLOT)
    if rendered.count(_SLOT) != 1:
        return None
    before, _, after = rendered.partition(_SLOT)
    return before, after


def _redirect_url(landing_url: str, click_id: str) -> str:
    parts = urlsplit(landing_url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != CLICK_PARAM]
    query.append((CLICK_PARAM, click_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


class RandomChunks:
    """16-byte chunks of `os.urandom`, read 4 KiB (256 chunks) per system call.

    A `/r/` click of a new visitor needs 30 random bytes (its visitor id and its click id), and
    `os.urandom` is a `getrandom` system call each time: two per click (bench.ingress_cpu under
    strace). These are the same kernel CSPRNG's bytes, only read in bulk; each chunk is handed
    out once (`deque.popleft` is atomic, so no two callers get the same chunk, whatever thread
    they run in), and a forked child drops what it inherited, so two workers never share one.
    """

    SIZE = 16

    def __init__(self, chunks: int = 256) -> None:
        self._read = self.SIZE * chunks
        self._queue: collections.deque[bytes] = collections.deque()
        os.register_at_fork(after_in_child=self._queue.clear)

    def take(self) -> bytes:
        """16 random bytes that no other call of this process (or of a fork of it) gets."""
        try:
            return self._queue.popleft()
        except IndexError:
            data = os.urandom(self._read)
            size = self.SIZE
            self._queue.extend(data[start : start + size] for start in range(size, len(data), size))
            return data[:size]


_RANDOM = RandomChunks()


def new_visitor_id() -> str:
    """A new visitor's id: 32 hex digits, 128 random bits (as `secrets.token_hex(16)`)."""
    return _RANDOM.take().hex()


def new_click_id(visitor_id: str) -> str:
    """`schemas.ids.click_id_for_visitor(visitor_id)`, its 112 random bits taken from
    `RandomChunks`: `clk_`, the visitor's tag (four hex digits), 28 random hex digits."""
    return f"clk_{visitor_tag(visitor_id)}{_RANDOM.take()[:14].hex()}"
