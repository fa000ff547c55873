"""``runtime.batch_size``: the most prompts per mask-decoder call. It bounds the decoder's peak memory and does not
change results."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from perceptra_seg import Segmentor


class RecordingBackend:
    """Wraps a real backend and records the number of prompts of every decoder call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.family = inner.family
        self.fingerprint = inner.fingerprint
        self.mask_size = inner.mask_size
        self.sizes: list[int] = []

    def encode(self, image: np.ndarray) -> Any:
        return self.inner.encode(image)

    def decode(self, embedding: Any, batch: Any, *, multimask: bool) -> Any:
        self.sizes.append(len(batch))
        return self.inner.decode(embedding, batch, multimask=multimask)

    def check_prompts(self) -> None:
        self.inner.check_prompts()

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def close(self) -> None:
        """The wrapped backend is shared between tests."""


def _prompts(width: int, height: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(7)
    prompts: list[dict[str, Any]] = []
    for _ in range(11):
        x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        prompts.append({"box": (x, y, x + int(rng.integers(10, 60)), y + int(rng.integers(10, 60)))})
    for _ in range(5):  # another structure: two clicks each
        prompts.append(
            {
                "points": [
                    (int(rng.integers(0, width)), int(rng.integers(0, height)), 1),
                    (int(rng.integers(0, width)), int(rng.integers(0, height)), 0),
                ]
            }
        )
    return prompts


def _segmentor(small_segmentor: Any, batch_size: int) -> tuple[Segmentor, RecordingBackend]:
    config = small_segmentor.config.model_dump()
    config["runtime"]["batch_size"] = batch_size
    backend = RecordingBackend(small_segmentor.backend)
    return Segmentor(config, backend=backend), backend


def test_decoder_calls_hold_at_most_batch_size_prompts(small_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    image = photos["coffee"]
    segmentor, backend = _segmentor(small_segmentor, 4)
    results = segmentor.segment(image, prompts=_prompts(image.shape[1], image.shape[0])[::2], output_formats=[])
    assert len(results) == 8
    assert sorted(backend.sizes) == [2, 2, 4]  # 6 boxes: 4+2, 2 click pairs: 2


def test_results_do_not_depend_on_batch_size(small_segmentor: Any, photos: dict[str, np.ndarray]) -> None:
    """Same prompts, decoder calls of 1 and of 4 prompts: the same masks and scores. Equal up to float rounding
    only: a batched matmul may sum in another order, so a logit within ~1e-6 of the threshold can flip a pixel."""
    image = np.ascontiguousarray(photos["chelsea"][:160, :200])
    prompts = _prompts(image.shape[1], image.shape[0])[::2]  # 6 boxes, 2 click pairs
    segmentor, backend = _segmentor(small_segmentor, 1)
    runs = {}
    for batch_size in (1, 4):
        segmentor.config.runtime.batch_size = batch_size
        backend.sizes.clear()
        runs[batch_size] = segmentor.segment(image, prompts=prompts, output_formats=["numpy"], multimask=True)
        assert max(backend.sizes) == min(batch_size, 6)
    reference = runs[1]
    for run in (runs[4],):
        assert [r.prompt_index for r in run] == [r.prompt_index for r in reference]
        for ours, theirs in zip(run, reference, strict=True):
            assert ours.score == pytest.approx(theirs.score, abs=1e-5)
            np.testing.assert_allclose(ours.low_res_logits, theirs.low_res_logits, atol=1e-3)
            differing = int(np.count_nonzero(ours.mask != theirs.mask))
            assert differing <= max(2, ours.area // 1000), differing


_PEAK_SCRIPT = """
import json, sys
import numpy as np
from perceptra_seg import Segmentor

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MiB

config, prompts = json.loads(sys.argv[1]), int(sys.argv[2])
segmentor = Segmentor(config)
handle = segmentor.embed(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
boxes = [[1, 1, 20 + i % 40, 30] for i in range(prompts)]
segmentor.segment(handle, boxes=boxes[:2], output_formats=[])  # first-call allocations
growth = {}
for batch_size in map(int, sys.argv[3:]):
    segmentor.config.runtime.batch_size = batch_size
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident set
    before = status("VmRSS")
    segmentor.segment(handle, boxes=boxes, output_formats=[])
    growth[batch_size] = status("VmHWM") - before
print(json.dumps(growth))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the peak resident set from /proc (Linux)")
def test_batch_size_bounds_the_peak_memory_of_many_prompts(small_sam1_config: dict[str, Any]) -> None:
    """Measured honestly, in a fresh process: the peak resident set (``VmHWM``, reset through
    ``/proc/self/clear_refs`` before each call) over the resident set before the call, for 16 prompts in decoder
    calls of 2 and in one call of 16. SAM's decoder repeats the image embedding for every prompt of a call and
    attends over it, so its peak grows with the batch. (``ru_maxrss`` would not do: Linux carries the parent's peak
    over ``exec``, so a child of a large pytest process starts with the parent's figure.)"""
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, json.dumps(small_sam1_config), "16", "2", "16"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    growth = {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}
    print(f"peak RSS growth for 16 prompts: batch_size 2 -> {growth[2]:.0f} MiB, 16 -> {growth[16]:.0f} MiB")
    assert growth[16] > 60, growth  # the measurement sees the decoder (4 MiB of repeated embedding per prompt, more)
    assert growth[2] < growth[16] / 3, growth
