"""SSRF guard: every denied URL is refused before any connection (socket and transport spies prove it)."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import pytest

from perceptra_seg.service import create_app
from perceptra_seg.service.url_guard import (
    GuardedTransport,
    UrlNotAllowedError,
    guarded_client,
    is_public_address,
    parse_ip_host,
)

from .helpers import FakeBackend, build_config, png_bytes, running

PUBLIC_IP = "93.184.216.34"


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("127.0.0.1.", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:169.254.169.254", "::ffff:169.254.169.254"),
        ("example.com", None),
        ("cafe.be", None),
        ("deadbeef", None),
        ("1.2.3.example", None),
    ],
)
def test_ip_literals_in_every_encoding(host: str, address: str | None) -> None:
    parsed = parse_ip_host(host)
    assert parsed == (None if address is None else ipaddress.ip_address(address))


@pytest.mark.parametrize("host", ["256.1.1.1", "4294967296", "1.2.3.4.5", "08.1.1.1", "[::zz]"])
def test_malformed_numeric_hosts_are_refused(host: str) -> None:
    with pytest.raises(UrlNotAllowedError):
        parse_ip_host(host)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.5.4", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("255.255.255.255", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fd00:ec2::254", False),  # AWS IPv6 metadata
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("::7f00:1", False),  # IPv4-compatible form
        ("64:ff9b::a00:1", False),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False),  # Teredo
    ],
)
def test_public_address_rule(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


class SpyTransport(httpx.BaseTransport):
    """Records what would have been sent; answers from a script of (status, headers)."""

    def __init__(self, answers: list[tuple[int, dict[str, str]]] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.answers = list(answers or [])

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return httpx.Response(status, headers=headers, content=png_bytes(8, 8), request=request)


class FakeResolver:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(f"unknown host {host}")
        return self.table[host]


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuses every outbound connection attempt made through the socket module, and records those of this thread
    and of threads started during the test (the app's). Threads that were already running (a Ray metrics thread
    left by an earlier test polls 127.0.0.1:9090) are refused but not recorded: they are not the code under test."""
    attempts: list[Any] = []
    earlier = {thread.ident for thread in threading.enumerate()} - {threading.get_ident()}

    def refuse(*args: Any, **_: Any) -> Any:
        if threading.get_ident() not in earlier:
            attempts.append(args[-1] if args else None)
        raise ConnectionRefusedError("outbound connections are not allowed in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


RESOLVER_TABLE = {
    "images.example": [PUBLIC_IP],
    "metadata.internal": ["169.254.169.254"],
    "rebind.example": [PUBLIC_IP, "10.0.0.7"],
    "v6only.example": ["fd12::1"],
    "localhost": ["127.0.0.1", "::1"],
}

DENIED = [
    "http://127.0.0.1/a.png",
    "http://[::1]/a.png",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.5/a.png",
    "http://192.168.1.10/a.png",
    "http://172.16.0.1/a.png",
    "http://2130706433/a.png",
    "http://0x7f000001/a.png",
    "http://127.1/a.png",
    "http://[::ffff:127.0.0.1]/a.png",
    "http://[::ffff:a9fe:a9fe]/a.png",
    "http://localhost:8080/a.png",
    "http://metadata.internal/computeMetadata/v1/",
    "http://rebind.example/a.png",
    "http://v6only.example/a.png",
    "http://no-such-host.example/a.png",
    "https://10.0.0.1/a.png",
]


def test_the_socket_spy_sees_unguarded_connections(sockets: list[Any]) -> None:
    """Control: without the guard the same kind of request does reach the socket layer."""
    with httpx.Client(trust_env=False) as client, pytest.raises(httpx.ConnectError):
        client.get("http://127.0.0.1:9/a.png")
    assert len(sockets) == 1


@pytest.mark.parametrize("url", DENIED)
def test_denied_urls_never_connect(url: str, sockets: list[Any]) -> None:
    inner, resolver = SpyTransport(), FakeResolver(RESOLVER_TABLE)
    with guarded_client(timeout_s=1.0, resolver=resolver, inner=inner) as client, pytest.raises(UrlNotAllowedError):
        client.get(url)
    assert inner.requests == [] and sockets == []
    if parse_ip_host(httpx.URL(url).host) is not None:
        assert resolver.calls == []  # literals are judged without DNS


def test_non_http_schemes_are_refused(sockets: list[Any]) -> None:
    transport = GuardedTransport(resolver=FakeResolver(RESOLVER_TABLE), inner=SpyTransport())
    for url in ("ftp://images.example/a.png", "file:///etc/passwd", "gopher://images.example/"):
        with pytest.raises(UrlNotAllowedError, match="http"):
            transport.check(httpx.URL(url))
    assert sockets == []


def test_allowed_requests_are_pinned_to_the_checked_address() -> None:
    inner = SpyTransport()
    with guarded_client(timeout_s=1.0, resolver=FakeResolver(RESOLVER_TABLE), inner=inner) as client:
        assert client.get("https://images.example:8443/a.png?x=1").status_code == 200
    (sent,) = inner.requests
    assert sent.url.host == PUBLIC_IP and sent.url.port == 8443 and sent.url.query == b"x=1"
    assert sent.headers["Host"] == "images.example:8443" and sent.headers["Connection"] == "close"
    assert sent.extensions["sni_hostname"] == "images.example"


@pytest.mark.parametrize("target", ["http://10.0.0.1/secret", "http://localhost/", "http://169.254.169.254/"])
def test_every_redirect_hop_is_checked(target: str, sockets: list[Any]) -> None:
    inner = SpyTransport([(302, {"Location": target})])
    with (
        guarded_client(timeout_s=1.0, resolver=FakeResolver(RESOLVER_TABLE), inner=inner) as client,
        pytest.raises(UrlNotAllowedError),
    ):
        client.get("http://images.example/a.png")
    assert [str(r.url.host) for r in inner.requests] == [PUBLIC_IP]
    assert sockets == []


def test_redirect_chains_are_bounded() -> None:
    loop = [(302, {"Location": "http://images.example/next"})] * 10
    inner = SpyTransport(loop)
    with (
        guarded_client(timeout_s=1.0, resolver=FakeResolver(RESOLVER_TABLE), inner=inner) as client,
        pytest.raises(httpx.TooManyRedirects),
    ):
        client.get("http://images.example/a.png")
    assert len(inner.requests) == 4  # the request plus MAX_REDIRECTS hops


# ------------------------------------------------------------------ through the REST API


def _url_app(client: httpx.Client | None = None, **server: Any) -> Any:
    config = build_config(input={"allow_urls": True, "max_bytes": 4096}, server=server)
    return running(create_app(config, backend=FakeBackend(), http_client=client))


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest",
        "http://2130706433/",
        "http://[::1]:9/a.png",
        "http://0177.0.0.1/",
        "file:///etc/passwd",
        "http://rebind.example/a.png",
    ],
)
def test_api_refuses_private_urls_without_connecting(url: str, sockets: list[Any]) -> None:
    inner = SpyTransport()
    client = guarded_client(timeout_s=1.0, resolver=FakeResolver(RESOLVER_TABLE), inner=inner)
    with _url_app(client) as api:
        response = api.post("/v1/embed", json={"image": url})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] in ("url_not_allowed", "invalid_input")
    assert inner.requests == [] and sockets == []


def test_api_fetches_public_urls_through_the_guard() -> None:
    inner = SpyTransport()
    client = guarded_client(timeout_s=1.0, resolver=FakeResolver(RESOLVER_TABLE), inner=inner)
    with _url_app(client) as api:
        response = api.post("/v1/embed", json={"image": "http://images.example/a.png"})
    assert response.status_code == 200, response.text
    assert (response.json()["width"], response.json()["height"]) == (8, 8)
    assert [r.url.host for r in inner.requests] == [PUBLIC_IP]


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://10.0.0.1/secret")
            self.end_headers()
            return
        body = png_bytes(12, 10) if self.path == "/a.png" else b"\0" * 10_000
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """Keep test output quiet."""


@pytest.fixture
def loopback_server() -> Iterator[str]:
    _ImageHandler.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_loopback_is_reachable_only_when_explicitly_allowed(loopback_server: str) -> None:
    with _url_app() as api:  # the guard built from config: loopback is not public
        refused = api.post("/v1/embed", json={"image": loopback_server + "/a.png"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "url_not_allowed"
    assert _ImageHandler.hits == []
    with _url_app(url_allowed_networks=["127.0.0.1/32"]) as api:
        fetched = api.post("/v1/embed", json={"image": loopback_server + "/a.png"})
        assert fetched.status_code == 200, fetched.text
        assert (fetched.json()["width"], fetched.json()["height"]) == (10, 12)
        too_big = api.post("/v1/embed", json={"image": loopback_server + "/big"})
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "image_too_large"
        redirected = api.post("/v1/embed", json={"image": loopback_server + "/redirect"})
        assert redirected.status_code == 400 and redirected.json()["error"]["code"] == "url_not_allowed"
    assert _ImageHandler.hits == ["/a.png", "/big", "/redirect"]
