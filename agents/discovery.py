"""Finding Ollama endpoints among hosts the operator names, and only those.

Targets are hosts (``gpu1``, ``10.0.0.5``, ``10.0.0.5:11500``), IPv4 ranges
(``10.0.0.10-20`` or ``10.0.0.10-10.0.0.20``) and CIDR blocks (``10.0.0.0/28``).
The expansion is bounded (``max_hosts``) so a typo cannot turn into a scan of a
whole network, and nothing outside the expansion is ever contacted.
"""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import httpx

DEFAULT_PORT = 11434
_RANGE = re.compile(r"^(\d{1,3}\.\d{1,3}\.\d{1,3}\.)(\d{1,3})-(\d{1,3})$")


class TargetError(ValueError):
    pass


@dataclass(frozen=True)
class Target:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


@dataclass
class Found:
    target: Target
    version: str


def _split_port(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):  # [v6]:port
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise TargetError(f"'{text}': the port must be a number between 1 and 65535")
        return host, int(port)
    return text, default_port


def _hosts_of(spec: str) -> Iterator[str]:
    if "/" in spec:
        try:
            network = ipaddress.ip_network(spec, strict=False)
        except ValueError as exc:
            raise TargetError(f"'{spec}' is not a valid CIDR block: {exc}") from exc
        hosts = list(network.hosts()) or [network.network_address]
        yield from (str(h) for h in hosts)
        return
    short = _RANGE.match(spec)
    if short:
        prefix, low, high = short.group(1), int(short.group(2)), int(short.group(3))
        spec = f"{prefix}{low}-{prefix}{high}"
    if "-" in spec and all(_is_ip(part) for part in spec.split("-", 1)):
        first, last = (ipaddress.ip_address(p) for p in spec.split("-", 1))
        if int(last) < int(first) or first.version != last.version:
            raise TargetError(f"'{spec}': a range goes from a lower to a higher address of the same family")
        for value in range(int(first), int(last) + 1):
            yield str(ipaddress.ip_address(value))
        return
    if not re.match(r"^[A-Za-z0-9.\-:]+$", spec):
        raise TargetError(f"'{spec}' is not a host, range or CIDR block")
    yield spec


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def expand(specs: list[str], *, port: int = DEFAULT_PORT, max_hosts: int = 1024) -> list[Target]:
    """Every (host, port) the specs name, in order, without duplicates; at most max_hosts."""
    targets: dict[Target, None] = {}
    for raw in specs:
        spec = raw.strip()
        if not spec:
            continue
        if "/" in spec or "-" in spec:
            host_part, spec_port = spec, port
            if spec.count(":") == 1 and not spec.startswith("["):
                host_part, spec_port = _split_port(spec, port)
        else:
            host_part, spec_port = _split_port(spec, port)
        for host in _hosts_of(host_part):
            targets[Target(host, spec_port)] = None
            if len(targets) > max_hosts:
                raise TargetError(f"the targets expand to more than {max_hosts} endpoints; "
                                  "narrow them or raise --max-hosts")
    return list(targets)


def probe(target: Target, timeout: float) -> Found | None:
    try:
        response = httpx.get(f"{target.url}/api/version", timeout=timeout)
        version = response.json().get("version") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return Found(target, version) if isinstance(version, str) else None


def scan(targets: list[Target], *, timeout: float = 1.0, concurrency: int = 64,
         progress: Callable[[int, int, Found | None], None] | None = None) -> list[Found]:
    """Probe every target concurrently; a dead or hanging host costs at most ``timeout``."""
    found: list[Found] = []
    if not targets:
        return found
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets)))) as pool:
        futures = [pool.submit(probe, t, timeout) for t in targets]
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            if result is not None:
                found.append(result)
            if progress is not None:
                progress(done, len(targets), result)
    order = {t: i for i, t in enumerate(targets)}
    return sorted(found, key=lambda f: order[f.target])
