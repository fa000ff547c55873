"""Batch throughput: ``--engine local`` against ``--engine ray`` with 1 and 2 model actors, in one run.

``python -m bench.ray_batch [--images 64] [--size 256] [--images-per-shard 2] [--model demo] [--threads 1]``

Every row segments the same generated scenes (one box prompt per object, from a COCO file) with the same model:

* ``local`` — :func:`perceptra_seg.cli.batch.segment_job` + the COCO records in this process (what ``--engine
  local`` does per image, without rewriting the results file), once with ``--threads`` intra-op threads and once
  with the runtime's default (every core);
* ``ray, N worker(s)`` — :func:`perceptra_seg.distributed.run_batch` on a private Ray instance started by this
  process on this machine (``ray.init``; its start-up is reported apart), each actor with ``--threads`` threads.

Reported per row: wall time (model load / actor start included), steady-state images/s (from the first image done
to the last: what a long job sees) and milliseconds per image; the local rows split that into decoding and the model
(segmentation + COCO records). On a busy machine wall times mostly say how the cores were shared (a Ray run has
more processes to be scheduled than one local process), so the overhead is measured in CPU time, which load does
not change much: CPU milliseconds per image over the steady part of each row (local: this process; Ray: this
process and every process of the Ray instance — GCS, raylet, decode tasks, model actors), and the Ray overhead per
image = Ray's CPU ms per image − the local row's at the same threads (task dispatch and bookkeeping, the object
store transfer of the decoded image, the shard write).
The machine's CPU flags and load average (start and end) are printed with the table, which is Markdown ready for
BENCHMARKS.md. Ray's workers run at niceness 0 here (``RAY_worker_niceness=0``; Ray's default, 15, would let any
other load on the machine starve them), as the local rows do.
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
    from perceptra_seg.inputs import InputPolicy

    policy = InputPolicy.from_config(settings.input)
    start = time.perf_counter()
    with Segmentor(settings) as seg:
        loaded = time.perf_counter()
        done: list[float] = []
        decode_s = model_s = 0.0
        cpu_start = 0.0
        for index, job in enumerate(jobs):
            if index == 1:
                cpu_start = time.process_time()
            began = time.perf_counter()
            image = policy.load(job.path)  # what segment(path) does first
            decoded = time.perf_counter()
            results = segment_job(seg, image, job.prompts, settings.input.max_prompts)
            coco_records(job.image_id, results, job.categories, job.annotation_ids)
            done.append(time.perf_counter())
            if index:  # the first image's warm-up is left out, as Ray's actor start-up is
                decode_s += decoded - began
                model_s += done[-1] - decoded
        cpu_ms = 1000 * (time.process_time() - cpu_start) / (len(jobs) - 1)
    steady = _steady(done)
    return {
        "cpu_ms": cpu_ms,
        "wall_s": done[-1] - start,
        "load_s": loaded - start,
        "steady_img_s": steady,
        "s_per_image": 1 / steady,
        "decode_ms": 1000 * decode_s / (len(jobs) - 1),
        "model_ms": 1000 * model_s / (len(jobs) - 1),
    }


def run_ray(jobs: list[Any], settings: Any, workers: int, out: Path, per_shard: int) -> dict[str, Any]:
    from perceptra_seg.distributed import run_batch

    done: list[float] = []
    cpu: list[tuple[int, dict[int, float]]] = []

    def progress(count: int, total: int) -> None:
        done.append(time.perf_counter())
        if len(done) == 1 or count == total:  # CPU of every Ray process, from the first image done to the last
            cpu.append((count, _ray_cpu_seconds()))

    start = time.perf_counter()
    summary = run_batch(jobs, settings, workers=workers, out_dir=out, images_per_shard=per_shard, progress=progress)
    assert summary.processed == len(jobs) and not summary.failed, summary
    steady = _steady(done)
    (first_count, first), (last_count, last) = cpu[0], cpu[-1]
    used = sum(seconds - first.get(pid, 0.0) for pid, seconds in last.items())
    return {
        "wall_s": done[-1] - start,
        "steady_img_s": steady,
        "s_per_image": 1.0 / steady,
        "cpu_ms": 1000 * used / (last_count - first_count),
    }


def _ray_cpu_seconds() -> dict[int, float]:
    """User + system CPU seconds of this process and all its descendants (the private Ray instance: GCS, raylet,
    decode workers, model actors), by pid."""
    import psutil

    me = psutil.Process()
    seconds = {}
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            seconds[proc.pid] = times.user + times.system
        except psutil.Error:
            continue
    return seconds


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
    local_cpu = rows[0]["cpu_ms"]
    for row in rows[2:]:
        row["overhead_ms_per_image"] = row["cpu_ms"] - local_cpu
    load_end = os.getloadavg()
    print(f"ray.init (private instance on this machine): {ray_start:.1f} s; load average at the end {load_end}")
    print(f"{args.images} images {args.size}×{args.size}, model {args.model}, {args.images_per_shard} per shard\n")
    print(
        "| engine | wall s | steady images/s | wall ms per image | decode / model ms | CPU ms per image "
        "| Ray CPU overhead ms per image |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        overhead = f"{row['overhead_ms_per_image']:.1f}" if "overhead_ms_per_image" in row else "–"
        split = f"{row['decode_ms']:.1f} / {row['model_ms']:.1f}" if "model_ms" in row else "–"
        print(
            f"| {row['row']} | {row['wall_s']:.1f} | {row['steady_img_s']:.2f} | {1000 * row['s_per_image']:.1f} "
            f"| {split} | {row['cpu_ms']:.1f} | {overhead} |"
        )
    if args.out is not None:
        document = {"rows": rows, "load_average": {"start": load_start, "end": load_end}, "ray_init_s": ray_start}
        args.out.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
