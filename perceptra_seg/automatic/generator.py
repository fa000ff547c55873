"""Automatic mask generation ("segment everything") over the backend's encode/decode split.

The same algorithm as Meta's ``SamAutomaticMaskGenerator`` / ``SAM2AutomaticMaskGenerator``, reorganised so that
no mask is upsampled to full size unless its result can depend on it:

1. for the whole image and every crop of the crop layers, the crop's embedding (from the caller, so the cache and
   an ``embed()`` handle serve it) answers a grid of single foreground points, ``points_per_batch`` per decoder call;
2. optionally (``use_m2m``) every mask is decoded once more with its own low-resolution logits as mask input;
3. masks whose predicted IoU is not above ``pred_iou_thresh`` are dropped before any upsampling;
4. the rest are upsampled only inside the window where their logits can exceed ``mask_threshold -
   stability_score_offset`` (:mod:`.upsample`), which yields exactly Meta's stability score, mask and box;
5. stability filter, crop-edge filter, box NMS within the crop, then box NMS across crops (smaller crops win) and,
   for SAM 1 with ``min_mask_region_area``, Meta's small-region clean-up and one more NMS.

Memory: one decoder batch of logits (``points_per_batch × 3 × L × L`` float32) and, per kept mask, the compressed
RLE of its bounding box; a full-size array exists for one mask at a time (when a caller asks for it), except in the
SAM 1 small-region clean-up, which works on one full-size mask at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from ..backends.base import Backend, ImageEmbedding, PromptBatch
from ..cancel import CancelToken, check
from ..preprocessing import transform_coords
from .grids import CropBox, crop_boxes
from .nms import box_nms, near_crop_edge
from .options import AutoOptions
from .records import AutoMask, clean_small_regions, pack_patch, with_mask
from .upsample import fill_small_low_res, mask_window

__all__ = ["generate_masks"]

#: SAM 2's predictor clamps the low-resolution logits it hands back as the next mask input.
_MASK_INPUT_LIMIT = 32.0


def generate_masks(
    backend: Backend,
    size: tuple[int, int],
    options: AutoOptions,
    embed: Callable[[CropBox], ImageEmbedding],
    cancel: CancelToken | None = None,
) -> Iterator[AutoMask]:
    """Yield the kept masks of an image of ``size = (H, W)``.

    Args:
        embed: returns the embedding of the image region ``(x0, y0, x1, y1)`` (the whole image first).
        cancel: checked before every crop's encoding and every decoder call (``use_m2m``: every refinement batch).

    Yields:
        Kept masks: with no crop layers and no small-region clean-up, as soon as the crop's NMS has kept them
        (best predicted IoU first); otherwise after the cross-crop NMS (smaller crops first).

    Raises:
        OperationCancelledError: ``cancel`` was set.
    """
    crops = crop_boxes(size, options.crop_n_layers, options.crop_overlap_ratio)
    grids = options.grids()
    cleanup = options.min_mask_region_area > 0 and backend.family == "sam1"
    if len(crops) == 1 and not cleanup:
        check(cancel)
        yield from _crop_masks(backend, embed(crops[0][0]), crops[0][0], grids[0], size, options, cancel)
        return
    kept: list[AutoMask] = []
    for crop_box, layer in crops:
        check(cancel)
        kept.extend(_crop_masks(backend, embed(crop_box), crop_box, grids[layer], size, options, cancel))
    if len(crops) > 1:
        areas = torch.tensor([(m.crop_box[2] - m.crop_box[0]) * (m.crop_box[3] - m.crop_box[1]) for m in kept])
        order = box_nms(_boxes(kept), (1 / areas).numpy(), options.crop_nms_thresh)
        kept = [kept[i] for i in order]
    if cleanup:
        kept = _clean(kept, size, options, cancel)
    yield from kept


def _boxes(records: list[AutoMask]) -> np.ndarray:
    return np.array([m.box for m in records], dtype=np.float32).reshape(-1, 4)


def _decode_grid(
    backend: Backend, embedding: ImageEmbedding, points: np.ndarray, options: AutoOptions, cancel: CancelToken | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode single foreground points ``[B, 2]`` (crop pixels); returns logits ``[B·K, L, L]``, predicted IoU
    ``[B·K]`` and each mask's point ``[B·K, 2]`` (a point's K masks consecutive)."""
    crop_size = embedding.original_size
    labels = np.ones((len(points), 1), dtype=np.int64)
    batch = PromptBatch(points=transform_coords(points[:, None, :], crop_size, backend.family), labels=labels)
    output = backend.decode(embedding, batch, multimask=options.multimask_output)
    per_point = output.iou_scores.shape[1]
    side = output.low_res_logits.shape[-1]
    logits = output.low_res_logits.reshape(-1, side, side)
    scores = output.iou_scores.reshape(-1)
    mask_points = np.repeat(points, per_point, axis=0)
    if options.use_m2m:
        refined = []
        for start in range(0, len(logits), options.points_per_batch):
            check(cancel)
            rows = slice(start, start + options.points_per_batch)
            inputs = np.clip(logits[rows], -_MASK_INPUT_LIMIT, _MASK_INPUT_LIMIT)[:, None]
            again = PromptBatch(
                points=transform_coords(mask_points[rows][:, None, :], crop_size, backend.family),
                labels=np.ones((len(inputs), 1), dtype=np.int64),
                mask_inputs=np.ascontiguousarray(inputs, dtype=np.float32),
            )
            refined.append(backend.decode(embedding, again, multimask=False))
        logits = np.concatenate([r.low_res_logits[:, 0] for r in refined])
        scores = np.concatenate([r.iou_scores[:, 0] for r in refined])
    return logits, scores, mask_points


def _crop_masks(
    backend: Backend,
    embedding: ImageEmbedding,
    crop_box: CropBox,
    grid: np.ndarray,
    size: tuple[int, int],
    options: AutoOptions,
    cancel: CancelToken | None,
) -> list[AutoMask]:
    """The masks one crop keeps, best predicted IoU first (boxes and points in image pixels)."""
    x0, y0, x1, y1 = crop_box
    crop_size = embedding.original_size  # (y1 - y0, x1 - x0)
    points = grid * np.array([x1 - x0, y1 - y0], dtype=np.float64)
    iou_floor, stability_floor = np.float32(options.pred_iou_thresh), np.float32(options.stability_score_thresh)
    image_box = (0, 0, size[1], size[0])
    records: list[AutoMask] = []
    for start in range(0, len(points), options.points_per_batch):
        check(cancel)
        logits, scores, mask_points = _decode_grid(
            backend, embedding, points[start : start + options.points_per_batch], options, cancel
        )
        keep = np.flatnonzero(scores > iou_floor) if options.pred_iou_thresh > 0 else np.arange(len(scores))
        batch: list[AutoMask] = []
        for index in keep:
            low_res = logits[index]
            if backend.family == "sam2" and options.min_mask_region_area > 0:
                low_res = fill_small_low_res(low_res, options.mask_threshold, options.min_mask_region_area)
            window = mask_window(
                low_res,
                crop_size,
                embedding.input_size,
                backend.family,
                threshold=options.mask_threshold,
                offset=options.stability_score_offset,
            )
            if options.stability_score_thresh > 0 and not np.float32(window.stability) >= stability_floor:
                continue
            bx0, by0, bx1, by1 = window.box
            px, py = mask_points[index]
            batch.append(
                AutoMask(
                    box=(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0),
                    patch_rle=pack_patch(window.patch),
                    area=window.area,
                    predicted_iou=float(scores[index]),
                    stability_score=window.stability,
                    point=(float(px) + x0, float(py) + y0),
                    crop_box=crop_box,
                )
            )
        if batch:
            edge = near_crop_edge(_boxes(batch), crop_box, image_box)
            records.extend(m for m, cut in zip(batch, edge, strict=True) if not cut)
    scores = np.array([m.predicted_iou for m in records], dtype=np.float32)
    local = _boxes(records) - np.array([x0, y0, x0, y0], dtype=np.float32)
    return [records[i] for i in box_nms(local, scores, options.box_nms_thresh)]


def _clean(
    records: list[AutoMask], size: tuple[int, int], options: AutoOptions, cancel: CancelToken | None
) -> list[AutoMask]:
    """Meta's SAM 1 small-region clean-up: clean every mask, prefer unchanged masks in one more box NMS."""
    cleaned: list[AutoMask] = []
    unchanged = np.zeros(len(records), dtype=np.float32)
    for i, record in enumerate(records):
        check(cancel)
        mask, changed = clean_small_regions(record.mask(size), options.min_mask_region_area)
        cleaned.append(with_mask(record, mask) if changed else record)
        unchanged[i] = 0.0 if changed else 1.0
    threshold = max(options.box_nms_thresh, options.crop_nms_thresh)
    return [cleaned[i] for i in box_nms(_boxes(cleaned), unchanged, threshold)]
