"""One Redis URL, spelled the way each client wants it.

Hive is configured with a single ``REDIS_URL``. redis-py (cache, channel layer,
locks) reads ``redis://``/``rediss://``/``unix://`` natively; kombu spells a unix
socket ``redis+socket://`` and the database as ``virtual_host``.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit


def broker_url(redis_url: str) -> str:
    parts = urlsplit(redis_url)
    if parts.scheme != "unix":
        return redis_url
    query = parse_qs(parts.query)
    db = query.pop("db", ["0"])[0]
    rest = {k: v[0] for k, v in query.items()}
    rest["virtual_host"] = db
    return f"redis+socket://{parts.path}?{urlencode(rest)}"


def describe(redis_url: str) -> str:
    """The URL without its password, for logs and start-up banners."""
    parts = urlsplit(redis_url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return redis_url
