"""OpenVINO trial (issue #22): our ONNX encoder export run by OpenVINO's CPU plugin against ONNX Runtime, same run.

Measurement only: OpenVINO is not a backend of the product. The trial would have to beat ONNX Runtime by ≥ 1.3× at
the same mask agreement to become one (``BENCHMARKS.md`` has the outcome).

Candidates, timed interleaved (round r: each once), each call = preprocessing + the encoder graph on one image:

* ``ort-fp32`` / ``ort-int8``: our ``onnx`` backend on the fp32 export and its dynamic INT8 conversion;
* ``ov-fp32``: ``openvino.Core().read_model(encoder.onnx)`` compiled for CPU with ``INFERENCE_PRECISION_HINT`` f32
  (OpenVINO would otherwise run bf16 on a CPU with native bf16);
* ``ov-bf16``: the same with the bf16 hint (only where the CPU has native bf16);
* ``ov-int8-wc``: NNCF ``compress_weights`` (INT8 asymmetric weight compression) of that model, f32 hint.

Masks: each OpenVINO encoder's features go through our ONNX Runtime decoder (the same decoder as the ORT rows); the
masks of ``models.agreement_prompts`` are compared with torch fp32's (IoU mean / min).

Run: ``python -m bench.openvino_trial --variants hiera_tiny --out bench/results/openvino.json``; the ONNX exports are
the ones ``bench.fast_path`` leaves in its work directory (made here when missing).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import mask_iou
from .models import (
    agreement_prompts,
    bench_image,
    cpu_threads,
    ensure_checkpoint,
    get_variant,
    onnx_dir,
    reference_packages,
    segmentor_config,
    variants_of,
)

__all__ = ["main"]


class OpenVinoEncoderBackend:
    """Our ONNX Runtime backend with its encoder replaced by an OpenVINO compiled model (bench only)."""

    def __init__(self, inner: Any, compiled: Any) -> None:
        self.inner, self.compiled = inner, compiled
        self.family, self.fingerprint, self.mask_size = inner.family, inner.fingerprint + "|ov", inner.mask_size
        self.request = compiled.create_infer_request()

    def encode(self, image: np.ndarray) -> Any:
        from perceptra_seg.backends.base import ImageEmbedding
        from perceptra_seg.backends.onnx_manifest import encoder_outputs
        from perceptra_seg.preprocessing import preprocess_image

        pixels, input_size = preprocess_image(image, self.family)
        outputs = self.request.infer({"pixel_values": pixels})
        features = tuple(
            np.ascontiguousarray(outputs[self.compiled.output(name)], dtype=np.float32)
            for name in encoder_outputs(self.family)
        )
        size = (int(image.shape[0]), int(image.shape[1]))
        return ImageEmbedding(size, input_size, features=features, nbytes=sum(f.nbytes for f in features))

    def decode(self, embedding: Any, batch: Any, *, multimask: bool) -> Any:
        return self.inner.decode(embedding, batch, multimask=multimask)

    def check_prompts(self) -> None:
        self.inner.check_prompts()

    def info(self) -> dict[str, Any]:
        return {**self.inner.info(), "backend": "openvino-trial"}

    def close(self) -> None:
        self.inner.close()


def _segmentor(config: dict[str, Any], backend: Any = None) -> Any:
    from perceptra_seg import Segmentor
    from perceptra_seg.config import SegmentorConfig

    return Segmentor(SegmentorConfig.load(None, **config), backend=backend)


def _masks(segmentor: Any, image: np.ndarray) -> np.ndarray:
    handle = segmentor.embed(image)
    results = segmentor.segment(handle, prompts=agreement_prompts(image.shape[:2]), output_formats=["numpy"])
    return np.stack([np.asarray(r.mask, dtype=bool) for r in results])


def run_variant(key: str, rounds: int, work_dir: Path) -> dict[str, Any]:
    import nncf
    import openvino as ov

    from perceptra_seg import hardware

    from .fast_path import _ensure_onnx

    variant = get_variant(key)
    checkpoint = ensure_checkpoint(variant, work_dir)
    _ensure_onnx(variant, checkpoint, work_dir)
    threads = cpu_threads()
    segmentors: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in ("ort-fp32", "ort-int8"):
        segmentors[name] = _segmentor(segmentor_config(variant, checkpoint, f"onnx-{name[4:]}", work_dir=work_dir))  # type: ignore[arg-type]
    core = ov.Core()
    start = time.perf_counter()
    model = core.read_model(str(onnx_dir(work_dir, variant, "fp32") / "encoder.onnx"))
    timings["read_model_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    compressed = nncf.compress_weights(core.read_model(str(onnx_dir(work_dir, variant, "fp32") / "encoder.onnx")))
    timings["compress_weights_s"] = round(time.perf_counter() - start, 1)
    hints = {"ov-fp32": (model, "f32"), "ov-int8-wc": (compressed, "f32")}
    if hardware.cpu_features().native_bf16:
        hints["ov-bf16"] = (model, "bf16")
    ort_fp32 = segmentors["ort-fp32"].backend
    fp32_config = segmentor_config(variant, checkpoint, "onnx-fp32", work_dir=work_dir)
    for name, (graph, precision) in hints.items():
        compiled = core.compile_model(
            graph, "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads}
        )
        segmentors[name] = _segmentor(fp32_config, OpenVinoEncoderBackend(ort_fp32, compiled))
    reference = _segmentor(segmentor_config(variant, checkpoint, "torch-fp32", work_dir=work_dir))
    image = bench_image()
    copies = variants_of(image, rounds + 1)
    samples: dict[str, list[float]] = {name: [] for name in segmentors}
    for segmentor in segmentors.values():
        segmentor.backend.encode(copies[0])  # warm-up
    loads = [round(os.getloadavg()[0], 2)]
    for index in range(rounds):
        for name, segmentor in segmentors.items():
            start = time.perf_counter()
            segmentor.backend.encode(copies[1 + index])
            samples[name].append((time.perf_counter() - start) * 1000.0)
        loads.append(round(os.getloadavg()[0], 2))
        print(f"[{key}] round {index + 1}/{rounds} load {loads[-1]}", file=sys.stderr, flush=True)
    reference_masks = _masks(reference, image)
    reference.close()
    ort_min = min(samples["ort-fp32"])
    rows = []
    for name, segmentor in segmentors.items():
        ious = [mask_iou(a, b) for a, b in zip(_masks(segmentor, image), reference_masks, strict=True)]
        fastest = min(samples[name])
        rows.append(
            {
                "candidate": name,
                "median_ms": round(statistics.median(samples[name]), 1),
                "min_ms": round(fastest, 1),
                "samples_ms": [round(s, 1) for s in samples[name]],
                "speedup_vs_ort_fp32_min": round(ort_min / fastest, 3),
                "mask_iou_mean": round(float(np.mean(ious)), 4),
                "mask_iou_min": round(float(np.min(ious)), 4),
            }
        )
    return {"variant": key, "rounds": rounds, "load_1min": loads, "setup": timings, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["hiera_tiny"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/perceptra-fast-path"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    reference_packages()  # before transformers (torchvision stand-in)
    import onnxruntime
    import openvino

    from perceptra_seg import hardware

    result: dict[str, Any] = {
        "cpu": hardware.cpu_features().as_dict(),
        "threads": cpu_threads(),
        "openvino": openvino.__version__,
        "onnxruntime": onnxruntime.__version__,
        "variants": [],
    }
    for key in args.variants:
        result["variants"].append(run_variant(key, args.rounds, args.work_dir))
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
