"""What Ray Serve adds per request: the same app and model behind ``serve --engine uvicorn`` and behind
``serve --engine ray --replicas 1`` (a local Ray instance), same requests, one after the other.

    python -m bench.serve_engines [--model demo] [--requests 40]

Prints, per engine, the start-up time (command start → ``/v1/readyz`` 200) and the median and 90th percentile
latency of ``GET /v1/healthz`` (no model work: the transport alone) and of ``POST /v1/segment/box`` by ``image_id``
(decoder only), each request on a new connection. Run it on a quiet machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import base64
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "perceptra_seg" / "assets" / "sample.png"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(engine: str, model: str, folder: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port = _free_port()
    command = [sys.executable, "-m", "perceptra_seg.cli", "serve", "--engine", engine, "--model", model]
    command += ["--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    if engine == "ray":
        command += ["--replicas", "1"]
    env = {**os.environ, "RAY_TMPDIR": str(folder), "SEGMENTOR_LOGGING_LEVEL": "WARNING"}
    env.pop("RAY_ADDRESS", None)
    log = (folder / f"{engine}.log").open("wb")
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{engine} exited; see {folder / (engine + '.log')}")
        try:
            if httpx.get(base + "/v1/readyz", timeout=5).status_code == 200:
                return process, base, time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.1)


def _times(send: Any, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        answer = send()
        samples.append((time.perf_counter() - start) * 1000)
        assert answer.status_code == 200, answer.text
    return samples


def _measure(base: str, image: str, count: int) -> tuple[list[float], list[float]]:
    # one client (its setup is not measured), no keep-alive: every request opens a new connection
    with httpx.Client(base_url=base, timeout=60, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        image_id = client.post("/v1/embed", json={"image": image}).json()["image_id"]
        body = {"image_id": image_id, "box": [40, 30, 200, 160]}
        health = _times(lambda: client.get("/v1/healthz"), count)
        segment = _times(lambda: client.post("/v1/segment/box", json=body), count)
    return health, segment


def _row(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"| {name} | {statistics.median(samples):.1f} ms | {p90:.1f} ms |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args()
    image = base64.b64encode(SAMPLE.read_bytes()).decode("ascii")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-ray-", dir="/tmp") as folder:
        for engine in ("uvicorn", "ray"):
            process, base, startup = _start(engine, args.model, Path(folder))
            try:
                health, segment = _measure(base, image, args.requests)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=120)
            print(f"\n{engine}: ready {startup:.1f} s after start\n\n| request | median | p90 |\n| --- | --- | --- |")
            print(_row("GET /v1/healthz", health))
            print(_row("POST /v1/segment/box (image_id)", segment))
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
