"""Per-CPU-class candidate table: which encoder path is fastest on this CPU while keeping masks at IoU ≥ 0.97.

For each variant (random-weight Meta checkpoints, as every bench row), one process loads every candidate and times
them **interleaved** (round r: candidate A, B, C, ... once each), so a shared machine's load hits every candidate
alike; ratios come from the same run. Candidates (ours: ``backend.encode(image)``, preprocessing included; Meta:
``predictor.set_image(image)``, preprocessing included):

* ``meta``: Meta's ``SamPredictor`` / ``SAM2ImagePredictor`` in fp32 (the ratio's denominator);
* ``torch-fp32`` (the mask reference), ``torch-fp32-1t`` (one intra-op thread), ``torch-bf16`` (autocast; only
  where this CPU has native bf16 and the ISA is not capped);
* ``compile-fp32`` / ``compile-bf16``: ``runtime.compile`` (inductor) with ``torch._inductor.config.freezing``;
  the first call's compile time is reported apart;
* ``onnx-fp32`` / ``onnx-int8``: ONNX Runtime on our export and its dynamic INT8 conversion (uint8 weights);
* ``openvino-fp32`` / ``openvino-bf16``: ``runtime.backend: openvino`` (the export's encoder on OpenVINO, f32 / bf16
  hint).

Mask agreement: the masks of ``models.agreement_prompts`` on the bench photograph from each candidate against
``torch-fp32`` (IoU per prompt, mean and min).

``--isa avx2`` re-runs the whole thing with ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``: torch's own
kernels and oneDNN's are capped at AVX2, which approximates an AVX2-only CPU (it is not a real one: caches, clocks
and ONNX Runtime's and OpenVINO's kernels, which these switches do not cap, are this CPU's: those rows are left out of
capped runs).

Run: ``python -m bench.fast_path --variants hiera_tiny vit_b --out bench/results/fast_path.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import mask_iou
from .measure import matmul_gflops
from .models import (
    agreement_prompts,
    bench_image,
    cpu_threads,
    ensure_checkpoint,
    get_variant,
    load_reference_model,
    onnx_dir,
    reference_packages,
    segmentor_config,
    variants_of,
)

__all__ = ["main"]

AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
ALL_CANDIDATES = (
    "meta",
    "torch-fp32",
    "torch-fp32-1t",
    "torch-bf16",
    "compile-fp32",
    "compile-bf16",
    "onnx-fp32",
    "onnx-int8",
    "openvino-fp32",
    "openvino-bf16",
)


class Candidate:
    """One encoder path: ``call(image)`` runs it once; ``masks(image)`` returns the agreement masks (ours only)."""

    def __init__(
        self,
        name: str,
        call: Callable[[np.ndarray], object],
        masks: Callable[[np.ndarray], np.ndarray] | None,
        threads: int,
    ) -> None:
        self.name, self.call, self.masks, self.threads = name, call, masks, threads
        self.samples_ms: list[float] = []
        self.first_call_s = 0.0


def _load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def _ours(variant: Any, checkpoint: Path, name: str, work_dir: Path) -> Candidate:
    """Our Segmentor for one candidate name (see the module docstring)."""
    from perceptra_seg import Segmentor
    from perceptra_seg.config import SegmentorConfig

    aliases = {
        "torch-fp32-1t": "torch-fp32",
        "compile-fp32": "torch-fp32",
        "compile-bf16": "torch-bf16",
        "openvino-fp32": "onnx-fp32",
        "openvino-bf16": "onnx-fp32",
    }
    sections = segmentor_config(variant, checkpoint, aliases.get(name, name), work_dir=work_dir)  # type: ignore[arg-type]
    if name.startswith("openvino"):
        sections["runtime"].update(backend="openvino", precision=name.split("-")[1])
    threads = 1 if name == "torch-fp32-1t" else cpu_threads()
    sections["runtime"]["num_threads"] = threads
    sections["runtime"]["compile"] = name.startswith("compile")
    if name.startswith(("onnx", "openvino")):
        _ensure_onnx(variant, checkpoint, work_dir)
    segmentor = Segmentor(SegmentorConfig.load(None, **sections))
    backend = segmentor.backend

    def masks(image: np.ndarray) -> np.ndarray:
        handle = segmentor.embed(image)
        results = segmentor.segment(handle, prompts=agreement_prompts(image.shape[:2]), output_formats=["numpy"])
        return np.stack([np.asarray(r.mask, dtype=bool) for r in results])

    return Candidate(name, backend.encode, masks, threads)


def _ensure_onnx(variant: Any, checkpoint: Path, work_dir: Path) -> None:
    from perceptra_seg.backends.export import convert_export, export_onnx

    fp32, int8 = onnx_dir(work_dir, variant, "fp32"), onnx_dir(work_dir, variant, "int8")
    if not (fp32 / "manifest.json").is_file():
        export_onnx(segmentor_config(variant, checkpoint, "torch-fp32", work_dir=work_dir), fp32)
    if not (int8 / "manifest.json").is_file():
        convert_export(fp32, int8, quantize="int8")


def _meta(variant: Any, checkpoint: Path) -> Candidate:
    segment_anything, _, sam2_predictor = reference_packages()
    model = load_reference_model(variant, checkpoint, "cpu")
    predictor = (
        segment_anything.SamPredictor(model) if variant.family == "sam1" else sam2_predictor.SAM2ImagePredictor(model)
    )
    return Candidate("meta", predictor.set_image, None, cpu_threads())


def run_variant(key: str, names: list[str], rounds: int, work_dir: Path, capped: bool) -> dict[str, Any]:
    """Load every candidate of one variant, time them interleaved for ``rounds`` rounds, compare their masks."""
    import torch

    variant = get_variant(key)
    checkpoint = ensure_checkpoint(variant, work_dir)
    image = bench_image()
    copies = variants_of(image, rounds + 1)
    torch._inductor.config.freezing = True  # compile candidates: weights folded in as constants
    candidates: list[Candidate] = []
    skipped: dict[str, str] = {}
    from perceptra_seg import hardware

    for name in names:
        if "bf16" in name and (capped or not hardware.cpu_features().native_bf16):
            skipped[name] = "bf16 is emulated on this CPU class (no native bf16 kernels)"
            continue
        if name.startswith(("onnx", "openvino")) and capped:
            skipped[name] = "ONNX Runtime's and OpenVINO's kernels are not capped by these switches"
            continue
        try:
            candidate = _meta(variant, checkpoint) if name == "meta" else _ours(variant, checkpoint, name, work_dir)
            torch.set_num_threads(candidate.threads)
            start = time.perf_counter()
            candidate.call(copies[0])  # warm-up (compile candidates compile here)
            candidate.first_call_s = round(time.perf_counter() - start, 1)
            candidates.append(candidate)
        except Exception as exc:  # a candidate that cannot run here is reported, not fatal
            skipped[name] = f"{type(exc).__name__}: {exc}"[:300]
        print(f"[{key}] loaded {name}", file=sys.stderr, flush=True)
    load_before = _load_avg()
    round_loads = []
    for index in range(rounds):
        for candidate in candidates:
            torch.set_num_threads(candidate.threads)
            start = time.perf_counter()
            candidate.call(copies[1 + index])
            candidate.samples_ms.append((time.perf_counter() - start) * 1000.0)
        round_loads.append(_load_avg())
        print(f"[{key}] round {index + 1}/{rounds} load {round_loads[-1]}", file=sys.stderr, flush=True)
    load_after = _load_avg()
    torch.set_num_threads(cpu_threads())
    reference = next((c for c in candidates if c.name == "torch-fp32"), None)
    reference_masks = reference.masks(image) if reference is not None and reference.masks else None
    meta = next((c for c in candidates if c.name == "meta"), None)
    meta_ms = statistics.median(meta.samples_ms) if meta else None
    meta_min = min(meta.samples_ms) if meta else None
    rows = []
    for candidate in candidates:
        median, fastest = statistics.median(candidate.samples_ms), min(candidate.samples_ms)
        row: dict[str, Any] = {
            "candidate": candidate.name,
            "median_ms": round(median, 1),
            "min_ms": round(fastest, 1),
            "samples_ms": [round(s, 1) for s in candidate.samples_ms],
            "first_call_s": candidate.first_call_s,
            "speedup_vs_meta": round(meta_ms / median, 3) if meta_ms else None,
            # the least-disturbed call of each: the steadier figure on a shared machine
            "speedup_vs_meta_min": round(meta_min / fastest, 3) if meta_min else None,
        }
        if candidate.masks is not None and reference_masks is not None:
            torch.set_num_threads(candidate.threads)
            ious = [mask_iou(a, b) for a, b in zip(candidate.masks(image), reference_masks, strict=True)]
            row["mask_iou_mean"], row["mask_iou_min"] = round(float(np.mean(ious)), 4), round(float(np.min(ious)), 4)
        rows.append(row)
    del candidates
    gc.collect()
    return {
        "variant": key,
        "rounds": rounds,
        "load_1min": [load_before, *round_loads, load_after],
        "rows": rows,
        "skipped": skipped,
    }


def demo_agreement(scene_count: int, work_dir: Path) -> dict[str, Any]:
    """The reduced-precision paths on real learned weights: the packaged demo model on its held-out scenes (one
    tight box and one interior click per object), each path's masks against torch fp32's (IoU mean / min), and
    each path's own mean IoU against the ground truth."""
    from perceptra_seg import Segmentor, hardware
    from perceptra_seg.backends.export import convert_export, export_onnx
    from perceptra_seg.demo.evaluation import evaluate, mean_iou, object_prompts, segmentor_predictor
    from perceptra_seg.demo.scenes import HELDOUT_SEED, generate_scenes

    scenes = generate_scenes(HELDOUT_SEED, scene_count, [(256, 256)])
    base: dict[str, Any] = {"model": {"name": "demo"}, "runtime": {"device": "cpu", "precision": "fp32"}}
    fp32_dir, int8_dir = work_dir / "onnx" / "demo" / "fp32", work_dir / "onnx" / "demo" / "int8"
    if not (fp32_dir / "manifest.json").is_file():
        export_onnx(base, fp32_dir)
    if not (int8_dir / "manifest.json").is_file():
        convert_export(fp32_dir, int8_dir, quantize="int8")
    paths: dict[str, dict[str, Any]] = {
        "torch-fp32": base,
        "onnx-fp32": {**base, "runtime": {**base["runtime"], "backend": "onnx"}, "onnx": {"model_dir": str(fp32_dir)}},
        "onnx-int8": {
            **base,
            "runtime": {**base["runtime"], "backend": "onnx"},
            "onnx": {"model_dir": str(int8_dir), "quantize": "int8"},
        },
    }
    openvino = {"backend": "openvino", "device": "cpu"}
    paths["openvino-fp32"] = {
        **base,
        "runtime": {**openvino, "precision": "fp32"},
        "onnx": {"model_dir": str(fp32_dir)},
    }
    if hardware.cpu_features().native_bf16:
        paths["torch-bf16"] = {**base, "runtime": {"device": "cpu", "precision": "bf16"}}
        paths["openvino-bf16"] = {
            **base,
            "runtime": {**openvino, "precision": "bf16"},
            "onnx": {"model_dir": str(fp32_dir)},
        }
    masks: dict[str, list[np.ndarray]] = {}
    truth: dict[str, float] = {}
    for name, config in paths.items():
        segmentor = Segmentor(config)
        predict = segmentor_predictor(segmentor)
        masks[name] = [
            m
            for kind in ("box", "point")
            for scene in scenes
            for m in predict(scene.image, object_prompts(scene, kind))
        ]  # type: ignore[arg-type]
        truth[name] = round(mean_iou(evaluate(predict, scenes, "box")), 4)
        segmentor.close()
    rows = []
    for name, got in masks.items():
        ious = [mask_iou(a, b) for a, b in zip(got, masks["torch-fp32"], strict=True)]
        rows.append(
            {
                "path": name,
                "masks": len(ious),
                "mask_iou_mean": round(float(np.mean(ious)), 4),
                "mask_iou_min": round(float(np.min(ious)), 4),
                "box_iou_vs_truth": truth[name],
            }
        )
    return {"scenes": scene_count, "rows": rows}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=["hiera_tiny", "vit_b", "hiera_small"])
    parser.add_argument("--candidates", nargs="+", default=list(ALL_CANDIDATES), choices=ALL_CANDIDATES)
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per candidate (interleaved)")
    parser.add_argument("--isa", choices=["native", "avx2"], default="native")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/perceptra-fast-path"))
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    parser.add_argument(
        "--demo-scenes", type=int, default=0, help="instead: mask agreement of the demo model on N held-out scenes"
    )
    args = parser.parse_args(argv)
    if args.demo_scenes:
        agreement = demo_agreement(args.demo_scenes, args.work_dir)
        if args.out is not None:
            args.out.write_text(json.dumps(agreement, indent=1))
        print(json.dumps(agreement, indent=1))
        return agreement
    capped = args.isa == "avx2"
    if capped and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        os.execvpe(  # the caps must be in the environment before torch loads
            sys.executable,
            [sys.executable, "-m", "bench.fast_path", *(argv if argv is not None else sys.argv[1:])],
            {**os.environ, **AVX2_ENV},
        )
    reference_packages()  # before transformers (torchvision stand-in)
    import torch

    from perceptra_seg import hardware

    result: dict[str, Any] = {
        "isa": args.isa,
        "env": {k: os.environ.get(k) for k in AVX2_ENV},
        "torch_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cpu": hardware.cpu_features().as_dict(),
        "threads": cpu_threads(),
        "torch": torch.__version__,
        "fp32_gflops": round(matmul_gflops(dtype="float32"), 1),
        "bf16_gflops": None if capped else round(matmul_gflops(dtype="bfloat16"), 1),
        "variants": [],
    }
    for key in args.variants:
        result["variants"].append(run_variant(key, args.candidates, args.rounds, args.work_dir, capped))
        if args.out is not None:  # keep what is done if a later variant fails
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=1))
    result["fp32_gflops_end"] = round(matmul_gflops(dtype="float32"), 1)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
