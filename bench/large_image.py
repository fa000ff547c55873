"""Peak memory of one request on a 100-megapixel image, with and without tiling (BENCHMARKS.md, "100-megapixel").

Run: ``python -m bench.large_image`` (each configuration in its own process, so peak RSS values do not mix).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIDE = 10_000
BOXES = [(3000, 2000, 3400, 2300), (7000, 7000, 7100, 7080)]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(tiling: bool, checkpoint: str) -> dict[str, float | int | bool]:
    """One request in this process; returns peak RSS before and during it."""
    import numpy as np

    from perceptra_seg import Segmentor
    from tests.conftest import SMALL_SAM1_ARCHITECTURE

    config = {
        "model": {"name": "sam_v1", "checkpoint_path": checkpoint, "architecture": SMALL_SAM1_ARCHITECTURE},
        "runtime": {"device": "cpu"},
        "tiling": {"enabled": tiling},
    }
    seg = Segmentor(config)
    image = np.zeros((SIDE, SIDE, 3), np.uint8)
    image[2000:2300, 3000:3400] = 200
    before = _peak_mib()
    start = time.perf_counter()
    seg.segment(image, boxes=BOXES, output_formats=["rle"])
    return {
        "tiling": tiling,
        "before_mib": round(before),
        "peak_mib": round(_peak_mib()),
        "seconds": round(time.perf_counter() - start, 1),
        "encoder_calls": seg.encoder_calls,
    }


def main() -> None:
    if len(sys.argv) == 3:  # child: measure one configuration
        print(json.dumps(measure(sys.argv[1] == "on", sys.argv[2])))
        return
    from tests.conftest import SMALL_SAM1, build_reference_sam1, save_meta_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_meta_checkpoint(build_reference_sam1(SMALL_SAM1, seed=1), Path(tmp) / "small.pth", sam2=False)
        for mode in ("off", "on"):
            child = [sys.executable, "-m", "bench.large_image", mode, str(checkpoint)]
            print(subprocess.run(child, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
