"""What a landing URL is, for the API that stores it and the ingress that redirects to it."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MAX_URL_LENGTH = 2000
_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\\]")


def check_http_url(url: str) -> str:
    """`url` unchanged if it is an absolute http(s) URL with a host that `urllib` can split
    (valid brackets and port); `ValueError` naming the problem otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise ValueError(f"a URL has at most {MAX_URL_LENGTH} characters")
    if _FORBIDDEN.search(url):
        raise ValueError("a URL must not contain spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise ValueError("the URL must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("the URL must name a host")
    return url
