"""Slow clients against a real server process: header and body read deadlines, keep-alive, connection cap."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import suppress

import httpx
import pytest

from .helpers import b64_png, build_config, server_process

HEAD = b"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """One server for the module: header deadline 2.5 s, body deadline 1 s, keep-alive 1 s, 120 connections; an
    inference call takes 3 s (longer than the header deadline)."""
    sections = {
        "server": {
            "max_queue": 8,
            "header_timeout_s": 2.5,
            "body_timeout_s": 1.0,
            "keep_alive_timeout_s": 1,
            "max_connections": 120,
            "max_header_bytes": 2048,
        }
    }
    with server_process(sections, fake={"encode_delay_s": 3.0}) as base:
        yield base, int(base.rsplit(":", 1)[1])


def _connect(port: int, count: int) -> list[socket.socket]:
    sockets = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(count)]
    for sock in sockets:
        sock.setblocking(False)
    return sockets


def _drip_until_closed(
    sockets: list[socket.socket], chunks: Iterator[bytes] | None, interval_s: float, limit_s: float
) -> tuple[list[float], list[bytes]]:
    """Send the next chunk to every open socket each ``interval_s`` (nothing when ``chunks`` is None) until the
    server closed them all or ``limit_s`` passed; return each socket's close time (inf if still open) and the
    bytes the server sent it."""
    start = time.monotonic()
    closed = [float("inf")] * len(sockets)
    received = [b""] * len(sockets)
    while time.monotonic() - start < limit_s and any(c == float("inf") for c in closed):
        chunk = next(chunks, b"") if chunks is not None else b""
        for index, sock in enumerate(sockets):
            if closed[index] != float("inf"):
                continue
            try:
                while True:
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionResetError
                    received[index] += data
            except BlockingIOError:
                pass
            except OSError:
                closed[index] = time.monotonic() - start
                continue
            if chunk:
                try:
                    sock.send(chunk)
                except OSError:
                    closed[index] = time.monotonic() - start
        time.sleep(interval_s)
    for sock in sockets:
        sock.close()
    return closed, received


def _byte_by_byte(data: bytes) -> Iterator[bytes]:
    for byte in data:
        yield bytes([byte])
    while True:
        yield b""


def test_slow_and_silent_headers_are_cut_off(server: tuple[str, int]) -> None:
    """Before: uvicorn has no header timeout; a connection that drips its headers (or sends nothing) stays open."""
    base, port = server
    closed_silent, _ = _drip_until_closed(_connect(port, 10), None, 0.05, limit_s=6.0)
    dripping = _connect(port, 20)  # a byte every 0.2 s: the head would take 2 minutes
    closed_drip, _ = _drip_until_closed(dripping, _byte_by_byte(HEAD + b"X-Padding: " + b"a" * 500), 0.2, limit_s=6.0)
    assert httpx.get(base + "/v1/healthz", timeout=5).status_code == 200
    assert min(closed_silent) > 2.0 and max(closed_silent) < 2.5 + 3.0, closed_silent
    assert min(closed_drip) > 2.0 and max(closed_drip) < 2.5 + 3.0, closed_drip
    print(f"slow headers: closed after {max(closed_silent):.2f} s (silent) / {max(closed_drip):.2f} s (dripping)")


def test_a_hundred_slow_bodies_get_408_and_are_closed(server: tuple[str, int]) -> None:
    """Before: 100 connections that announce a body and send it slowly stay open forever."""
    base, port = server
    sockets = _connect(port, 100)
    for sock in sockets:
        sock.setblocking(True)
        sock.sendall(HEAD + b'Content-Length: 1000\r\n\r\n{"image": "')
        sock.setblocking(False)
    start = time.monotonic()
    healthz = httpx.get(base + "/v1/healthz", timeout=5)
    healthz_s = time.monotonic() - start
    closed, received = _drip_until_closed(sockets, iter(lambda: b"A", None), 0.2, limit_s=8.0)
    assert healthz.status_code == 200 and healthz_s < 1.0
    assert max(closed) < 1.0 + 4.0, sorted(closed)[-5:]
    assert all(r.startswith(b"HTTP/1.1 408") for r in received), {r[:40] for r in received}
    assert all(b'"code":"request_timeout"' in r for r in received)
    print(f"slow bodies: 100 x 408, all closed within {max(closed):.2f} s")


def test_idle_keep_alive_connections_are_closed(server: tuple[str, int]) -> None:
    with socket.create_connection(("127.0.0.1", server[1]), timeout=5) as sock:
        sock.sendall(b"GET /v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            first += sock.recv(65536)
        start = time.monotonic()
        sock.settimeout(6.0)
        rest = b""
        with suppress(OSError):
            while chunk := sock.recv(65536):
                rest += chunk
        idle_s = time.monotonic() - start
    assert first.startswith(b"HTTP/1.1 200") and rest == b""
    assert 0.5 < idle_s < 2.0, idle_s  # keep-alive (1 s), not the header deadline (2.5 s)


def test_connection_cap_and_header_size_limit(server: tuple[str, int]) -> None:
    base, port = server
    idle = _connect(port, 120)
    time.sleep(0.2)
    over = httpx.get(base + "/v1/healthz", timeout=5)
    assert over.status_code == 503  # uvicorn's own answer beyond limit_concurrency
    _drip_until_closed(idle, None, 0.05, limit_s=6.0)  # the header deadline frees them
    assert httpx.get(base + "/v1/healthz", timeout=5).status_code == 200
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a head that never ends
        sock.sendall(b"GET /v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 4096)
        assert sock.recv(65536).startswith(b"HTTP/1.1 400")  # h11 stops buffering at max_header_bytes


def test_uvicorn_settings_come_from_the_server_section(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from perceptra_seg.service import connections
    from perceptra_seg.service.main import uvicorn_config

    config = build_config(
        server={"header_timeout_s": 4.5, "keep_alive_timeout_s": 7, "max_connections": 33, "max_header_bytes": 4096}
    )
    settings = uvicorn_config(object(), config)
    assert settings.http is connections.HeaderTimeoutH11Protocol
    assert (settings.timeout_keep_alive, settings.limit_concurrency, settings.h11_max_incomplete_event_size) == (
        7,
        33,
        4096,
    )
    protocol = object.__new__(connections.HeaderTimeoutH11Protocol)
    protocol.config = settings
    assert protocol._header_timeout_s() == 4.5
    # `segmentor-cli serve` / `uvicorn.run` build their own uvicorn config: the environment's value applies
    monkeypatch.setenv("SEGMENTOR_SERVER_HEADER_TIMEOUT_S", "3.5")
    connections._header_timeout_from_env.cache_clear()
    protocol.config = SimpleNamespace()
    try:
        assert protocol._header_timeout_s() == 3.5
    finally:
        connections._header_timeout_from_env.cache_clear()


def test_pipelined_requests_are_not_cut_off_by_the_header_deadline(server: tuple[str, int]) -> None:
    """Two requests in one packet: the second one's headers are complete when the first response ends, so the
    header deadline (2.5 s) must not run while the second request is answered (it takes 3 s)."""
    body = json.dumps({"image": b64_png(), "box": [1, 1, 20, 20]}).encode()
    second = (
        b"POST /v1/segment/box HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", server[1]), timeout=15) as sock:
        sock.sendall(b"GET /v1/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + second)
        received = b""
        with suppress(OSError):
            while received.count(b"HTTP/1.1 ") < 2 or b'"request_id"' not in received.split(b"HTTP/1.1 ")[-1]:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
    assert received.count(b"HTTP/1.1 200") == 2, received[-300:]
