"""Automatic mask generation ("segment everything"): ours vs Meta's generators on one 1500×1000 photo (issue #17).

``points_per_side=32`` (1024 grid points, 3 masks each), SAM 1 vit_b and SAM 2.1 hiera_tiny with random weights saved
in Meta's format (:mod:`bench.models`); each side runs in its own process so its peak RSS is its own. Times are one
``generate`` call after the model is loaded (encoder included), on the CPU, with every core.

Filters: random-weight masks are faint and cover the whole image, and Meta's default thresholds keep none of them.
Two settings are measured:

* ``keep-all``: no predicted-IoU filter (every mask is upsampled and scored on both sides, the worst case for our
  windowed upsampling because every window is the whole image), stability offset 0.05 and threshold 0.3;
* ``defaults``: each family's reference defaults (Meta still upsamples every mask before filtering; we upsample
  only masks above ``pred_iou_thresh``, so this is the case where a model's confidence decides most masks early).

Sides: ``meta``, ``ours`` (torch fp32, the parity setting) and ``ours-bf16`` (torch bf16 autocast, what
``precision: auto`` picks for vit_b and hiera_tiny on a CPU with native bf16; its masks differ slightly from fp32).

Run: ``python -m bench.auto_masks [--variants vit_b hiera_tiny] [--settings keep-all defaults]
[--sides meta ours ours-bf16] [--work-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .models import cpu_threads, get_variant

SIZE = (1000, 1500)  # (H, W)
POINTS_PER_SIDE = 32
SETTINGS: dict[str, dict[str, Any]] = {
    "keep-all": {"pred_iou_thresh": 0.0, "stability_score_offset": 0.05, "stability_score_thresh": 0.3},
    "defaults": {},
}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def photo() -> np.ndarray:
    """scikit-image's ``astronaut`` photograph resized to 1500×1000: RGB uint8 ``[1000, 1500, 3]``."""
    import cv2
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.astronaut(), (SIZE[1], SIZE[0]), interpolation=cv2.INTER_CUBIC))


def measure(side: str, variant_key: str, checkpoint: str, setting: str, points_per_side: int) -> dict[str, Any]:
    """One ``generate`` call in this process: seconds, masks kept, peak RSS before and during it."""
    variant = get_variant(variant_key)
    options = {"points_per_side": points_per_side, **SETTINGS[setting]}
    image = photo()
    if side == "meta":
        from .models import load_reference_model, reference_packages

        segment_anything, _, _ = reference_packages()
        model = load_reference_model(variant, Path(checkpoint), "cpu")
        if variant.family == "sam1":
            generator: Any = segment_anything.SamAutomaticMaskGenerator(model, output_mode="coco_rle", **options)
        else:
            import sam2.automatic_mask_generator as sam2_generator

            generator = sam2_generator.SAM2AutomaticMaskGenerator(model, output_mode="coco_rle", **options)
        run = lambda: generator.generate(image)  # noqa: E731
    else:
        from perceptra_seg import Segmentor

        from .models import segmentor_config

        runtime = "torch-bf16" if side == "ours-bf16" else "torch-fp32"
        config = segmentor_config(variant, Path(checkpoint), runtime, work_dir=Path(checkpoint).parent)
        segmentor = Segmentor(config)
        run = lambda: segmentor.generate(image, output_formats=["rle"], **options)  # noqa: E731
    before = _peak_mib()
    start = time.perf_counter()
    masks = run()
    return {
        "side": side,
        "variant": variant_key,
        "setting": setting,
        "points_per_side": points_per_side,
        "seconds": round(time.perf_counter() - start, 1),
        "masks": len(masks),
        "rss_before_mib": round(before),
        "rss_peak_mib": round(_peak_mib()),
    }


def cpu_flags() -> str:
    """Model name and the SIMD features that decide CPU speed (from ``/proc/cpuinfo``)."""
    from .report import machine_info

    info = machine_info()
    return json.dumps(
        {key: info.get(key) for key in ("cpu_model", "cpu_features", "logical_cpus", "usable_cpus", "ram_gib")}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", default=["vit_b", "hiera_tiny"])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--sides", nargs="+", default=["meta", "ours"], choices=["meta", "ours", "ours-bf16"])
    parser.add_argument("--points-per-side", type=int, default=POINTS_PER_SIDE)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument(
        "--child", nargs=4, metavar=("SIDE", "VARIANT", "CHECKPOINT", "SETTING"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.points_per_side)))
        return
    from .models import ensure_checkpoint

    print(f"machine: {cpu_flags()}; threads {cpu_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or Path(tmp)
        for key in args.variants:
            checkpoint = ensure_checkpoint(get_variant(key), work_dir)
            for setting in args.settings:
                rows = {}
                for side in args.sides:
                    child = [sys.executable, "-m", "bench.auto_masks", "--points-per-side", str(args.points_per_side)]
                    child += ["--child", side, key, str(checkpoint), setting]
                    done = subprocess.run(child, check=True, capture_output=True, text=True)
                    rows[side] = json.loads(done.stdout.strip().splitlines()[-1])
                    print(json.dumps(rows[side]), flush=True)
                for ours in ("ours", "ours-bf16"):
                    if "meta" in rows and ours in rows:
                        ratio = rows[ours]["seconds"] / rows["meta"]["seconds"]
                        print(f"{key} {setting}: {ours} / Meta time = {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
