"""Encoder time and one-prompt latency of the models added after SAM 1/2, ours vs the authors' reference, one run.

    PYTHONPATH=. python -m bench.more_models [--repeats 5] [--threads N]

Each model is the authors' reference built with random weights (fixed seed) and saved in their file format; our
``Segmentor`` loads that file (fp32, CPU), the reference predictor uses the very same module. EdgeTAM has no
reference package: its reference is transformers' ``EdgeTamModel`` with transformers' conversion of the same file
(see ``_EdgeTamReference``). Rows, in the same process and run:

* encoder: ours ``Segmentor.embed`` on cache-missing copies of the photo vs the reference ``set_image``;
* one prompt: ours ``Segmentor.segment`` with one box on the cached embedding, RLE output, vs the reference
  ``predict(box=...)`` (decoder, upsampling, threshold; numpy masks).

Prints Markdown rows for BENCHMARKS.md with the CPU model and flags. Latency does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOX = (150, 80, 420, 340)


def _timed(call: Callable[[int], Any], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """``(median, min)`` seconds of ``call(i)`` over ``repeats`` timed calls after ``warmup`` untimed ones."""
    for i in range(warmup):
        call(i)
    samples = []
    for i in range(warmup, warmup + repeats):
        start = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


def _copies(image: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` copies of ``image``, each with one pixel changed (every embed misses the cache)."""
    out = []
    for i in range(count):
        copy = image.copy()
        copy[0, i % image.shape[1], 0] ^= 1
        out.append(copy)
    return out


def _sam_hq(variant: str) -> tuple[Any, dict[str, Any], Any]:
    """(reference model, our config, reference predictor factory) for SAM-HQ ``variant``."""
    import torch

    from tests.conftest import build_reference_sam_hq, segment_anything_hq

    model = build_reference_sam_hq(variant, seed=3)
    path = Path(tempfile.mkdtemp()) / f"sam_hq_{variant}.pth"
    torch.save(model.state_dict(), path)
    config = {
        "model": {"name": "sam_hq", "variant": variant, "checkpoint_path": str(path)},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return model, config, segment_anything_hq.SamPredictor


def _mobile_sam(variant: str) -> tuple[Any, dict[str, Any], Any]:
    """(reference model, our config, reference predictor factory) for MobileSAM (``vit_t`` only)."""
    import torch

    from tests.conftest import build_reference_mobile_sam, mobile_sam

    model = build_reference_mobile_sam(None, seed=3)
    path = Path(tempfile.mkdtemp()) / "mobile_sam.pt"
    torch.save(model.state_dict(), path)
    config = {
        "model": {"name": "mobile_sam", "variant": variant, "checkpoint_path": str(path)},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return model, config, mobile_sam.SamPredictor


class _EdgeTamReference:
    """EdgeTAM has no reference package: the reference is transformers' ``EdgeTamModel`` holding transformers' own
    conversion of the file, fed by the authors' image transforms (as ``tests/parity/test_edgetam.py`` checks it),
    behind the predictor calls the rows time (``set_image``, ``predict(box=...)``)."""

    def __init__(self, path: Path) -> None:
        from tests.parity.test_edgetam import _authors_transforms, _reference_model

        self.model = _reference_model(path, {})
        self.transforms = _authors_transforms()
        self.embeddings: Any = None
        self.size: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        import torch

        self.size = image.shape[:2]
        with torch.no_grad():
            self.embeddings = self.model.get_image_embeddings(self.transforms(image)[None])

    def predict(self, *, box: np.ndarray, multimask_output: bool) -> Any:
        from tests.parity.test_edgetam import _reference_predict

        prompt = {"box": tuple(float(v) for v in box)}
        return _reference_predict(self.model, self.embeddings, self.size, prompt, multimask=multimask_output)


def _edgetam(variant: str) -> tuple[Any, dict[str, Any], Any]:
    """(file path, our config, reference predictor factory) for EdgeTAM at full size (``repvit_m1``)."""
    from tests.edgetam_support import write_edgetam_checkpoint

    path = Path(tempfile.mkdtemp()) / "edgetam.pt"
    write_edgetam_checkpoint(path, {}, seed=3)
    config = {
        "model": {"name": "edgetam", "variant": variant, "checkpoint_path": str(path)},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return path, config, _EdgeTamReference


MODELS: dict[str, Callable[[str], tuple[Any, dict[str, Any], Any]]] = {
    "sam_hq": _sam_hq,
    "mobile_sam": _mobile_sam,
    "edgetam": _edgetam,
}


def _measure(name: str, variant: str, image: np.ndarray, repeats: int) -> list[str]:
    """The encoder row and the one-prompt row of one (model, variant)."""
    from perceptra_seg import Segmentor

    if name == "sam3":  # the reduced SAM 3 of the parity tests, one phrase instead of a box (bench/sam3_rows.py)
        from bench.sam3_rows import measure

        found = measure(image, repeats, _timed, _copies(image, repeats + 1))
        cells = [
            [name, "reduced", step, f"{r[0] * 1e3:.0f} ms", f"{o[0] * 1e3:.0f} ms", f"{r[0] / o[0]:.2f}×"]
            for step, r, o in found
        ]
        return ["| " + " | ".join(c) + " |" for c in cells]
    reference, config, predictor_class = MODELS[name](variant)
    ours = Segmentor(config)
    predictor = predictor_class(reference)
    copies = _copies(image, repeats + 1)
    ref_enc = _timed(lambda i: predictor.set_image(copies[i]), repeats)
    our_enc = _timed(lambda i: ours.embed(copies[i]), repeats)
    handle = ours.embed(image)
    box = np.array(BOX, dtype=np.float32)
    ref_one = _timed(lambda i: predictor.predict(box=box, multimask_output=False), repeats * 4)
    our_one = _timed(lambda i: ours.segment(handle, boxes=[BOX], output_formats=["rle"]), repeats * 4)
    ours.close()
    rows = []
    for step, ref, our in (("encoder", ref_enc, our_enc), ("one box prompt", ref_one, our_one)):
        cells = [name, variant, step, f"{ref[0] * 1e3:.0f} ms", f"{our[0] * 1e3:.0f} ms", f"{ref[0] / our[0]:.2f}×"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def run(models: list[tuple[str, str]], repeats: int) -> list[str]:
    """Markdown rows ``| model | variant | step | reference | ours | ratio |`` for every (model, variant)."""
    from skimage import data

    image = data.coffee()
    return [row for name, variant in models for row in _measure(name, variant, image, repeats)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--model", action="append", default=None, help="name/variant, e.g. sam_hq/vit_b; sam3/reduced for SAM 3"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch

    from perceptra_seg import hardware

    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = [tuple(m.split("/", 1)) for m in (args.model or ["sam_hq/vit_b", "mobile_sam/vit_t", "edgetam/repvit_m1"])]
    rows = run([(m[0], m[1]) for m in chosen], args.repeats)
    cpu = hardware.cpu_features()
    flags = ", ".join(cpu.names()) or "none"
    print(f"CPU: {cpu.model or 'unknown'}; flags: {flags}; torch threads {torch.get_num_threads()}")
    print(f"torch {torch.__version__}, repeats {args.repeats} (median), fp32")
    print("| model | variant | step | reference (median) | ours (median) | ours faster by |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
