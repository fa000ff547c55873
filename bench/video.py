"""Video tracking speed and memory: ours vs Meta's ``SAM2VideoPredictor`` on the same checkpoint and clip.

Each (side, resolution) runs in its own process: a synthetic clip of moving shapes (``--frames`` frames at each
``--sizes`` WxH, written as a JPEG folder that both sides read), one object prompted with a box on frame 0, then one
forward propagation. Reported: frames per second of the propagation (prompt excluded), the process's RSS after
the prompt and every ``--sample`` frames, and its peak RSS. Meta's predictor loads and preprocesses every frame of
the folder at ``init_state`` (its memory grows with the clip length); ours decodes each frame when it reaches it.

Each row also states the process's CPU seconds over the propagation (``cpu_seconds``, all threads) and the
machine's 1-minute load average before and after it (``load_average``): on a shared machine the wall-time ratio
between the sides is only as good as the load was steady. ``--rounds N`` repeats each size N times, alternating
which side runs first.

Run: ``python -m bench.video --frames 30`` (hiera_tiny, 512x512 and 1024x576, CPU, all cores).
``--input-size 256`` runs the same checkpoint at a 256-pixel model input on both sides (hiera_tiny's modules, 16×
smaller feature maps), fast enough to follow RSS over hundreds of frames.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .memory import current_rss_mb, peak_rss_mb
from .models import clean_environment, cpu_threads, get_variant

SIZES = ("512x512", "1024x576")


def write_clip(folder: Path, frames: int, width: int, height: int) -> tuple[float, float, float, float]:
    """``frames`` JPEGs (``00000.jpg``…) of a square drifting right over a noisy background; returns the square's
    box on frame 0 ``(x1, y1, x2, y2)``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    side = min(width, height) // 4
    for t in range(frames):
        frame = rng.integers(20, 60, (height, width, 3), dtype=np.uint8)
        x = (width // 8 + 3 * t) % (width - side)
        frame[height // 3 : height // 3 + side, x : x + side] = (210, 70, 60)
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=90)
    x0 = float(width // 8)
    return (x0, float(height // 3), x0 + side, float(height // 3 + side))


def _meta_overrides(input_size: int) -> list[str]:
    if input_size == 1024:
        return []
    grid = input_size // 16
    return [
        f"++model.image_size={input_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]


def _our_architecture(input_size: int) -> dict[str, Any] | None:
    if input_size == 1024:
        return None
    grid = input_size // 16
    return {
        "image_size": input_size,
        "memory_attention_rope_feat_sizes": [grid, grid],
        "vision_config": {"backbone_feature_sizes": [[grid * 4, grid * 4], [grid * 2, grid * 2], [grid, grid]]},
        "prompt_encoder_config": {"image_size": input_size},
    }


def _timed(start: float, cpu_start: float, frames: int, rss: dict[int, float | None]) -> dict[str, Any]:
    """Wall seconds and this process's CPU seconds (all threads) since ``start`` / ``cpu_start``. On a shared
    machine the CPU seconds depend less on the other processes' load than the wall time does."""
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"seconds": wall, "cpu_seconds": round(cpu, 2), "frames": frames, "rss_mb": rss}


def _meta(checkpoint: str, folder: Path, box: tuple[float, ...], sample: int, input_size: int) -> dict[str, Any]:
    import torch

    from .models import reference_packages

    _, sam2_build, _ = reference_packages()
    predictor = sam2_build.build_sam2_video_predictor(
        get_variant("hiera_tiny").meta_name, checkpoint, device="cpu", hydra_overrides_extra=_meta_overrides(input_size)
    )
    inner = predictor.memory_attention.forward

    def float_memory(*args: Any, **kwargs: Any) -> Any:  # Meta expects CUDA autocast; on a CPU cast bf16 memory
        kwargs["memory"] = kwargs["memory"].float()
        return inner(*args, **kwargs)

    predictor.memory_attention.forward = float_memory
    rss: dict[int, float | None] = {}
    with torch.inference_mode():
        state = predictor.init_state(str(folder))
        predictor.add_new_points_or_box(state, 0, 1, box=np.array(box, dtype=np.float32))
        rss[0] = current_rss_mb()
        start, cpu_start = time.perf_counter(), time.process_time()
        count = 0
        for frame, _, masks in predictor.propagate_in_video(state):
            (masks[0, 0] > 0).cpu().numpy()
            count += 1
            if frame % sample == 0:
                rss[frame] = current_rss_mb()
    return _timed(start, cpu_start, count, rss)


def _ours(checkpoint: str, folder: Path, box: tuple[float, ...], sample: int, input_size: int) -> dict[str, Any]:
    from perceptra_seg import Segmentor

    architecture = _our_architecture(input_size)
    config = {
        "model": {
            "name": "sam_v2",
            "variant": "hiera_tiny",
            "checkpoint_path": checkpoint,
            "architecture": architecture,
        },
        "runtime": {"device": "cpu", "precision": "fp32", "num_threads": cpu_threads()},
    }
    rss: dict[int, float | None] = {}
    with Segmentor(config) as seg, seg.open_video(folder) as session:
        session.add_prompt({"frame": 0, "obj_id": 1, "box": box}, output_formats=["numpy"])
        rss[0] = current_rss_mb()
        start, cpu_start = time.perf_counter(), time.process_time()
        count = 0
        for frame, _ in session.propagate(output_formats=["numpy"]):
            count += 1
            if frame % sample == 0:
                rss[frame] = current_rss_mb()
    return _timed(start, cpu_start, count, rss)


def measure(side: str, checkpoint: str, size: str, frames: int, sample: int, input_size: int) -> dict[str, Any]:
    """One row, in this process: write the clip, track, time and sample memory."""
    if side == "meta":
        from .models import reference_packages

        reference_packages()  # before transformers is imported
    import torch

    torch.set_num_threads(cpu_threads())
    width, height = (int(v) for v in size.split("x"))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        box = write_clip(Path(tmp) / "clip", frames, width, height)
        result = (_meta if side == "meta" else _ours)(checkpoint, Path(tmp) / "clip", box, sample, input_size)
    fps = result["frames"] / result["seconds"]
    row = {"side": side, "size": size, "input_size": input_size, "fps": round(fps, 3)}
    row["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # 1-min, before and after the row
    return {**row, **result, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES))
    parser.add_argument("--sides", nargs="+", default=["meta", "ours"], choices=["meta", "ours"])
    parser.add_argument("--sample", type=int, default=5, help="record RSS every this many frames")
    parser.add_argument("--input-size", type=int, default=1024, help="model input side (1024 = as released)")
    parser.add_argument("--rounds", type=int, default=1, help="rows per side and size, in alternating order")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--child", nargs=3, metavar=("SIDE", "CHECKPOINT", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.frames, args.sample, args.input_size)))
        return
    from .auto_masks import cpu_flags
    from .models import ensure_checkpoint

    print(f"machine: {cpu_flags()}; threads {cpu_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = ensure_checkpoint(get_variant("hiera_tiny"), args.work_dir or Path(tmp))
        for size in args.sizes:
            for round_index in range(args.rounds):
                rows = {}
                # alternate the order (A B, B A, ...) so a load that drifts during the run favours neither side
                for side in args.sides if round_index % 2 == 0 else args.sides[::-1]:
                    child = [sys.executable, "-m", "bench.video", "--frames", str(args.frames)]
                    child += ["--sample", str(args.sample), "--input-size", str(args.input_size)]
                    child += ["--child", side, str(checkpoint), size]
                    done = subprocess.run(child, check=True, capture_output=True, text=True, env=clean_environment())
                    rows[side] = json.loads(done.stdout.strip().splitlines()[-1])
                    print(json.dumps(rows[side]), flush=True)
                if len(rows) == 2:
                    ratio = rows["ours"]["fps"] / rows["meta"]["fps"]
                    cpu = rows["meta"]["cpu_seconds"] / rows["ours"]["cpu_seconds"]
                    line = f"{size} round {round_index + 1}: ours / Meta fps = {ratio:.2f}"
                    print(f"{line}, Meta / ours CPU seconds = {cpu:.2f}", flush=True)


if __name__ == "__main__":
    main()
