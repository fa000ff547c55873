"""Encoder batching across calls (``runtime.max_batch_size``): throughput of concurrent ``embed`` clients with
batching off and on, same run.

One model is loaded once; two ``Segmentor`` objects share it: ``off`` (``max_batch_size`` 1: every call encodes
alone, concurrent calls run their encoders at the same time) and ``on`` (``max_batch_size`` = clients). Each round
runs ``--clients`` threads that each embed ``--images`` different images (cache-missing copies of the bench
photograph) through one of them, off and on alternating round by round (A, B, A, B, ...), so a shared machine's
load hits both alike. Reported: images/s per round, the median of each mode, the on ÷ off ratio, the mean batch
size the batcher formed and the 1-minute load average.

Run: ``python -m bench.encoder_batching --variant hiera_tiny --clients 4 --rounds 3``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .models import (
    bench_image,
    cpu_threads,
    ensure_checkpoint,
    get_variant,
    reference_packages,
    segmentor_config,
    variants_of,
)

__all__ = ["main"]


def _round(segmentor: Any, clients: int, images: list[Any]) -> float:
    """Wall seconds for ``clients`` threads to embed their share of ``images`` (released together)."""
    barrier = threading.Barrier(clients + 1)
    shares = [images[i::clients] for i in range(clients)]

    def client(share: list[Any]) -> None:
        barrier.wait()
        for image in share:
            segmentor.embed(image)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, share) for share in shares]
        barrier.wait()
        start = time.perf_counter()
        for future in futures:
            future.result()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="hiera_tiny")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--images", type=int, default=8, help="images per round (split over the clients)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode, alternating off / on")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="runtime.max_batch_wait_ms of the 'on' mode")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/perceptra-fast-path"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    reference_packages()  # before transformers (torchvision stand-in)
    import torch

    from perceptra_seg import Segmentor
    from perceptra_seg.config import SegmentorConfig

    variant = get_variant(args.variant)
    checkpoint = ensure_checkpoint(variant, args.work_dir)
    sections = segmentor_config(variant, checkpoint, "torch-fp32", work_dir=args.work_dir)
    sections["runtime"]["precision"] = args.precision
    sections["cache"]["max_bytes"] = 1 << 30
    off = Segmentor(SegmentorConfig.load(None, **sections))
    sections["runtime"].update(max_batch_size=args.clients, max_batch_wait_ms=args.wait_ms)
    on = Segmentor(SegmentorConfig.load(None, **sections), backend=off.backend)
    modes = {"off": off, "on": on}
    copies = variants_of(bench_image(), args.images * (2 * args.rounds + 1))
    off.embed(copies[0])  # warm-up
    rates: dict[str, list[float]] = {"off": [], "on": []}
    loads = [round(os.getloadavg()[0], 2)]
    used = 1
    for index in range(args.rounds):
        for mode, segmentor in modes.items():
            batch = copies[used : used + args.images]
            used += args.images
            seconds = _round(segmentor, args.clients, batch)
            rates[mode].append(args.images / seconds)
            loads.append(round(os.getloadavg()[0], 2))
            print(f"round {index + 1} {mode}: {rates[mode][-1]:.3f} img/s load {loads[-1]}", file=sys.stderr)
    batcher = on._batcher
    result: dict[str, Any] = {
        "variant": args.variant,
        "precision": off.backend.info()["precision"],
        "clients": args.clients,
        "images_per_round": args.images,
        "threads": cpu_threads(),
        "torch": torch.__version__,
        "images_per_s": {mode: [round(r, 4) for r in values] for mode, values in rates.items()},
        "median_images_per_s": {mode: round(statistics.median(values), 4) for mode, values in rates.items()},
        "on_over_off": round(statistics.median(rates["on"]) / statistics.median(rates["off"]), 3),
        "mean_batch_size": round(batcher.images / batcher.runs, 2) if batcher and batcher.runs else None,
        "load_1min": loads,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
