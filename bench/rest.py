"""REST throughput and latency on loopback, and what the HTTP layer adds to the SDK call.

The service runs as a real uvicorn process (``python -m perceptra_seg.service.main``) bound to 127.0.0.1 on a free
port, configured by a YAML file. The client embeds the image once (``POST /v1/embed``), then ``N`` client threads
send box prompts by ``image_id`` to ``POST /v1/segment/box`` (RLE output), each run bounded by a request count and
a duration. The HTTP layer's cost is measured per request as the client's latency minus the server's own
``latency_ms`` (the SDK call and result shaping), so it is paired and immune to drift between measurements. The
same prompts also go through ``Segmentor.segment_from_box`` in this process first, on an embedded handle, for an
unpaired comparison with the in-process SDK call.
"""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import yaml

from .measure import Budget, summarize, time_calls
from .memory import process_memory_mb
from .models import RLE_ONLY, clean_environment
from .sdk import LoadedSegmentor

__all__ = ["Server", "run_clients", "sdk_single_prompt"]

Box = tuple[float, float, float, float]
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def sdk_single_prompt(loaded: LoadedSegmentor, handle: Any, boxes: Sequence[Box], budget: Budget) -> dict[str, Any]:
    """``segment_from_box`` on an embedded handle (what ``/v1/segment/box`` with an ``image_id`` calls)."""
    segmentor = loaded.segmentor
    formats = list(RLE_ONLY)
    samples = time_calls(
        lambda i: segmentor.segment_from_box(handle, boxes[i % len(boxes)], output_formats=formats), budget
    )
    return summarize(samples)


class Server:
    """The REST service in a child process on ``127.0.0.1:<free port>``; a context manager that stops it."""

    def __init__(self, model_sections: dict[str, Any], work_dir: Path, *, ready_timeout_s: float) -> None:
        self.port = free_port()
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = work_dir / "rest_config.yaml"
        self.log_path = work_dir / "rest_server.log"
        config = {
            **model_sections,
            "server": {"host": LOOPBACK, "port": self.port, "max_queue": 256, "request_timeout_s": 600.0},
            "logging": {"level": "WARNING", "format": "text"},
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self.ready_timeout_s = ready_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None

    def __enter__(self) -> Server:
        env = {**clean_environment(), "SEGMENTOR_CONFIG": str(self.config_path)}
        start = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "perceptra_seg.service.main"], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(base_url=self.base_url, timeout=5.0) as client:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"the server exited with {self.process.returncode}: {self.log_tail()}")
                try:
                    if client.get("/v1/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
        raise TimeoutError(f"the server was not ready within {self.ready_timeout_s:.0f} s: {self.log_tail()}")

    def memory(self) -> dict[str, float]:
        return process_memory_mb(self.process.pid) if self.process is not None else {}

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def embed_image(base_url: str, image: np.ndarray) -> dict[str, Any]:
    """``POST /v1/embed`` with the image as base64 PNG; returns the response plus the client-side latency."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError("could not encode the benchmark image as PNG")
    body = {"image": base64.b64encode(png.tobytes()).decode("ascii")}
    with httpx.Client(base_url=base_url, timeout=600.0) as client:
        start = time.perf_counter()
        response = client.post("/v1/embed", json=body)
        elapsed_ms = (time.perf_counter() - start) * 1000.0
    if response.status_code != 200:
        raise RuntimeError(f"/v1/embed answered {response.status_code}: {response.text[:500]}")
    return {**response.json(), "client_ms": round(elapsed_ms, 1)}


def run_clients(
    base_url: str, image_id: str, boxes: Sequence[Box], *, concurrency: int, max_requests: int, max_seconds: float
) -> dict[str, Any]:
    """``concurrency`` threads send ``/v1/segment/box`` requests until ``max_requests`` were sent or
    ``max_seconds`` passed; returns requests/s, client latency percentiles, the server's own latency, the paired
    HTTP overhead (client − server ``latency_ms`` per request; at more than one client it includes the wait for
    the inference slot), the response size and errors."""
    lock = threading.Lock()
    issued = 0
    latencies: list[float] = []
    server_ms: list[float] = []
    sizes: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + max_seconds

    def client_loop() -> None:
        nonlocal issued
        with httpx.Client(base_url=base_url, timeout=max_seconds + 60.0) as client:
            while True:
                with lock:
                    if issued >= max_requests or time.monotonic() >= deadline:
                        return
                    index = issued
                    issued += 1
                body = {"image_id": image_id, "box": list(boxes[index % len(boxes)]), "output_formats": list(RLE_ONLY)}
                start = time.perf_counter()
                try:
                    response = client.post("/v1/segment/box", json=body)
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                elapsed_ms = (time.perf_counter() - start) * 1000.0
                with lock:
                    if response.status_code == 200 and "rle" in (payload := response.json()):
                        latencies.append(elapsed_ms)
                        server_ms.append(float(payload["latency_ms"]))
                        sizes.append(float(len(response.content)))
                    else:
                        errors.append(f"HTTP {response.status_code}: {response.text[:200]}")

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - start
    row: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall_s, 2),
        "requests_per_s": round(len(latencies) / wall_s, 2) if wall_s > 0 else None,
    }
    if latencies:
        client = summarize(latencies)
        overhead = summarize([c - s for c, s in zip(latencies, server_ms, strict=True)])
        row.update(
            {
                "p50_ms": client["median_ms"],
                "p95_ms": client["p95_ms"],
                "server_p50_ms": summarize(server_ms)["median_ms"],
                "http_overhead_p50_ms": overhead["median_ms"],
                "http_overhead_p95_ms": overhead["p95_ms"],
                "response_bytes_p50": summarize(sizes)["median_ms"],
            }
        )
    if errors:
        row["first_error"] = errors[0]
    return row
