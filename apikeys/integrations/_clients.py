"""Who sent a request: the peer of the connection, or the client behind trusted proxies."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from apikeys.integrations._settings import IntegrationSettings

logger = logging.getLogger("apikeys.integrations")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

HeaderSource = Mapping[str, Any] | Iterable[tuple[str | bytes, str | bytes]]
"""Headers or query parameters: a mapping, or ``(name, value)`` pairs (repeats kept)."""


def text(value: str | bytes) -> str:
    """A header value as text: ASGI sends bytes, and latin-1 maps every byte, so this never fails."""
    return value.decode("latin-1") if isinstance(value, bytes) else value


def text_pairs(source: HeaderSource) -> Iterator[tuple[str, str]]:
    """Yield ``(name, value)`` text pairs from a mapping or a list of pairs (list values spread)."""
    items: Iterable[tuple[str | bytes, Any]] = (
        cast("Mapping[str, Any]", source).items() if isinstance(source, Mapping) else source
    )
    for name, value in items:
        values: Iterable[Any] = value if isinstance(value, list | tuple) else (value,)
        for item in values:
            yield text(name), text(item)


def ip_address(text: str) -> Address | None:
    """An IP address, with an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) read as IPv4."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_network(text: str) -> Network:
    """A network of ``trusted_proxies``; an IPv4-mapped one (``::ffff:10.0.0.0/104``) as IPv4.

    Raises:
        ValueError: ``text`` is not an address or network.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a request, as the server saw it (or a trusted proxy reported it).

    Attributes:
        address: The client's IP address as text (``REMOTE_ADDR``, the ASGI
            ``client``), or ``None`` when the server does not know it.
        scheme: ``http``, ``https``, ``ws`` or ``wss``.
    """

    address: str | None
    scheme: str = "http"

    @property
    def secure(self) -> bool:
        """Whether the request came over TLS."""
        return self.scheme.lower() in ("https", "wss")

    @property
    def limiter_key(self) -> str | None:
        """Who the per-client limiter counts this client as, or ``None`` if unknown.

        An IPv6 client counts as its ``/64`` network: one subscriber usually
        holds at least a ``/64`` and could otherwise take a fresh address for
        every attempt. An IPv4-mapped address (``::ffff:192.0.2.1``, what a
        dual-stack socket reports for IPv4 clients) counts as the IPv4
        address. Anything that is not an IP address counts as itself.

        Example:
            >>> Peer("2001:db8:1:2:aaaa::1").limiter_key
            '2001:db8:1:2::/64'
            >>> Peer("::ffff:192.0.2.1").limiter_key
            '192.0.2.1'
        """
        address = self.address
        if address is None:
            return None
        parsed = ip_address(address)
        if parsed is None:
            return address
        if isinstance(parsed, ipaddress.IPv6Address):
            return f"{ipaddress.IPv6Address(int(parsed) >> 64 << 64)}/64"
        return str(parsed)

    @classmethod
    def of_asgi(cls, scope: Mapping[str, Any]) -> Peer:
        """The peer of an ASGI connection: its ``client`` and ``scheme``."""
        client = scope.get("client")
        return cls(str(client[0]) if client else None, str(scope.get("scheme", "http")))


def _is_trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


# Hops read from X-Forwarded-For: far more than any real proxy chain.
MAX_FORWARDED_HOPS = 32

# Set-up problems already logged: each is a fact about the deployment, so once per process.
proxy_warnings_given: set[str] = set()
_PROXY_DOCS = "see 'Behind a reverse proxy' in the apikeys security docs"


def _warn_once(message: str, *args: object) -> None:
    # Once per problem, whatever its arguments: the message (unformatted) names the problem.
    if message not in proxy_warnings_given:
        proxy_warnings_given.add(message)
        logger.warning(message + "; " + _PROXY_DOCS, *args)


def resolve_client(headers: HeaderSource, peer: Peer, settings: IntegrationSettings) -> Peer:
    """The client behind the trusted proxies, if the connection comes from one.

    ``X-Forwarded-For`` is read from the right: each hop added by a trusted
    proxy is skipped, and the first address that is not a trusted proxy is
    the client (a client cannot forge the hops that proxies append). A hop
    that is not an IP address stops the walk at the proxy that reported it.
    ``X-Forwarded-Proto`` counts as HTTPS only if every value it lists is
    ``https``. Both headers are ignored unless the peer is a trusted proxy.
    IPv4-mapped IPv6 addresses (``::ffff:a.b.c.d``) are read as IPv4.

    What the server did to these headers before the app saw them cannot be
    undone here, so a set-up that defeats ``trusted_proxies``,
    ``client_max_failures`` or ``require_https`` is logged once per process
    as a WARNING on ``apikeys.integrations``: a trusted proxy's request
    without ``X-Forwarded-For`` (the server removed it: waitress's default) or
    without ``X-Forwarded-Proto`` while HTTPS is required; a client address
    the server already took from ``X-Forwarded-For`` (uvicorn's default for
    connections from 127.0.0.1); ``X-Forwarded-For`` from a peer that is not
    a trusted proxy (an unlisted proxy makes all its clients one client).
    """
    networks = settings.trusted_networks
    peer_ip = ip_address(peer.address) if peer.address is not None else None
    trusted = _is_trusted(peer_ip, networks)
    if not trusted and peer_ip is None:
        return peer
    hops: list[str] = []
    protocols: list[str] = []
    for name, value in text_pairs(headers):
        lowered = name.lower()
        if lowered == "x-forwarded-for":
            hops += value.split(",")
        elif lowered == "x-forwarded-proto":
            protocols += [part.strip().lower() for part in value.split(",")]
    if not trusted:
        if hops:
            _diagnose_untrusted_forwarding(peer_ip, hops, settings)
        return peer
    if not hops and settings.client_max_failures != 0:  # unset: on for Clerk
        _warn_once(
            "apikeys: a request from trusted proxy %s carried no X-Forwarded-For, so the "
            "per-client limit counts every client behind that proxy as one (waitress removes "
            "the header unless started with --no-clear-untrusted-proxy-headers)",
            peer_ip,
        )
    address = peer.address
    for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
        parsed = ip_address(hop)
        if parsed is None:
            break
        address = str(parsed)
        if not any(parsed in network for network in networks):
            break
    scheme = peer.scheme
    if protocols:
        scheme = "https" if all(protocol == "https" for protocol in protocols) else "http"
    elif settings.require_https and not peer.secure:
        _warn_once(
            "apikeys: a request from trusted proxy %s carried no X-Forwarded-Proto, so "
            "require_https refuses every key it forwards (waitress removes the header unless "
            "started with --no-clear-untrusted-proxy-headers)",
            peer_ip,
        )
    return Peer(address, scheme)


def _diagnose_untrusted_forwarding(
    peer_ip: Address | None, hops: list[str], settings: IntegrationSettings
) -> None:
    """Log why a peer that is not a trusted proxy sent ``X-Forwarded-For``, once per process."""
    if any(ip_address(hop) == peer_ip for hop in hops[-MAX_FORWARDED_HOPS:]):
        # The peer is one of the forwarded hops: the server replaced the
        # proxy's address with the header's before the app was called.
        _warn_once(
            "apikeys: the server already took the client address %s from X-Forwarded-For "
            "(uvicorn does for connections from --forwarded-allow-ips, 127.0.0.1 and ::1 by "
            "default; waitress with --trusted-proxy), so per-client limits and require_https "
            "depend on the server's proxy settings, not on trusted_proxies=%r",
            peer_ip,
            settings.trusted_proxies,
        )
    else:
        _warn_once(
            "apikeys: X-Forwarded-For from %s is ignored, as it is not in trusted_proxies=%r; "
            "if it is your reverse proxy, list it, or the per-client limit counts every client "
            "behind it as one",
            peer_ip,
            settings.trusted_proxies,
        )


__all__ = ["HeaderSource", "Peer", "ip_address", "ip_network", "resolve_client", "text_pairs"]
