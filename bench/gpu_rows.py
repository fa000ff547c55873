"""The GPU benchmark's worker side: one process per (variant, implementation), every precision inside it.

For each precision (fp32, then fp16 / bf16 autocast) a worker measures:

* ``embed``: the user-level call on one image — ours ``Segmentor.embed(image)`` (a cache-missing copy each call),
  Meta's ``predictor.set_image(image)``; preprocessing included on both sides;
* ``encoder_b1`` / ``encoder_batch``: the encoder module alone on the same float32 ``[B, 3, 1024, 1024]`` tensor
  (our preprocessing of the benchmark image, repeated B times) — ours: the backend model's
  ``get_image_embeddings``; Meta's: ``image_encoder`` (SAM 1) or ``forward_image`` (SAM 2.1: trunk, FPN neck and
  the high-resolution feature convolutions, the work transformers' ``get_image_embeddings`` does). Our
  ``Segmentor`` encodes one image per call, so batch B is only measurable on the module;
* ``decoder``: one box prompt on the embedded image to a full-size boolean mask on the host — ours
  ``segment(handle, boxes=[box], output_formats=["numpy"])`` (plus ``backend.decode`` alone), Meta's
  ``predictor.predict(box=box, multimask_output=False)``;
* the masks of a few box prompts, saved for the IoU columns (precision vs fp32, ours vs Meta's).

Ours loads the model anew for each precision, as a user configuring ``runtime.precision`` would; Meta's predictor
has no precision setting, so its rows wrap every call in ``torch.autocast`` (as sam2's README does), and all rows
run under ``torch.inference_mode``.
"""

from __future__ import annotations

import contextlib
import gc
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .agreement import save_masks
from .gpu_plan import GpuPlan
from .measure import Budget, summarize, time_calls
from .models import Variant, bench_boxes, bench_image

__all__ = ["environment", "gpu_meta", "gpu_ours"]

Sync = Callable[[], None] | None


def environment(device: str) -> dict[str, Any]:
    """Device name, torch / transformers / CUDA versions and the TF32 switches every row ran with."""
    import torch
    import transformers

    cuda = device.startswith("cuda")
    return {
        "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "torch_threads": torch.get_num_threads(),
    }


@contextlib.contextmanager
def precision_context(device: str, precision: str) -> Iterator[None]:
    """``torch.inference_mode``, plus ``torch.autocast`` to fp16 / bf16 unless ``precision`` is fp32."""
    import torch

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
    with torch.inference_mode():
        if precision == "fp32":
            yield
        else:
            with torch.autocast(device_type=torch.device(device).type, dtype=dtypes[precision]):
                yield


def pixel_batch(family: str, batch: int, device: str) -> Any:
    """The benchmark image preprocessed by our pipeline: float32 ``[batch, 3, 1024, 1024]`` on ``device``."""
    import torch

    from perceptra_seg.preprocessing import preprocess_image

    pixels, _ = preprocess_image(bench_image(), family)  # type: ignore[arg-type]
    return torch.from_numpy(pixels).to(device).expand(batch, -1, -1, -1).contiguous()


def time_module(forward: Callable[[Any], Any], pixels: Any, budget: Budget, sync: Sync) -> dict[str, Any]:
    """Median / p95 ms of ``forward(pixels)`` and images per second at the median (``batch × 1000 / median``)."""
    stats = summarize(time_calls(lambda _: forward(pixels), budget, sync))
    batch = int(pixels.shape[0])
    return {**stats, "batch": batch, "images_per_s": round(batch * 1000 / stats["median_ms"], 3)}


def _per_image(stats: dict[str, Any]) -> dict[str, Any]:
    return {**stats, "images_per_s": round(1000 / stats["median_ms"], 3)}


def _masks_path(work_dir: Path, variant: Variant, side: str, precision: str) -> Path:
    return work_dir / "masks" / f"gpu_{variant.key}_{side}_{precision}.npz"


def _gpu_peak_mb(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.startswith("cuda") else None


def _reset_gpu_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _each_precision(plan: GpuPlan, device: str, measure: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """``measure(precision)`` for every precision of the plan; a precision that raises becomes a row with its
    ``error`` (the others still run). Raises only when every precision failed."""
    rows: list[dict[str, Any]] = []
    for precision in plan.precisions:
        _reset_gpu_peak(device)
        try:
            rows.append({"precision": precision, **measure(precision), "gpu_peak_mb": _gpu_peak_mb(device)})
        except Exception as exc:  # one precision's failure (an unsupported dtype, out of memory) is its row's
            rows.append(
                {
                    "precision": precision,
                    "error": f"{type(exc).__name__}: {exc}"[:2000],
                    "traceback": traceback.format_exc()[-3000:],
                }
            )
        gc.collect()
    if all("error" in row for row in rows):
        raise RuntimeError(f"every precision failed; first: {rows[0]['error']}")
    return rows


def gpu_ours(task: dict[str, Any], plan: GpuPlan, variant: Variant, sync: Sync) -> dict[str, Any]:
    """Our rows of one variant, every precision (each a fresh ``Segmentor`` with ``runtime.precision`` set)."""
    from .encoder import ours_encoder
    from .sdk import load_segmentor

    device, work_dir, checkpoint = task["device"], Path(task["work_dir"]), Path(task["checkpoint"])
    image = bench_image()
    [box] = bench_boxes(image.shape[:2], 1)
    iou_boxes = bench_boxes(image.shape[:2], plan.iou_boxes, seed=9)

    def measure(precision: str) -> dict[str, Any]:
        loaded = load_segmentor(
            variant,
            checkpoint,
            f"torch-{precision}",
            work_dir=work_dir,  # type: ignore[arg-type]
            device=device,
        )
        segmentor, backend = loaded.segmentor, loaded.backend
        try:
            row: dict[str, Any] = {"load_s": round(loaded.load_s, 2)}
            embed = ours_encoder(loaded, image, plan.embed, sync)
            row["embed"] = _per_image({k: v for k, v in embed.items() if k != "samples_ms"})
            model = backend.inner.model  # type: ignore[attr-defined]
            with precision_context(device, precision):
                row["encoder_b1"] = time_module(
                    model.get_image_embeddings, pixel_batch(variant.family, 1, device), plan.encoder, sync
                )
                row["encoder_batch"] = time_module(
                    model.get_image_embeddings,
                    pixel_batch(variant.family, plan.batch, device),
                    plan.encoder_batch,
                    sync,
                )
            handle = segmentor.embed(image)
            embedding = backend.last_embedding
            if embedding is None:
                raise RuntimeError("embedding the benchmark image did not run the encoder")
            [(_, prompt_batch)] = _box_batches(box, image.shape[:2], variant.family)
            row["decoder"] = summarize(
                time_calls(
                    lambda _: segmentor.segment(handle, boxes=[box], output_formats=["numpy"]), plan.decoder, sync
                )
            )
            row["decoder_only"] = summarize(
                time_calls(lambda _: backend.inner.decode(embedding, prompt_batch, multimask=False), plan.decoder, sync)
            )
            results = segmentor.segment(handle, boxes=iou_boxes, output_formats=["numpy"])
            path = _masks_path(work_dir, variant, "ours", precision)
            save_masks(path, np.stack([np.asarray(r.mask, dtype=bool) for r in results]))
            row["masks_path"] = str(path)
            return row
        finally:
            segmentor.close()

    return {"implementation": "ours", "rows": _each_precision(plan, device, measure)}


def _box_batches(box: tuple[float, float, float, float], size: tuple[int, int], family: str) -> list[Any]:
    from perceptra_seg.models import Prompt
    from perceptra_seg.prompts import build_batches

    return list(build_batches([Prompt(box=box)], size, family))  # type: ignore[arg-type]


def _meta_forward(model: Any, family: str) -> Callable[[Any], Any]:
    """Meta's encoder module: ``image_encoder`` (SAM 1) or ``forward_image`` (SAM 2.1, with the feature convs)."""
    return model.image_encoder if family == "sam1" else model.forward_image


class MetaPredict:
    """One box to a full-size boolean mask with Meta's predictor: ``predict(box=...)``, or where that cannot
    return the result (SAM 1's ``predict`` turns bf16 scores into numpy, which numpy lacks) ``predict_torch`` and
    the same conversion to host done in float32. ``fallback`` says which one ran."""

    def __init__(self, predictor: Any, family: str, size: tuple[int, int]) -> None:
        self.predictor = predictor
        self.family = family
        self.size = size
        self.fallback: str | None = None

    def __call__(self, box: np.ndarray) -> np.ndarray:
        if self.fallback is None:
            try:
                masks = self.predictor.predict(box=box, multimask_output=False)[0]
                return np.asarray(masks[0]).astype(bool)
            except TypeError as exc:
                if self.family != "sam1" or "BFloat16" not in str(exc):
                    raise
                self.fallback = f"predict() failed ({exc}); timed predict_torch() + host copy instead"
        return self._predict_torch(box)

    def _predict_torch(self, box: np.ndarray) -> np.ndarray:
        import torch

        predictor = self.predictor
        boxes = predictor.transform.apply_boxes_torch(torch.as_tensor(box[None], device=predictor.device), self.size)
        masks = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False)[0]
        return np.asarray(masks[0, 0].cpu().numpy(), dtype=bool)


def gpu_meta(task: dict[str, Any], plan: GpuPlan, variant: Variant, sync: Sync) -> dict[str, Any]:
    """Meta's rows of one variant: its predictor over the same checkpoint, every precision as autocast."""
    from .encoder import meta_encoder
    from .models import load_reference_model, reference_packages

    segment_anything, _, sam2_predictor = reference_packages()
    device, work_dir = task["device"], Path(task["work_dir"])
    start = time.perf_counter()
    model = load_reference_model(variant, Path(task["checkpoint"]), device)
    predictor = (
        segment_anything.SamPredictor(model) if variant.family == "sam1" else sam2_predictor.SAM2ImagePredictor(model)
    )
    load_s = round(time.perf_counter() - start, 2)
    image = bench_image()
    [box] = np.asarray(bench_boxes(image.shape[:2], 1), dtype=np.float32)
    iou_boxes = np.asarray(bench_boxes(image.shape[:2], plan.iou_boxes, seed=9), dtype=np.float32)
    forward = _meta_forward(model, variant.family)

    def measure(precision: str) -> dict[str, Any]:
        row: dict[str, Any] = {"load_s": load_s}
        predict = MetaPredict(predictor, variant.family, image.shape[:2])
        with precision_context(device, precision):
            embed = meta_encoder(predictor, image, plan.embed, sync)  # its last call leaves the image set
            row["embed"] = _per_image({k: v for k, v in embed.items() if k != "samples_ms"})
            row["encoder_b1"] = time_module(forward, pixel_batch(variant.family, 1, device), plan.encoder, sync)
            row["encoder_batch"] = time_module(
                forward, pixel_batch(variant.family, plan.batch, device), plan.encoder_batch, sync
            )
            row["decoder"] = summarize(time_calls(lambda _: predict(box), plan.decoder, sync))
            masks = np.stack([predict(b) for b in iou_boxes])
        if predict.fallback:
            row["decoder_note"] = predict.fallback
        path = _masks_path(work_dir, variant, "meta", precision)
        save_masks(path, masks)
        row["masks_path"] = str(path)
        return row

    return {
        "implementation": "meta",
        "predictor": type(predictor).__name__,
        "rows": _each_precision(plan, device, measure),
    }
