"""One benchmark configuration in its own process: ``python -m bench.worker TASK.json``.

The task file names the kind of work (``calibrate``, ``checkpoint``, ``onnx-export``, ``ours``, ``meta``,
``transformers``, ``rest``, and the GPU benchmark's ``gpu-ours`` / ``gpu-meta``), the variant and runtime, the plan
and where to write the result (JSON). Running each configuration in a fresh process keeps peak-memory figures apart
and stops one configuration's caches or thread pools from colouring the next one's timings. The result always
carries ``status`` (``ok``, ``unavailable`` with a reason, or ``failed`` with the error) and the process's peak RSS.
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .memory import peak_rss_mb
from .models import (
    Runtime,
    Variant,
    bench_boxes,
    bench_image,
    cpu_threads,
    ensure_checkpoint,
    get_variant,
    onnx_dir,
    reference_packages,
    segmentor_config,
)
from .plan import Plan

__all__ = ["main"]


class Unavailable(Exception):
    """The configuration cannot run in this environment (a missing optional package, a torchvision-only class)."""


def _sync(device: str) -> Callable[[], None] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.synchronize


def _set_threads() -> None:
    import torch

    torch.set_num_threads(cpu_threads())


def _gpu_memory(device: str) -> dict[str, float]:
    if not device.startswith("cuda"):
        return {}
    import torch

    return {"gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def calibrate(task: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The machine's matmul throughput (fp32 and bf16) and the encoder FLOPs of every variant."""
    import torch

    from .measure import count_encoder_flops, matmul_gflops

    _set_threads()
    device = task["device"]
    result: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "matmul_gflops": {
            dtype: round(matmul_gflops(plan.matmul_size, plan.matmul_repeats, dtype, device), 1)
            for dtype in ("float32", "bfloat16")
        },
    }
    if task.get("flops", True):
        result["flops"] = {key: count_encoder_flops(get_variant(key).family, key) for key in plan.variants}
    return result


def build_checkpoint(task: dict[str, Any], variant: Variant) -> dict[str, Any]:
    reference_packages()  # before transformers (the torchvision stand-in)
    start = time.perf_counter()
    path = ensure_checkpoint(variant, Path(task["work_dir"]))
    return {"checkpoint": str(path), "seconds": round(time.perf_counter() - start, 1)}


def export_onnx_graphs(task: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """fp32 export of the checkpoint and its INT8 conversion, each redone only when missing or stale."""
    try:
        from perceptra_seg.backends.export import convert_export, export_onnx
        from perceptra_seg.backends.onnx_manifest import read_manifest
    except ImportError as exc:
        raise Unavailable(f"ONNX backend not available: {exc}") from None
    from perceptra_seg.weights import file_fingerprint

    work_dir, checkpoint = Path(task["work_dir"]), Path(task["checkpoint"])
    fingerprint = file_fingerprint(checkpoint)

    def current(directory: Path) -> bool:
        try:
            return read_manifest(directory).checkpoint == fingerprint
        except Exception:  # missing or unreadable export: make it again
            return False

    fp32, int8 = onnx_dir(work_dir, variant, "fp32"), onnx_dir(work_dir, variant, "int8")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    if not current(fp32):
        export_onnx(segmentor_config(variant, checkpoint, "torch-fp32", work_dir=work_dir), fp32)
        seconds["export_fp32_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    if not current(int8):
        convert_export(fp32, int8, quantize="int8")
        seconds["convert_int8_s"] = round(time.perf_counter() - start, 1)
    return {"fp32_dir": str(fp32), "int8_dir": str(int8), **seconds}


def ours(task: dict[str, Any], plan: Plan, variant: Variant) -> dict[str, Any]:
    from . import encoder, interactive
    from .sdk import load_segmentor

    runtime: Runtime = task["runtime"]
    device, work_dir = task["device"], Path(task["work_dir"])
    if runtime.startswith("onnx"):
        try:
            import perceptra_seg.backends.onnx_backend  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"ONNX backend not available: {exc}") from None
    sync = _sync(device)
    loaded = load_segmentor(variant, Path(task["checkpoint"]), runtime, work_dir=work_dir, device=device)
    result: dict[str, Any] = {
        "load_s": round(loaded.load_s, 2),
        "rss_after_load_mb": loaded.rss_after_load_mb,
        "backend_info": loaded.segmentor.backend.info(),
    }
    image = bench_image()
    if "encoder" in plan.sections:
        result["encoder"] = encoder.ours_encoder(loaded, image, plan.encoder, sync)
    calls_before = loaded.backend.encode_calls
    handle = loaded.segmentor.embed(image)
    embedding = loaded.backend.last_embedding
    if loaded.backend.encode_calls != calls_before + 1 or embedding is None:
        raise RuntimeError("embedding the benchmark image did not run the encoder")
    if "encoder" in plan.sections:
        masks_path = work_dir / "masks" / f"{variant.key}_{runtime}.npz"
        result["masks"] = encoder.ours_masks(loaded, image, masks_path)
    if "interactive" in plan.sections:
        boxes = bench_boxes(image.shape[:2], max(plan.prompt_counts))
        result["decoder"] = interactive.decoder_only(loaded, embedding, handle, boxes[0], plan.decoder, sync)
        if runtime in plan.interactive_runtimes:
            result["interactive"] = interactive.ours_interactive(
                loaded, handle, boxes, plan.prompt_counts, plan.interactive_repeats, sync
            )
    if "seed" in plan.sections and runtime == "torch-fp32" and variant.key in plan.seed_variants:
        result["seed"] = interactive.seed_baseline(loaded, image, bench_boxes(image.shape[:2], plan.seed_prompts))
    result.update(_gpu_memory(device))
    return result


def meta(task: dict[str, Any], plan: Plan, variant: Variant) -> dict[str, Any]:
    from . import encoder, interactive
    from .memory import current_rss_mb
    from .models import load_reference_model

    segment_anything, _, sam2_predictor = reference_packages()
    _set_threads()
    device = task["device"]
    sync = _sync(device)
    start = time.perf_counter()
    model = load_reference_model(variant, Path(task["checkpoint"]), device)
    predictor = (
        segment_anything.SamPredictor(model) if variant.family == "sam1" else sam2_predictor.SAM2ImagePredictor(model)
    )
    result: dict[str, Any] = {"load_s": round(time.perf_counter() - start, 2), "rss_after_load_mb": current_rss_mb()}
    image = bench_image()
    if "encoder" in plan.sections:
        result["encoder"] = encoder.meta_encoder(predictor, image, plan.encoder, sync)
    else:
        predictor.set_image(image)
    if "interactive" in plan.sections:
        boxes = bench_boxes(image.shape[:2], max(plan.prompt_counts))
        result["interactive"] = interactive.meta_interactive(
            predictor, variant.family, image.shape[:2], boxes, plan.prompt_counts, plan.interactive_repeats, sync
        )
    result.update(_gpu_memory(device))
    return result


def transformers_path(task: dict[str, Any], plan: Plan, variant: Variant) -> dict[str, Any]:
    from perceptra_seg.backends import create_backend
    from perceptra_seg.config import SegmentorConfig

    from . import encoder
    from .memory import current_rss_mb

    try:
        processor = encoder.transformers_processor(variant)
    except ImportError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        first_sentence = message.split(". ")[0].rstrip(".")
        raise Unavailable(f"not runnable here (needs torchvision): {first_sentence}") from None
    device, work_dir = task["device"], Path(task["work_dir"])
    start = time.perf_counter()
    # transformers' own model class, with the checkpoint's weights (converted by our loader)
    config = SegmentorConfig.load(
        None, **segmentor_config(variant, Path(task["checkpoint"]), "torch-fp32", work_dir=work_dir, device=device)
    )
    model = create_backend(config).model  # type: ignore[attr-defined]
    gc.collect()
    result: dict[str, Any] = {
        "load_s": round(time.perf_counter() - start, 2),
        "rss_after_load_mb": current_rss_mb(),
        "processor": type(processor.image_processor).__name__,
    }
    result["encoder"] = encoder.transformers_encoder(
        model, processor, bench_image(), plan.encoder, _sync(device), device
    )
    result.update(_gpu_memory(device))
    return result


def rest(task: dict[str, Any], plan: Plan, variant: Variant) -> dict[str, Any]:
    from . import rest as rest_bench
    from .sdk import load_segmentor

    device, work_dir, checkpoint = task["device"], Path(task["work_dir"]), Path(task["checkpoint"])
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401

        import perceptra_seg.service  # noqa: F401
    except ImportError as exc:
        raise Unavailable(f"REST service not available: {exc}") from None
    image = bench_image()
    boxes = bench_boxes(image.shape[:2], max(plan.prompt_counts))
    loaded = load_segmentor(variant, checkpoint, "torch-fp32", work_dir=work_dir, device=device)
    handle = loaded.segmentor.embed(image)
    sdk = rest_bench.sdk_single_prompt(loaded, handle, boxes, plan.rest_sdk)
    loaded.segmentor.close()
    del loaded, handle
    gc.collect()
    sections = segmentor_config(variant, checkpoint, "torch-fp32", work_dir=work_dir, device=device)
    sections["cache"] = {"enabled": True}  # the service's own default cache size
    with rest_bench.Server(
        sections, work_dir / "rest" / variant.key, ready_timeout_s=plan.worker_timeout_s / 2
    ) as server:
        embedded = rest_bench.embed_image(server.base_url, image)
        rest_bench.run_clients(
            server.base_url, embedded["image_id"], boxes, concurrency=1, max_requests=3, max_seconds=plan.rest_seconds
        )  # warm-up
        runs = [
            rest_bench.run_clients(
                server.base_url,
                embedded["image_id"],
                boxes,
                concurrency=concurrency,
                max_requests=plan.rest_requests,
                max_seconds=plan.rest_seconds,
            )
            for concurrency in plan.rest_concurrency
        ]
        server_memory = server.memory()
        startup_s = server.startup_s
    return {
        "sdk": sdk,
        "runs": runs,
        "embed_ms": embedded["client_ms"],
        "server_startup_s": round(startup_s, 1) if startup_s is not None else None,
        "server_memory": server_memory,
    }


def gpu(task: dict[str, Any], plan: Plan, variant: Variant) -> dict[str, Any]:
    """A GPU-benchmark worker (``bench/gpu_rows.py``): ours or Meta's predictor, every precision of the plan."""
    if task["kind"] == "gpu-meta":
        reference_packages()  # before transformers (the torchvision stand-in where torchvision is missing)
    from .gpu_plan import GpuPlan
    from .gpu_rows import environment, gpu_meta, gpu_ours

    _set_threads()
    gpu_plan = GpuPlan.from_dict(task["gpu_plan"])
    device = task["device"]
    measure = gpu_ours if task["kind"] == "gpu-ours" else gpu_meta
    body = measure(task, gpu_plan, variant, _sync(device))
    return {**body, "environment": environment(device)}


_KINDS: dict[str, Callable[..., dict[str, Any]]] = {
    "ours": ours,
    "meta": meta,
    "transformers": transformers_path,
    "rest": rest,
    "gpu-ours": gpu,
    "gpu-meta": gpu,
}


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run one task and return its result (never raises: failures become ``status: failed``)."""
    plan = Plan.from_dict(task["plan"])
    start = time.perf_counter()
    result: dict[str, Any] = {key: task.get(key) for key in ("kind", "variant", "runtime")}
    try:
        kind = task["kind"]
        if kind == "calibrate":
            body = calibrate(task, plan)
        else:
            variant = get_variant(task["variant"])
            if kind == "checkpoint":
                body = build_checkpoint(task, variant)
            elif kind == "onnx-export":
                body = export_onnx_graphs(task, variant)
            else:
                body = _KINDS[kind](task, plan, variant)
        result.update(body)
        result["status"] = "ok"
    except Unavailable as exc:
        result.update({"status": "unavailable", "reason": str(exc)})
    except Exception as exc:
        result.update(
            {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
        )
    result["wall_s"] = round(time.perf_counter() - start, 2)
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.worker TASK.json", file=sys.stderr)
        return 2
    # the runner stops an overdue worker with SIGTERM: unwind (a REST worker stops its server) instead of dying
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    task = json.loads(Path(argv[1]).read_text())
    result = run_task(task)
    Path(task["result_path"]).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["status"] in ("ok", "unavailable") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
