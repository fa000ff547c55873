"""Encoder throughput with 1, 4 and 8 concurrent clients: Triton (serve-triton) vs our REST service vs the SDK.

Same run, same model, same images (distinct copies, so every request misses every cache):

* ``triton``: ``segmentor-cli serve-triton`` in its own process (the Triton environment's interpreter:
  ``$PERCEPTRA_TRITON_PYTHON``, else ``.venv-triton/bin/python``); the clients are threads of one ``Segmentor`` with
  ``runtime.backend: triton`` calling ``embed`` (preprocessing here, the encoder there, dynamic batching across
  the clients with ``--batch`` and ``--delay-ms``).
* ``rest``: the REST service in its own process (``server.max_concurrency`` 1, its default); the clients are threads
  sending ``POST /v1/embed`` with a PNG.
* ``sdk``: one in-process ``Segmentor`` (torch backend); the clients are threads calling ``embed``.

Each row: ``--images`` encodes spread over C client threads; images/s = images / wall time. Servers are started
once per model and stopped after. Run: ``python -m bench.triton --variants demo hiera_tiny --images 8``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from .auto_masks import cpu_flags
from .models import bench_image, clean_environment, cpu_threads, ensure_checkpoint, get_variant, variants_of
from .rest import Server, embed_image, free_port

__all__ = ["main", "run_clients"]

REPO = Path(__file__).resolve().parents[1]
MODELS = ("perceptra_encoder", "perceptra_decoder", "perceptra_info")


def run_clients(work: Callable[[np.ndarray], object], images: list[np.ndarray], clients: int) -> dict[str, Any]:
    """``clients`` threads share the ``images`` (each encoded once); returns images/s and the wall time."""
    queue = list(images)
    lock = threading.Lock()
    errors: list[str] = []

    def loop() -> None:
        while True:
            with lock:
                if not queue:
                    return
                image = queue.pop()
            try:
                work(image)
            except Exception as exc:  # reported in the row
                errors.append(repr(exc)[:200])

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "images": len(images),
        "wall_s": round(wall, 2),
        "images_per_s": round(len(images) / wall, 3),
        "errors": errors,
    }


class TritonProcess:
    """serve-triton for ``sections`` on free loopback ports; a context manager."""

    def __init__(self, sections: dict[str, Any], work_dir: Path, batch: int, delay_ms: float) -> None:
        python = os.environ.get("PERCEPTRA_TRITON_PYTHON") or str(REPO / ".venv-triton" / "bin" / "python")
        self.triton = {
            "host": "127.0.0.1",
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "max_batch_size": batch,
            "max_queue_delay_ms": delay_ms,
            # a request waits for the batches queued before it: 8 clients x seconds per CPU encode > the 30 s default
            "timeout_s": 900.0,
        }
        config = work_dir / "triton.yaml"
        config.write_text(yaml.safe_dump({**sections, "triton": self.triton}))
        self.log = work_dir / "triton.log"
        env = {**clean_environment(), "PYTHONPATH": str(REPO)}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [python, "-m", "perceptra_seg.cli", "serve-triton", "--config", str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def __enter__(self) -> TritonProcess:
        base = f"http://127.0.0.1:{self.triton['http_port']}/v2"
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve-triton exited: {self.log.read_text()[-2000:]}")
            try:
                if all(httpx.get(f"{base}/models/{m}/ready", timeout=2).status_code == 200 for m in MODELS):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("serve-triton not ready within 300 s")

    def __exit__(self, *exc_info: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)

    def counters(self) -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{self.triton['metrics_port']}/metrics", timeout=10).text
        out = {}
        for line in text.splitlines():
            for name in ("nv_inference_count", "nv_inference_exec_count"):
                if line.startswith(f'{name}{{model="perceptra_encoder"'):
                    out[name] = float(line.rsplit(" ", 1)[1])
        return out


def model_sections(key: str, work_dir: Path) -> dict[str, Any]:
    runtime = {"device": "cpu", "precision": "fp32", "num_threads": cpu_threads()}
    if key == "demo":
        return {"model": {"name": "demo"}, "runtime": runtime}
    variant = get_variant(key)
    checkpoint = ensure_checkpoint(variant, work_dir)
    return {"model": {"name": variant.model, "variant": key, "checkpoint_path": str(checkpoint)}, "runtime": runtime}


def measure_model(key: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from perceptra_seg import Segmentor

    work_dir: Path = args.work_dir / key
    work_dir.mkdir(parents=True, exist_ok=True)
    sections = model_sections(key, args.work_dir)
    no_cache = {"cache": {"enabled": True, "max_bytes": 64 * 1024 * 1024}}  # embed needs it; every image is new
    rows = []
    seed = 0

    def images() -> list[np.ndarray]:
        nonlocal seed
        seed += args.images
        return variants_of(bench_image(), seed)[-args.images :]  # fresh copies every row: no cache hits anywhere

    with TritonProcess(sections, work_dir, args.batch, args.delay_ms) as server:
        remote = Segmentor(
            {**sections, **no_cache, "runtime": {**sections["runtime"], "backend": "triton"}, "triton": server.triton}
        )
        remote.embed(bench_image())  # warm-up
        for clients in args.clients:
            before = server.counters()
            row = run_clients(remote.embed, images(), clients)
            after = server.counters()
            row["triton_executions"] = after["nv_inference_exec_count"] - before.get("nv_inference_exec_count", 0)
            row["triton_inferences"] = after["nv_inference_count"] - before.get("nv_inference_count", 0)
            rows.append({"model": key, "path": "triton", **row})
            print(json.dumps(rows[-1]), flush=True)
    with Server({**sections, **no_cache}, work_dir / "rest", ready_timeout_s=300) as rest:
        for clients in args.clients:
            row = run_clients(lambda image: embed_image(rest.base_url, image), images(), clients)
            rows.append({"model": key, "path": "rest", **row})
            print(json.dumps(rows[-1]), flush=True)
    local = Segmentor({**sections, **no_cache})
    local.embed(bench_image())
    for clients in args.clients:
        row = run_clients(local.embed, images(), clients)
        rows.append({"model": key, "path": "sdk", **row})
        print(json.dumps(rows[-1]), flush=True)
    local.close()
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | path | clients | images | images/s | Triton executions / inferences | errors |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for row in rows:
        batching = (
            f"{row['triton_executions']:.0f} / {row['triton_inferences']:.0f}" if "triton_executions" in row else ""
        )
        lines.append(
            f"| {row['model']} | {row['path']} | {row['clients']} | {row['images']} | {row['images_per_s']:.2f} "
            f"| {batching} | {len(row['errors'])} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["demo", "hiera_tiny"])
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--images", type=int, default=8, help="encodes per row")
    parser.add_argument("--batch", type=int, default=8, help="triton.max_batch_size")
    parser.add_argument("--delay-ms", type=float, default=5.0, help="triton.max_queue_delay_ms")
    parser.add_argument("--work-dir", type=Path, default=REPO / "bench" / "results" / "triton")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {cpu_flags()}; threads {cpu_threads()}; python {sys.version.split()[0]}", flush=True)
    rows = [row for key in args.variants for row in measure_model(key, args)]
    (args.work_dir / "triton.json").write_text(json.dumps(rows, indent=2))
    (args.work_dir / "triton.md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
