"""Options of automatic mask generation, named as in Meta's generators, with per-family defaults.

SAM 1 defaults follow ``SamAutomaticMaskGenerator`` (``pred_iou_thresh=0.88``), SAM 2 defaults follow
``SAM2AutomaticMaskGenerator`` (``pred_iou_thresh=0.8``); every other default is shared by both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..registry import Family

__all__ = ["AutoOptions", "auto_options"]

#: Where a family's reference generator differs from the shared defaults.
_FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {"sam1": {"pred_iou_thresh": 0.88}, "sam2": {"pred_iou_thresh": 0.8}}
#: Most grid points per side: 128² = 16 384 prompts per crop already takes minutes on a CPU.
MAX_POINTS_PER_SIDE = 128
MAX_CROP_LAYERS = 4


@dataclass(frozen=True)
class AutoOptions:
    """Everything that steers :func:`~perceptra_seg.automatic.generator.generate_masks`.

    Attributes:
        points_per_side: grid points along each side of a crop (``points_per_side²`` prompts); ``None`` when
            ``point_grids`` is given.
        points_per_batch: prompts per mask-decoder call (results do not depend on it; memory grows with it).
        pred_iou_thresh: keep masks whose predicted IoU is ``>`` this (``0`` = no filter).
        stability_score_thresh: keep masks whose stability score is ``>=`` this (``0`` = no filter).
        stability_score_offset: the stability score is the IoU of the masks thresholded at ``mask_threshold ±
            offset``.
        box_nms_thresh: box IoU above which the lower-scored of two masks of one crop is dropped.
        crop_n_layers: extra layers of crops; layer ``i`` cuts the image into ``(2**i)²`` overlapping crops, each
            encoded on its own.
        crop_nms_thresh: box IoU above which masks of different crops are deduplicated (smaller crops win).
        crop_overlap_ratio: overlap of the first layer's crops as a fraction of the image's short side.
        crop_n_points_downscale_factor: layer ``i`` uses ``points_per_side / factor**i`` points per side.
        point_grids: explicit grids per layer, each float ``[P, 2]`` of ``(x, y)`` in ``[0, 1]`` of the crop.
        min_mask_region_area: remove islands and fill holes smaller than this many pixels (``0`` = off). SAM 1:
            on the full-size masks, then box NMS again (as Meta's generator). SAM 2: on the low-resolution logits
            before upsampling (as Meta's SAM 2 predictor).
        multimask_output: three masks per grid point (else one).
        use_m2m: refine every mask once more with its own low-resolution logits as mask input.
        mask_threshold: logit threshold that makes a mask.
    """

    points_per_side: int | None = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    point_grids: tuple[np.ndarray, ...] | None = None
    min_mask_region_area: int = 0
    multimask_output: bool = True
    use_m2m: bool = False
    mask_threshold: float = 0.0

    def grids(self) -> list[np.ndarray]:
        """The point grid of every crop layer, float64 ``[P, 2]`` of ``(x, y)`` in ``[0, 1]``."""
        from .grids import layer_point_grids

        if self.point_grids is not None:
            return list(self.point_grids)
        assert self.points_per_side is not None
        return layer_point_grids(self.points_per_side, self.crop_n_layers, self.crop_n_points_downscale_factor)


NAMES = tuple(f.name for f in fields(AutoOptions))


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        raise InvalidInputError(f"{name} must lie in [{low:g}, {high:g}], got {value!r}")
    return number


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= high:
        raise InvalidInputError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInputError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _grids(value: Any) -> tuple[np.ndarray, ...]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)) or len(value) == 0:
        raise InvalidInputError("point_grids must be a non-empty list of [P, 2] arrays of (x, y) in [0, 1]")
    grids = []
    for index, grid in enumerate(value):
        try:
            array = np.asarray(grid, dtype=np.float64)
        except (TypeError, ValueError):
            raise InvalidInputError(f"point_grids[{index}] is not numeric") from None
        if array.ndim != 2 or array.shape[1] != 2 or len(array) == 0:
            raise InvalidInputError(f"point_grids[{index}] must have shape [P, 2], got {list(array.shape)}")
        if not (np.isfinite(array).all() and (array >= 0).all() and (array <= 1).all()):
            raise InvalidInputError(f"point_grids[{index}] must hold (x, y) fractions in [0, 1]")
        grids.append(array)
    return tuple(grids)


def auto_options(family: Family, **given: Any) -> AutoOptions:
    """Validated options for ``family``: the reference generator's defaults, overridden by ``given``.

    ``points_per_side`` and ``point_grids`` exclude each other (giving ``point_grids`` clears the default
    ``points_per_side``); ``point_grids`` needs one grid per layer (``crop_n_layers + 1``).

    Raises:
        InvalidInputError: ``family`` is ``sam3`` (no reference generator), an unknown option name or a value of the
            wrong type or range.
    """
    if family == "sam3":
        raise InvalidInputError(
            "sam3 has no segment-everything generator (Meta ships none to match): use segment_text / "
            "POST /v1/segment/text / segment-auto --text for every instance of a phrase"
        )
    unknown = sorted(set(given) - set(NAMES))
    if unknown:
        raise InvalidInputError(f"unknown option(s) {unknown}; valid options: {', '.join(NAMES)}")
    values: dict[str, Any] = {**_FAMILY_DEFAULTS.get(family, {}), **given}
    if values.get("point_grids") is not None:
        if given.get("points_per_side") is not None:
            raise InvalidInputError("give points_per_side or point_grids, not both")
        values["points_per_side"] = None
        values["point_grids"] = _grids(values["point_grids"])
    elif values.get("points_per_side", 32) is None:
        raise InvalidInputError("points_per_side is required when point_grids is not given")
    else:
        values["points_per_side"] = _integer(
            "points_per_side", values.get("points_per_side", 32), 1, MAX_POINTS_PER_SIDE
        )
    values["points_per_batch"] = _integer("points_per_batch", values.get("points_per_batch", 64), 1, 65536)
    for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
        if name in values:
            values[name] = _number(name, values[name], 0.0, 1.0)
    if "crop_overlap_ratio" in values:
        values["crop_overlap_ratio"] = _number("crop_overlap_ratio", values["crop_overlap_ratio"], 0.0, 0.99)
    for name in ("stability_score_offset", "mask_threshold"):
        if name in values:
            values[name] = _number(name, values[name], -1e4, 1e4)
    if "crop_n_layers" in values:
        values["crop_n_layers"] = _integer("crop_n_layers", values["crop_n_layers"], 0, MAX_CROP_LAYERS)
    if "crop_n_points_downscale_factor" in values:
        factor = values["crop_n_points_downscale_factor"]
        values["crop_n_points_downscale_factor"] = _integer("crop_n_points_downscale_factor", factor, 1, 64)
    if "min_mask_region_area" in values:
        values["min_mask_region_area"] = _integer("min_mask_region_area", values["min_mask_region_area"], 0, 2**40)
    for name in ("multimask_output", "use_m2m"):
        if name in values:
            values[name] = _flag(name, values[name])
    options = replace(AutoOptions(), **values)
    layers = options.crop_n_layers + 1
    if options.point_grids is not None and len(options.point_grids) != layers:
        raise InvalidInputError(f"point_grids needs one grid per crop layer ({layers}), got {len(options.point_grids)}")
    if options.points_per_side is not None:
        smallest = options.points_per_side // options.crop_n_points_downscale_factor**options.crop_n_layers
        if smallest < 1:
            raise InvalidInputError(
                f"points_per_side {options.points_per_side} / crop_n_points_downscale_factor"
                f"^{options.crop_n_layers} leaves no grid point in the last crop layer"
            )
    return options
