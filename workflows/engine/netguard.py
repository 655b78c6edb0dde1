"""Outbound HTTP for workflow nodes, guarded against server-side request forgery.

A workflow author must not be able to reach Hive's own services, the cloud metadata
endpoint or the private network through the HTTP Request node. So every connection:

* resolves the host itself and refuses loopback, link-local, private, carrier-grade
  NAT, multicast, reserved and unspecified addresses (IPv4 and IPv6, IPv4-mapped and
  NAT64-embedded IPv4 included) unless the host, the IP or a CIDR containing it is in
  ``EngineSettings.http_allow``;
* connects to exactly the address it checked (a custom httpcore network backend), so
  there is no window for DNS rebinding between the check and the connect;
* follows redirects by hand, each hop going through the same check (max 10);
* streams the body and aborts beyond ``http_max_bytes``.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpcore
import httpx

from workflows.engine.contract import EngineSettings, NodeError

__all__ = ["AddressRefused", "GuardedClient", "HttpResponse", "Policy", "classify", "guarded_client"]

MAX_REDIRECTS = 10
ALLOW_SETTING = "HIVE_WORKFLOW_HTTP_ALLOW"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


class AddressRefused(NodeError):
    """The target resolves to an address workflows may not reach."""


def classify(ip: IPAddress) -> str | None:
    """Why ``ip`` is off limits ("loopback", "private", ...), or None for a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return classify(ip.ipv4_mapped)
        if ip in _NAT64 or ip in _NAT64_LOCAL:
            return classify(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            inner = classify(ip.sixtofour)
            if inner:
                return inner
        if ip.teredo is not None:
            inner = classify(ip.teredo[1])
            if inner:
                return inner
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "carrier-grade NAT"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return None


@dataclass(frozen=True)
class Policy:
    """What may be reached besides public addresses (``http_allow``).

    An entry is a host (``*.example.internal`` for its subdomains), an IP or a CIDR,
    each optionally with ``:port`` (IPv6 in brackets: ``[fd00::/8]:443``). Without a
    port an entry allows every port of what it names.
    """

    hosts: frozenset[tuple[str, int | None]] = frozenset()
    networks: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int | None], ...] = ()

    @staticmethod
    def _split_port(entry: str) -> tuple[str, int | None]:
        if entry.startswith("["):
            inside, _, rest = entry[1:].partition("]")
            return inside, (int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None)
        if entry.count(":") == 1:
            name, _, port = entry.partition(":")
            if port.isdigit():
                return name, int(port)
        return entry, None

    @classmethod
    def from_allow(cls, allow: Iterable[str]) -> Policy:
        hosts, networks = set(), []
        for raw in allow:
            entry, port = cls._split_port(str(raw).strip())
            if not entry:
                continue
            try:
                networks.append((ipaddress.ip_network(entry, strict=False), port))
            except ValueError:
                hosts.add((entry.lower().rstrip("."), port))
        return cls(frozenset(hosts), tuple(networks))

    @staticmethod
    def _host_matches(host: str, pattern: str) -> bool:
        host = host.lower().rstrip(".")
        return host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))

    def host_allowed(self, host: str, port: int | None = None) -> bool:
        return any(self._host_matches(host, h) and p in (None, port) for h, p in self.hosts)

    def ip_allowed(self, ip: IPAddress, port: int | None = None) -> bool:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == n.version and c in n and p in (None, port)
                   for c in candidates for n, p in self.networks)

    def check(self, host: str, ip: IPAddress, port: int | None = None) -> None:
        """Raise AddressRefused unless connecting to ``ip``:``port`` (for ``host``) is fine."""
        reason = classify(ip)
        if reason is None or self.host_allowed(host, port) or self.ip_allowed(ip, port):
            return
        shown = f"::ffff:{ip.ipv4_mapped}" if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else str(ip)
        try:
            literal = ipaddress.ip_address(host.strip("[]").split("%", 1)[0]) == ip
        except ValueError:
            literal = False
        target = "" if literal else f" of host '{host}'"
        on_port = f" port {port}" if port is not None and self._names_ports(host, ip) else ""
        raise AddressRefused(f"The address {shown}{target}{on_port} is not allowed: {reason} "
                             f"(allow it with {ALLOW_SETTING})")

    def _names_ports(self, host: str, ip: IPAddress) -> bool:
        """True when an entry names this host or IP, but for other ports: the message says which port."""
        return (any(p is not None and self._host_matches(host, h) for h, p in self.hosts)
                or any(p is not None and ip.version == n.version and ip in n for n, p in self.networks))

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        """The host's addresses, all checked: one refused address refuses the host."""
        bare = host.strip("[]")
        try:
            literal = ipaddress.ip_address(bare.split("%", 1)[0])
        except ValueError:
            literal = None
        if literal is not None:
            self.check(host, literal, port)
            return [literal]
        try:
            infos = socket.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise NodeError(f"The host '{host}' could not be resolved: {exc}") from None
        addresses: list[IPAddress] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise NodeError(f"The host '{host}' has no addresses")
        for ip in addresses:
            self.check(host, ip, port)
        return addresses


class _GuardedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, but it resolves, checks and connects to the checked IP only."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = self.policy.resolve(host, port)
        last: Exception | None = None
        for ip in addresses:
            try:
                return super().connect_tcp(str(ip), port, timeout=timeout, local_address=local_address,
                                           socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise AddressRefused("Unix sockets are not allowed")


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, policy: Policy, *, verify: bool = True) -> None:
        super().__init__(verify=verify, trust_env=False, retries=0)
        ssl_context = httpx.create_ssl_context(verify=verify, trust_env=False)
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, max_connections=10, max_keepalive_connections=5,
                                             keepalive_expiry=5.0, http1=True, http2=False,
                                             network_backend=_GuardedBackend(policy))


@dataclass
class HttpResponse:
    """A finished response: status, headers (lower-case names), body bytes, final URL."""

    status_code: int
    reason: str
    headers: dict[str, str]
    body: bytes
    url: str
    redirects: list[str] = field(default_factory=list)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def text(self) -> str:
        charset = "utf-8"
        for part in self.content_type.split(";")[1:]:
            key, _, value = part.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip("\"' ")
        try:
            return self.body.decode(charset, "replace")
        except LookupError:
            return self.body.decode("utf-8", "replace")


def _merge_headers(response: httpx.Response) -> dict[str, str]:
    merged: dict[str, str] = {}
    for key, value in response.headers.multi_items():
        key = key.lower()
        if key in merged:
            merged[key] = f"{merged[key]}, {value}" if key != "set-cookie" else f"{merged[key]}\n{value}"
        else:
            merged[key] = value
    return merged


class GuardedClient:
    """A small HTTP client whose every hop passes the address policy; use as a context manager."""

    def __init__(self, settings: EngineSettings, *, verify: bool = True) -> None:
        self.settings = settings
        self.policy = Policy.from_allow(settings.http_allow)
        self._client = httpx.Client(transport=_GuardedTransport(self.policy, verify=verify), trust_env=False,
                                    follow_redirects=False)

    def __enter__(self) -> GuardedClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, url: str, *, params: Any = None, headers: dict[str, str] | None = None,
                content: bytes | str | None = None, data: dict[str, Any] | None = None,
                files: Any = None, json_body: Any = None, timeout: float | None = None,
                follow_redirects: bool = True, max_redirects: int = MAX_REDIRECTS,
                max_bytes: int | None = None) -> HttpResponse:
        """Send one request, following redirects by hand; raises NodeError with a clear message."""
        limit = self.settings.http_max_bytes if max_bytes is None else max_bytes
        seconds = timeout if timeout and timeout > 0 else self.settings.http_timeout_s
        timeouts = httpx.Timeout(seconds, connect=min(seconds, 30.0))
        max_redirects = max(0, min(int(max_redirects), MAX_REDIRECTS))
        try:
            target = httpx.URL(url)
            if params:  # keep the URL's own query (n8n merges both)
                target = target.copy_merge_params(params)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise NodeError(f"Invalid URL: {url} ({exc})") from None
        kwargs: dict[str, Any] = {"headers": headers}
        if json_body is not None:
            kwargs["json"] = json_body
        elif files:
            kwargs["files"], kwargs["data"] = files, data
        elif data is not None:
            kwargs["data"] = data
        elif content is not None:
            kwargs["content"] = content
        request = self._client.build_request(method.upper(), target, timeout=timeouts, **kwargs)
        visited: list[str] = []
        while True:
            if request.url.scheme not in ("http", "https"):
                raise NodeError(f"Invalid URL: {request.url}. URL must start with \"http\" or \"https\".")
            response = self._send(request, limit)
            if not (follow_redirects and response.is_redirect and "location" in response.headers):
                return self._finish(response, limit, visited)
            if len(visited) >= max_redirects:
                response.close()
                raise NodeError(f"Too many redirects (more than {max_redirects}) starting at {url}")
            visited.append(str(request.url))
            request = self._redirect(request, response, timeouts)
            response.close()

    def _send(self, request: httpx.Request, limit: int) -> httpx.Response:
        try:
            return self._client.send(request, stream=True)
        except AddressRefused:
            raise
        except NodeError:
            raise
        except httpx.TimeoutException as exc:
            raise NodeError(f"The request to {request.url} timed out ({type(exc).__name__})",
                            description="Raise the node's Timeout option or HIVE_WORKFLOW_HTTP_TIMEOUT") from None
        except httpx.HTTPError as exc:
            cause = exc.__cause__ or exc.__context__
            while cause is not None and not isinstance(cause, NodeError):
                cause = cause.__cause__ or cause.__context__
            if isinstance(cause, NodeError):
                raise cause from None
            raise NodeError(f"The request to {request.url} failed: {exc or type(exc).__name__}") from None

    def _redirect(self, request: httpx.Request, response: httpx.Response, timeouts: httpx.Timeout) -> httpx.Request:
        location = response.headers["location"]
        try:
            target = request.url.join(location)
        except httpx.InvalidURL as exc:
            raise NodeError(f"Invalid redirect location '{location}' from {request.url}: {exc}") from None
        method = request.method
        keep_body = response.status_code in (307, 308)
        if response.status_code == 303 and method != "HEAD" or response.status_code in (301, 302) and method == "POST":
            method = "GET"
        headers = httpx.Headers(request.headers)
        headers.pop("host", None)
        if not keep_body:
            for name in ("content-length", "content-type", "transfer-encoding"):
                headers.pop(name, None)
        same_origin = (target.scheme, target.host, target.port) == (request.url.scheme, request.url.host, request.url.port)
        if not same_origin:
            for name in ("authorization", "cookie", "proxy-authorization"):
                headers.pop(name, None)
        content = request.content if keep_body else None
        return self._client.build_request(method, target, headers=headers, content=content, timeout=timeouts)

    def _finish(self, response: httpx.Response, limit: int, visited: list[str]) -> HttpResponse:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            response.close()
            raise NodeError(f"The response from {response.request.url} is too large: {int(declared)} bytes "
                            f"(limit {limit}, HIVE_WORKFLOW_HTTP_MAX_BYTES)")
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise NodeError(f"The response from {response.request.url} is larger than {limit} bytes "
                                    f"(HIVE_WORKFLOW_HTTP_MAX_BYTES); aborted")
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise NodeError(f"The request to {response.request.url} timed out while reading the response") from None
        except httpx.HTTPError as exc:
            raise NodeError(f"Reading the response from {response.request.url} failed: {exc}") from None
        finally:
            response.close()
        return HttpResponse(status_code=response.status_code, reason=response.reason_phrase or "",
                            headers=_merge_headers(response), body=b"".join(chunks), url=str(response.request.url),
                            redirects=visited)


def guarded_client(settings: EngineSettings, *, verify: bool = True) -> GuardedClient:
    return GuardedClient(settings, verify=verify)
