"""Container health probe for the web process: GET http://127.0.0.1:8000/api/health.

Exits 0 on a 2xx answer, 1 otherwise. Standard library only (the slim image has no curl).

Django answers 400 to a Host it does not allow, so when HIVE_ALLOWED_HOSTS lists only
public names (``hive.example.com``) the probe presents the first of them instead of
127.0.0.1.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

URL = "http://127.0.0.1:8000/api/health"
LOCAL_NAMES = {"*", "127.0.0.1", "localhost", "[::1]"}


def host_header() -> str | None:
    hosts = [h.strip() for h in os.environ.get("HIVE_ALLOWED_HOSTS", "").split(",") if h.strip()]
    if not hosts or LOCAL_NAMES.intersection(hosts) or ".localhost" in hosts:
        return None
    # ".example.com" allows example.com and every subdomain.
    return hosts[0].lstrip(".")


def main() -> int:
    request = urllib.request.Request(URL, headers={"Accept": "application/json"})
    host = host_header()
    if host:
        request.add_header("Host", host)
    try:
        with urllib.request.urlopen(request, timeout=4) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"health check failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
