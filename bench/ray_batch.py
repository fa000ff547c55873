"""Batch throughput: ``--engine local`` against ``--engine ray`` with 1 and 2 model actors, in one run.

``python -m bench.ray_batch [--images 64] [--size 256] [--images-per-shard 2] [--model demo] [--threads 1]``

Every row segments the same generated scenes (one box prompt per object, from a COCO file) with the same model:

* ``local`` — :func:`perceptra_seg.cli.batch.segment_job` + the COCO records in this process (what ``--engine
  local`` does per image, without rewriting the results file), once with ``--threads`` intra-op threads and once
  with the runtime's default (every core);
* ``ray, N worker(s)`` — :func:`perceptra_seg.distributed.run_batch` on a private Ray instance started by this
  process on this machine (``ray.init``; its start-up is reported apart), each actor with ``--threads`` threads.

Reported per row: wall time (model load / actor start included), steady-state images/s (from the first image done
to the last: what a long job sees) and seconds per image; for Ray also the overhead per image against the local
row with the same threads (Ray's seconds per image × workers − local seconds per image: task scheduling, the object
store transfer of the decoded image, the shard write). The machine's CPU flags and load average (start and end)
are printed with the table, which is Markdown ready for BENCHMARKS.md. Ray's workers run at niceness 0 here
(``RAY_worker_niceness=0``; Ray's default, 15, would let any other load on the machine starve them), as the local
rows do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .auto_masks import cpu_flags


def make_dataset(folder: Path, count: int, size: int) -> Path:
    """``count`` demo scenes of ``size``² pixels as PNG files in ``folder`` plus their COCO box annotations."""
    from perceptra_seg.demo.scenes import generate_scenes

    coco: dict[str, Any] = {"images": [], "annotations": []}
    for index, scene in enumerate(generate_scenes(77, count, [(size, size)])):
        name = f"img{index:04d}.png"
        Image.fromarray(scene.image).save(folder / name)
        coco["images"].append({"id": index + 1, "file_name": name})
        for obj in scene.objects:
            ys, xs = np.nonzero(obj.mask)
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": index + 1, "bbox": box})
    path = folder.parent / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def _steady(times: list[float]) -> float:
    """Images/s between the first and the last finished image (``times``: completion time of each image)."""
    if len(times) < 2 or times[-1] <= times[0]:
        return float("nan")
    first = times.count(times[0])  # images that finished with the first one (a whole block arrives at once)
    return (len(times) - first) / (times[-1] - times[0])


def run_local(jobs: list[Any], settings: Any) -> dict[str, Any]:
    from perceptra_seg import Segmentor
    from perceptra_seg.cli.batch import segment_job
    from perceptra_seg.cli.batch_output import coco_records

    start = time.perf_counter()
    with Segmentor(settings) as seg:
        loaded = time.perf_counter()
        done: list[float] = []
        for job in jobs:
            results = segment_job(seg, job.path, job.prompts, settings.input.max_prompts)
            coco_records(job.image_id, results, job.categories, job.annotation_ids)
            done.append(time.perf_counter())
    steady = _steady(done)  # from the first image on: its warm-up is left out, as Ray's actor start-up is
    return {"wall_s": done[-1] - start, "load_s": loaded - start, "steady_img_s": steady, "s_per_image": 1 / steady}


def run_ray(jobs: list[Any], settings: Any, workers: int, out: Path, per_shard: int) -> dict[str, Any]:
    from perceptra_seg.distributed import run_batch

    done: list[float] = []
    start = time.perf_counter()
    summary = run_batch(
        jobs,
        settings,
        workers=workers,
        out_dir=out,
        images_per_shard=per_shard,
        progress=lambda _done, _total: done.append(time.perf_counter()),
    )
    assert summary.processed == len(jobs) and not summary.failed, summary
    steady = _steady(done)
    return {"wall_s": done[-1] - start, "steady_img_s": steady, "s_per_image": 1.0 / steady}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--images-per-shard", type=int, default=2)
    parser.add_argument("--model", default="demo", help="model name (random-weight checkpoints: see bench.models)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per model (local and each actor)")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    args = parser.parse_args()

    import ray

    from perceptra_seg.config import SegmentorConfig
    from perceptra_seg.distributed import plan_batch

    # Ray runs its workers at niceness 15 unless told otherwise: on a busy machine they would lose the cores to every
    # other process while the local rows did not. Every row runs at this process's niceness.
    os.environ["RAY_worker_niceness"] = "0"  # noqa: SIM112 (Ray reads this exact spelling)
    load_start = os.getloadavg()
    print(f"machine: {cpu_flags()}; load average {load_start}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="ray_batch_bench_"))
    rows: list[dict[str, Any]] = []
    try:
        (work / "images").mkdir()
        coco = make_dataset(work / "images", args.images, args.size)
        jobs, _, _ = plan_batch(str(work / "images"), coco)
        base = {"model": {"name": args.model}, "runtime": {"device": "cpu"}}
        threaded = SegmentorConfig.resolve({**base, "runtime": {"device": "cpu", "num_threads": args.threads}})
        default = SegmentorConfig.resolve(base)
        rows.append({"row": f"local, {args.threads} thread(s)", **run_local(jobs, threaded)})
        rows.append({"row": "local, default threads", **run_local(jobs, default)})
        start = time.perf_counter()
        # one logical CPU more than the cores: 2 single-thread actors on 2 cores still leave room for decode tasks
        cpus = (os.cpu_count() or 1) + 1
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - start
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            for workers in (1, 2):
                row = run_ray(jobs, threaded, workers, work / f"shards{workers}", args.images_per_shard)
                rows.append({"row": f"ray, {workers} worker(s) × {args.threads} thread(s)", **row})
        finally:
            ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local = rows[0]["s_per_image"]
    for row in rows[2:]:
        workers = int(row["row"].split(", ")[1].split(" ")[0])
        row["overhead_ms_per_image"] = 1000.0 * (row["s_per_image"] * workers - local)
    load_end = os.getloadavg()
    print(f"ray.init (private instance on this machine): {ray_start:.1f} s; load average at the end {load_end}")
    print(f"{args.images} images {args.size}×{args.size}, model {args.model}, {args.images_per_shard} per shard\n")
    print("| engine | wall s | steady images/s | ms per image | Ray overhead ms per image |")
    print("|---|---|---|---|---|")
    for row in rows:
        overhead = f"{row['overhead_ms_per_image']:.1f}" if "overhead_ms_per_image" in row else "–"
        print(
            f"| {row['row']} | {row['wall_s']:.1f} | {row['steady_img_s']:.2f} | {1000 * row['s_per_image']:.1f} "
            f"| {overhead} |"
        )
    if args.out is not None:
        document = {"rows": rows, "load_average": {"start": load_start, "end": load_end}, "ray_init_s": ray_start}
        args.out.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
