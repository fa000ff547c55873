"""SSRF protection for image URLs: an httpx transport that only ever connects to public addresses.

:class:`GuardedTransport` sits under the ``httpx.Client`` that fetches image URLs (see :func:`guarded_client`).
For every request — the first one and each redirect hop, since httpx sends every hop through the transport — it

1. accepts only ``http`` / ``https``;
2. turns the host into IP addresses without ambiguity: an IP literal (IPv6 in brackets, dotted quad, and also the
   legacy forms ``inet_aton`` accepts: ``2130706433``, ``0x7f000001``, ``0177.1``, ``127.1``) is parsed here and
   never sent to DNS; a name is resolved with ``getaddrinfo``;
3. requires **every** resolved address to be public: :attr:`ipaddress.IPv4Address.is_global` and not multicast,
   which rules out loopback, private (10/8, 172.16/12, 192.168/16), link-local (169.254/16, where cloud metadata
   lives), CGNAT (100.64/10), unspecified and reserved ranges, IPv6 ULA/link-local/site-local; IPv6 forms that
   embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, Teredo, NAT64 ``64:ff9b::/96``) are
   judged by the embedded address. Networks listed in ``server.url_allowed_networks`` are exempt (deliberately,
   e.g. an internal image store);
4. connects to the address it checked (the URL's host is replaced by that IP), keeping the original ``Host``
   header and, for https, the original name for SNI and certificate verification — so a DNS answer that changes
   between check and connect (DNS rebinding) cannot redirect the connection. Connections are not reused.

A refused URL raises :class:`UrlNotAllowedError` (400 ``url_not_allowed``) before any socket is opened.
The client follows at most :data:`MAX_REDIRECTS` redirects, ignores proxy environment variables (a proxy would
connect on our behalf, unchecked) and has connect/read timeouts; the byte cap is applied by
:func:`perceptra_seg.utils.url_download.download_image_body`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

import httpx

from ..exceptions import InvalidInputError

__all__ = [
    "MAX_REDIRECTS",
    "GuardedTransport",
    "UrlNotAllowedError",
    "guarded_client",
    "is_public_address",
    "parse_ip_host",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: ``(host, port) -> [address, ...]``; the default uses :func:`socket.getaddrinfo`.
Resolver = Callable[[str, int], Sequence[str]]

MAX_REDIRECTS = 3
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_LEGACY_IPV4_CHARS = frozenset("0123456789abcdefxABCDEFX.")


class UrlNotAllowedError(InvalidInputError):
    """The image URL's scheme or (resolved) address is not allowed."""

    code = "url_not_allowed"


def parse_ip_host(host: str) -> IPAddress | None:
    """The IP address a URL host denotes literally, or ``None`` for a DNS name.

    Accepts IPv6 (with or without brackets), dotted-quad IPv4 and the numeric forms of ``inet_aton``: 1 to 4 parts,
    each decimal, ``0x`` hex or ``0``-prefixed octal, the last part filling the remaining bytes.

    Raises:
        UrlNotAllowedError: the host looks numeric but is not a valid address.
    """
    text = host.strip("[]").rstrip(".")
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text.split("%", 1)[0])
        except ValueError:
            raise UrlNotAllowedError(f"invalid IPv6 address in URL: {host!r}") from None
    if not text or not set(text) <= _LEGACY_IPV4_CHARS or not text[-1:].isalnum():
        return None
    labels = text.split(".")
    if not labels[-1].isdigit() and not labels[-1].lower().startswith("0x"):
        return None  # a DNS name whose last label is alphabetic (e.g. "cafe.be")
    try:
        parts = [_parse_number(p) for p in labels]
    except ValueError:
        raise UrlNotAllowedError(f"invalid numeric host in URL: {host!r}") from None
    if len(parts) > 4:
        raise UrlNotAllowedError(f"invalid numeric host in URL: {host!r}")
    *head, last = parts
    if any(p > 0xFF for p in head) or last >= 1 << (8 * (4 - len(head))):
        raise UrlNotAllowedError(f"invalid numeric host in URL: {host!r}")
    value = 0
    for part in head:
        value = (value << 8) | part
    value = (value << (8 * (4 - len(head)))) | last
    return ipaddress.IPv4Address(value)


def _parse_number(part: str) -> int:
    lowered = part.lower()
    if lowered.startswith("0x"):
        return int(lowered[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part, 10)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    if address.ipv4_mapped is not None:
        return [address.ipv4_mapped]
    if address.sixtofour is not None:
        return [address.sixtofour]
    if address.teredo is not None:
        return list(address.teredo)
    if address in _NAT64:
        return [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    return []


def is_public_address(address: IPAddress) -> bool:
    """Whether ``address`` (and any IPv4 address embedded in it) is a globally routable unicast address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # the connection really goes to the IPv4 address
            return is_public_address(address.ipv4_mapped)
        embedded = _embedded_ipv4(address)
        if embedded and not all(is_public_address(a) for a in embedded):
            return False
    return bool(
        address.is_global
        and not address.is_multicast
        and not address.is_private
        and not address.is_loopback
        and not address.is_link_local
        and not address.is_reserved
        and not address.is_unspecified
    )


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return [str(info[4][0]) for info in infos]


class GuardedTransport(httpx.BaseTransport):
    """Checks and pins the destination of every request; see the module docstring.

    Args:
        allowed_networks: CIDR ranges exempt from the public-address rule.
        resolver: name resolution, ``(host, port) -> addresses`` (tests inject a fake one).
        inner: the transport that really connects (default: ``httpx.HTTPTransport`` without retries).
    """

    def __init__(
        self,
        *,
        allowed_networks: Sequence[str] = (),
        resolver: Resolver | None = None,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self._allowed = [ipaddress.ip_network(n, strict=False) for n in allowed_networks]
        self._resolve = resolver or _system_resolver
        self._inner = inner or httpx.HTTPTransport(retries=0)

    def check(self, url: httpx.URL) -> IPAddress:
        """The address to connect to for ``url``, after every check passed.

        Raises:
            UrlNotAllowedError: bad scheme, unresolvable host, or a non-public address.
        """
        if url.scheme not in ("http", "https"):
            raise UrlNotAllowedError(f"only http and https image URLs are allowed, got {url.scheme!r}")
        host = url.raw_host.decode("ascii")
        if not host:
            raise UrlNotAllowedError("image URL has no host")
        literal = parse_ip_host(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            port = url.port or (443 if url.scheme == "https" else 80)
            try:
                addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in self._resolve(host, port)]
            except (OSError, UnicodeError, ValueError) as exc:
                raise UrlNotAllowedError(f"cannot resolve image URL host {host!r}: {exc}") from None
            if not addresses:
                raise UrlNotAllowedError(f"image URL host {host!r} has no address")
        for address in addresses:
            if not self._allowed_address(address):
                raise UrlNotAllowedError(
                    f"image URL host {host!r} resolves to a non-public address; only public addresses are allowed"
                )
        first = addresses[0]
        if isinstance(first, ipaddress.IPv6Address) and first.ipv4_mapped is not None:
            return first.ipv4_mapped
        return first

    def _allowed_address(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        if any(a in net for a in candidates for net in self._allowed if a.version == net.version):
            return True
        return is_public_address(address)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = self.check(request.url)
        extensions = dict(request.extensions)
        if request.url.scheme == "https":
            extensions["sni_hostname"] = request.url.raw_host.decode("ascii")
        headers = request.headers.copy()  # keeps the original Host header
        # One connection per request: a pooled connection is keyed by IP, so it must never be reused for another
        # host name (whose TLS identity it was not verified for).
        headers["Connection"] = "close"
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=str(address)),
            headers=headers,
            stream=request.stream,
            extensions=extensions,
        )
        return self._inner.handle_request(pinned)

    def close(self) -> None:
        self._inner.close()


def guarded_client(
    *,
    timeout_s: float,
    allowed_networks: Sequence[str] = (),
    resolver: Resolver | None = None,
    inner: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """An ``httpx.Client`` for image URLs: guarded transport, ≤ :data:`MAX_REDIRECTS` re-checked redirects,
    connect/read/write/pool timeouts of ``timeout_s``, proxy environment variables ignored."""
    return httpx.Client(
        transport=GuardedTransport(allowed_networks=allowed_networks, resolver=resolver, inner=inner),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=httpx.Timeout(timeout_s),
        trust_env=False,
    )
