"""Issue #15's hostile review, F2–F5, re-run against a real server process (uvicorn on 127.0.0.1, the packaged demo
model) in bounded loops: no 5xx other than the deadlines' own 504, ``/v1/healthz`` fast under a 10⁶-prompt body,
and the inference slot free within 1 s of a 504 or a disconnect.

Timing bounds are generous for a loaded 2-core CI machine but far below what the old code took (F3: the slot was
held for the whole trickle; F4: healthz blocked ~12 s; F5: the slot stayed taken for up to 56 s). The measured
figures are printed (``pytest -s``).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.trickle import TrickleServer

from .helpers import KEY_A, MALFORMED_URLS, auth, b64_png, metric, server_process, wait_slot_free

HEALTHZ_LIMIT_S = 0.25  # the issue asks < 100 ms; measured max is printed, the bound leaves room for a loaded CI
SLOT_FREE_LIMIT_S = 1.0

SECTIONS: dict[str, Any] = {
    "model": {"name": "demo"},
    "runtime": {"device": "cpu", "batch_size": 2},  # cancellation latency = one decoder call of 2 prompts
    "input": {"allow_urls": True, "url_timeout_s": 10.0},
    "server": {
        "api_keys": [KEY_A],
        "public_metrics": True,
        "url_allowed_networks": ["127.0.0.1/32"],
        "url_fetch_timeout_s": 2.0,
        "max_concurrency": 1,
        "max_queue": 4,
        "request_timeout_s": 5.0,
    },
}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, str]]:
    """The base URL and the ``image_id`` of an embedded 256×256 image."""
    with server_process(SECTIONS, ready_timeout_s=180) as base:
        response = httpx.post(
            base + "/v1/embed", json={"image": b64_png(256, 256, seed=3)}, headers=auth(KEY_A), timeout=60
        )
        assert response.status_code == 200, response.text
        yield base, response.json()["image_id"]


class Statuses:
    """Every status seen, for the '0 × 5xx' check."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def add(self, what: str, response: httpx.Response) -> httpx.Response:
        self.seen.append((what, response.status_code))
        return response

    def server_errors(self, *, allowed_504: int) -> list[tuple[str, int]]:
        errors = [s for s in self.seen if s[1] >= 500]
        timeouts = [s for s in errors if s[1] == 504]
        assert len(timeouts) <= allowed_504, errors
        return [s for s in errors if s[1] != 504]


def test_f2_malformed_urls(server: tuple[str, str]) -> None:
    base, _ = server
    statuses = Statuses()
    with httpx.Client(base_url=base, headers=auth(KEY_A), timeout=30) as client:
        for url in MALFORMED_URLS:
            for path, extra in (
                ("/v1/embed", {}),
                ("/v1/segment/box", {"box": [1, 1, 9, 9]}),
                ("/v1/segment", {"boxes": [[1, 1, 9, 9]]}),
            ):
                response = statuses.add(url, client.post(path, json={"image": url, **extra}))
                assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"
    assert statuses.server_errors(allowed_504=0) == []
    print(f"F2: {len(statuses.seen)} malformed-URL requests, all 400")


def test_f3_slow_url_does_not_hold_the_slot(server: tuple[str, str]) -> None:
    base, image_id = server
    statuses = Statuses()
    outcome: dict[str, Any] = {}
    with TrickleServer(interval_s=0.5, total_s=30.0) as trickle:

        def slow() -> None:
            start = time.monotonic()
            response = httpx.post(
                base + "/v1/segment/box",
                json={"image": trickle.url, "box": [1, 1, 9, 9]},
                headers=auth(KEY_A),
                timeout=60,
            )
            outcome.update(response=response, seconds=time.monotonic() - start)

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)
        waits = []
        with httpx.Client(base_url=base, headers=auth(KEY_A), timeout=30) as client:
            while thread.is_alive() and len(waits) < 20:
                start = time.monotonic()
                response = statuses.add(
                    "other", client.post("/v1/segment/box", json={"image_id": image_id, "box": [10, 10, 90, 90]})
                )
                waits.append(time.monotonic() - start)
                assert response.status_code == 200, response.text
        thread.join(timeout=60)
    response = statuses.add("trickle", outcome["response"])
    assert response.status_code == 504 and response.json()["error"]["code"] == "url_timeout"
    assert outcome["seconds"] < 2.0 + 3.0
    assert waits and max(waits) < 5.0
    assert statuses.server_errors(allowed_504=1) == []
    print(
        f"F3: {len(waits)} other requests answered while the URL trickled (max {max(waits) * 1000:.0f} ms); "
        f"the trickling request got 504 after {outcome['seconds']:.2f} s"
    )


def _send_raw(port: int, head: bytes, body: bytes, result: dict[str, Any]) -> None:
    """Send ``head`` + ``body`` on a raw socket while reading the answer; record it and when it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        start = time.monotonic()
        sender = threading.Thread(target=lambda: _sendall_quietly(sock, head + body), daemon=True)
        sender.start()
        data = sock.recv(65536)
        result.update(head=data[:64], seconds=time.monotonic() - start)
        sender.join(timeout=30)


def _sendall_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server answered early and closed: that is the point
        sock.sendall(data)


def test_f4_healthz_stays_fast_under_a_million_prompts(server: tuple[str, str]) -> None:
    base, image_id = server
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps({"image_id": image_id, "prompts": [{"box": [1, 2, 3, 4]}] * 1_000_000}).encode()
    assert len(body) > 20_000_000
    statuses = Statuses()
    latencies: list[float] = []
    results: dict[str, dict[str, Any]] = {"wrong_key": {}, "right_key": {}}

    def big(name: str, key: str) -> None:
        head = (
            f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {key}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        _send_raw(port, head, body, results[name])

    senders = [
        threading.Thread(target=big, args=("wrong_key", "not-the-key-0000")),
        threading.Thread(target=big, args=("right_key", KEY_A)),
    ]
    with httpx.Client(base_url=base, timeout=10) as client:
        for sender in senders:
            sender.start()
        deadline = time.monotonic() + 60
        while any(s.is_alive() for s in senders) or len(latencies) < 50:
            assert time.monotonic() < deadline
            start = time.monotonic()
            statuses.add("healthz", client.get("/v1/healthz"))
            latencies.append(time.monotonic() - start)
            time.sleep(0.01)
    for sender in senders:
        sender.join()
    assert results["wrong_key"]["head"].startswith(b"HTTP/1.1 403"), results
    assert results["wrong_key"]["seconds"] < 2.0
    assert results["right_key"]["head"].startswith(b"HTTP/1.1 413"), results
    assert all(code == 200 for _, code in statuses.seen)
    assert max(latencies) < HEALTHZ_LIMIT_S, f"healthz max {max(latencies) * 1000:.0f} ms"
    print(
        f"F4: {len(latencies)} healthz probes during two 24 MB / 10^6-prompt bodies, max "
        f"{max(latencies) * 1000:.1f} ms; wrong key 403 after {results['wrong_key']['seconds'] * 1000:.0f} ms, "
        f"right key 413 after {results['right_key']['seconds']:.2f} s"
    )


def _heavy_request(image_id: str) -> dict[str, Any]:
    # 256 boxes x 3 masks x polygons: minutes of work for the demo model on 2 cores; the old code kept the slot
    # for all of it after answering 504.
    boxes = [[i % 200, (7 * i) % 200, i % 200 + 50, (7 * i) % 200 + 50] for i in range(256)]
    return {"image_id": image_id, "boxes": boxes, "multimask": True, "output_formats": ["polygons"]}


def test_f5_slot_freed_after_a_deadline(server: tuple[str, str]) -> None:
    base, image_id = server
    statuses = Statuses()
    start = time.monotonic()
    response = statuses.add(
        "heavy", httpx.post(base + "/v1/segment", json=_heavy_request(image_id), headers=auth(KEY_A), timeout=120)
    )
    answered = time.monotonic() - start
    freed = wait_slot_free(base, timeout_s=60)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout", response.text
    assert freed < SLOT_FREE_LIMIT_S, f"slot freed {freed:.2f} s after the 504"
    after = statuses.add(
        "after",
        httpx.post(
            base + "/v1/segment/box",
            json={"image_id": image_id, "box": [1, 1, 50, 50]},
            headers=auth(KEY_A),
            timeout=30,
        ),
    )
    assert after.status_code == 200
    assert statuses.server_errors(allowed_504=1) == []
    print(f"F5 deadline: 504 after {answered:.2f} s, slot free {freed * 1000:.0f} ms later")


def test_f5_slot_freed_after_a_disconnect(server: tuple[str, str]) -> None:
    base, image_id = server
    port = int(base.rsplit(":", 1)[1])
    body = json.dumps(_heavy_request(image_id)).encode()
    head = (
        f"POST /v1/segment HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY_A}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body)
        deadline = time.monotonic() + 30
        while metric(base, "segmentor_inflight_requests") < 1:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.02)
        time.sleep(1.0)  # well into the work
    freed = wait_slot_free(base, timeout_s=60)
    assert freed < SLOT_FREE_LIMIT_S, f"slot freed {freed:.2f} s after the disconnect"
    print(f"F5 disconnect: slot free {freed * 1000:.0f} ms after the client went away")
