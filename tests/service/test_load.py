"""A short, bounded load test on loopback: concurrent clients for a few seconds, no 5xx, memory flat."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx

from perceptra_seg.service import create_app

from .helpers import KEY_A, FakeBackend, auth, b64_png, build_config, free_port, live_server

CLIENTS = 8
WARM_S = 1.0
MEASURE_S = 3.0
MAX_REQUESTS_PER_CLIENT = 2_000


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_concurrent_clients_get_no_server_errors_and_memory_stays_flat() -> None:
    config = build_config(
        server={"port": free_port(), "api_keys": [KEY_A], "max_concurrency": 2, "max_queue": 4 * CLIENTS}
    )
    backend = FakeBackend()
    backend.decode_delay_s = 0.002
    images = [b64_png(seed=i) for i in range(4)]
    statuses: dict[int, int] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    with live_server(create_app(config, backend=backend), config) as base:
        with httpx.Client(base_url=base, headers=auth(KEY_A)) as setup:
            image_id = setup.post("/v1/embed", json={"image": images[0]}).json()["image_id"]
        stop = threading.Event()

        def client_loop(index: int) -> None:
            with httpx.Client(base_url=base, headers=auth(KEY_A), timeout=10.0) as client:
                for n in range(MAX_REQUESTS_PER_CLIENT):
                    if stop.is_set():
                        return
                    kind = (index + n) % 4
                    start = time.perf_counter()
                    if kind == 0:
                        response = client.get("/v1/healthz")
                    elif kind == 1:
                        response = client.post(
                            "/v1/segment", json={"image_id": image_id, "boxes": [[2, 2, 30, 30], [5, 5, 40, 40]]}
                        )
                    else:
                        response = client.post("/v1/segment/box", json={"image": images[n % 4], "box": [2, 2, 30, 30]})
                    elapsed = time.perf_counter() - start
                    with lock:
                        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                        latencies.append(elapsed)

        threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        time.sleep(WARM_S)
        rss_start = _rss_bytes()
        with lock:
            warm_requests = len(latencies)
        time.sleep(MEASURE_S)
        rss_end = _rss_bytes()
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads)

    total = sum(statuses.values())
    assert set(statuses) == {200}, statuses
    assert total - warm_requests >= 30  # the measurement window really carried load
    growth = rss_end - rss_start
    assert growth < 24 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB under load"
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(
        f"load: {total} requests, {(total - warm_requests) / MEASURE_S:.0f} req/s in the window, "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, RSS growth {growth / 2**20:.2f} MiB"
    )
