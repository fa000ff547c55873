"""Request and response bodies of the REST API (pydantic models; they are also the OpenAPI schema).

Coordinates are pixels of the original image: boxes ``[x1, y1, x2, y2]`` (XYXY, ``x`` along the width), points
``{x, y, label}`` with label 1 = foreground, 0 = background. Structural problems (wrong types, missing fields,
unknown fields, NaN) are 422; values that are well-formed but wrong for the image (a box outside it, ``x1 >= x2``)
are 400 from the SDK's validation.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..decoding import Strategy
from ..utils.masks import JsonOutputFormat

__all__ = [
    "AutoOptionsIn",
    "AutoRequest",
    "BoxRequest",
    "EmbedRequest",
    "EmbedResponse",
    "ErrorBody",
    "ErrorResponse",
    "HealthResponse",
    "LowResLogits",
    "MaskResult",
    "OutputFormat",
    "PointIn",
    "PointsRequest",
    "PromptIn",
    "ReadyResponse",
    "Rle",
    "SegmentListResponse",
    "SegmentOptions",
    "SegmentRequest",
    "SegmentResponse",
]

#: Named enums for the OpenAPI schema (``#/components/schemas/Strategy`` / ``OutputFormat``), built from the one
#: definition of each set (:data:`perceptra_seg.decoding.Strategy`, :data:`perceptra_seg.utils.masks.JsonOutputFormat`:
#: numpy arrays cannot travel as JSON). Members are ``str``: ``StrategyName.all == "all"``.
StrategyName = enum.Enum("Strategy", [(name, name) for name in get_args(Strategy)], type=str)  # type: ignore[misc]
OutputFormat = enum.Enum("OutputFormat", [(name, name) for name in get_args(JsonOutputFormat)], type=str)  # type: ignore[misc]
Coordinate = Annotated[float, Field(allow_inf_nan=False)]
Box = Annotated[list[Coordinate], Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] in pixels")]
ImageId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$", description="id returned by POST /v1/embed")]

_IMAGE_DESCRIPTION = (
    "base64 of the encoded image (JPEG, PNG, WEBP, BMP, TIFF), optionally as a data: URI; or an http(s) URL when "
    "the server allows URL images"
)
_FORMATS_DESCRIPTION = "mask encodings to return; default: the configured formats (rle when none applies)"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PointIn(_Body):
    x: Coordinate
    y: Coordinate
    label: Literal[0, 1] = Field(1, description="1 = foreground, 0 = background")


class PromptIn(_Body):
    """One object: a box, points, or both."""

    box: Box | None = None
    points: list[PointIn] | None = None


class _ImageSource(_Body):
    image: str | None = Field(None, description=_IMAGE_DESCRIPTION)
    image_id: ImageId | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> Any:
        if (self.image is None) == (self.image_id is None):
            raise ValueError("send exactly one of 'image' and 'image_id'")
        return self


class LowResLogits(_Body):
    """A mask's low-resolution logits: ``size`` x ``size`` float32, little-endian, row-major, base64."""

    size: int = Field(ge=1, le=1024, description="L: 256 for Meta's models, 128 for the demo model")
    data: str = Field(description="base64 of the L x L float32 values (little-endian, row-major)")


_MIN_SCORE_DESCRIPTION = "drop masks whose predicted IoU is below this; default: postprocess.min_score"
_MIN_STABILITY_DESCRIPTION = "drop masks whose stability score is below this; default: postprocess.min_stability"


class _Refinable(_ImageSource):
    output_formats: list[OutputFormat] | None = Field(None, description=_FORMATS_DESCRIPTION)
    min_score: Coordinate | None = Field(None, description=_MIN_SCORE_DESCRIPTION + " (then 404)")
    min_stability: float | None = Field(None, ge=0, le=1, description=_MIN_STABILITY_DESCRIPTION + " (then 404)")
    multimask: bool = Field(False, description="score 3 candidate masks and return the best")
    return_logits: bool = Field(False, description="add the mask's low_res_logits, to send back as mask_input")
    mask_input: LowResLogits | None = Field(
        None, description="a previous response's low_res_logits for this object: refine it with these prompts"
    )


class BoxRequest(_Refinable):
    box: Box


class PointsRequest(_Refinable):
    points: list[PointIn] = Field(min_length=1)


class SegmentOptions(_Body):
    """Everything of :class:`SegmentRequest` except the image (the ``request`` field of an upload)."""

    prompts: list[PromptIn] | None = Field(None, description="one entry per object")
    boxes: list[Box] | None = Field(None, description="flat form: each box is its own object")
    points: list[PointIn] | None = Field(None, description="flat form: all points together are one object")
    strategy: StrategyName = Field(
        StrategyName("all"),
        description="all: one result per mask; best: the highest score; largest: the most pixels; merge: the union",
    )
    output_formats: list[OutputFormat] | None = Field(None, description=_FORMATS_DESCRIPTION)
    multimask: bool = Field(False, description="3 masks per prompt instead of 1")
    min_score: Coordinate | None = Field(None, description=_MIN_SCORE_DESCRIPTION)
    min_stability: float | None = Field(None, ge=0, le=1, description=_MIN_STABILITY_DESCRIPTION)


class AutoOptionsIn(_Body):
    """Options of ``/v1/segment/auto``, named as in Meta's automatic mask generators; unset = the model family's
    default (see docs/automatic.md)."""

    points_per_side: int | None = Field(None, ge=1, description="grid points per crop side (default 32)")
    points_per_batch: int | None = Field(None, ge=1, description="grid points per decoder call")
    pred_iou_thresh: float | None = Field(None, description="keep masks whose predicted IoU is above this")
    stability_score_thresh: float | None = Field(None, description="keep masks at least this stable")
    stability_score_offset: float | None = Field(None, description="logit offset of the stability score")
    box_nms_thresh: float | None = Field(None, description="box IoU above which a crop's duplicate is dropped")
    crop_n_layers: int | None = Field(None, ge=0, description="extra layers of image crops (default 0)")
    crop_nms_thresh: float | None = Field(None, description="box IoU of the NMS across crops")
    crop_overlap_ratio: float | None = Field(None, description="overlap of the first crop layer")
    crop_n_points_downscale_factor: int | None = Field(None, ge=1, description="fewer points per deeper layer")
    min_mask_region_area: int | None = Field(None, ge=0, description="remove islands / holes smaller than this")
    multimask_output: bool | None = Field(None, description="three masks per grid point")
    use_m2m: bool | None = Field(None, description="SAM 2: refine each mask once with its own logits")
    mask_threshold: float | None = Field(None, description="logit threshold of a mask")
    output_formats: list[OutputFormat] | None = Field(None, description=_FORMATS_DESCRIPTION)

    def generator_options(self) -> dict[str, Any]:
        """The options that were set, as :class:`~perceptra_seg.requests.AutoMaskRequest` takes them."""
        return self.model_dump(exclude_none=True, exclude={"output_formats", "image", "image_id"})


class AutoRequest(_ImageSource, AutoOptionsIn):
    """Segment everything on one image (``image`` or ``image_id``)."""


class SegmentRequest(_ImageSource, SegmentOptions):
    """Any number of objects on one image: ``prompts``, and/or the flat ``boxes`` + ``points`` form."""


class EmbedRequest(_Body):
    image: str = Field(description=_IMAGE_DESCRIPTION)


class EmbedResponse(BaseModel):
    image_id: str = Field(description="send as image_id to the segment endpoints; valid for this API key only")
    width: int
    height: int
    latency_ms: float
    request_id: str


class Rle(BaseModel):
    """A mask as COCO run-length encoding (decode with ``pycocotools.mask.decode`` after encoding ``counts`` to
    bytes, or ``perceptra_seg.utils.masks.rle_to_mask``)."""

    size: list[int] = Field(min_length=2, max_length=2, description="[H, W] of the mask in pixels")
    counts: str | list[int] = Field(
        description="compressed COCO counts string (default), or the run lengths (outputs.rle_compressed: false)"
    )


class MaskResult(BaseModel):
    """One mask. Only the requested encodings are present."""

    score: float = Field(description="the model's predicted IoU of this mask")
    area: int = Field(description="foreground pixels")
    bbox: list[int] = Field(description="[x1, y1, x2, y2] of the foreground, x2/y2 exclusive; zeros when empty")
    prompt_index: int = Field(description="index of the prompt this mask answers; -1 for a merged mask")
    rle: Rle | None = Field(None, description="COCO RLE of the mask")
    png_base64: str | None = Field(None, description="base64 of a single-channel PNG of the mask")
    polygons: list[list[list[list[float]]]] | None = Field(
        None, description="polygons, each a list of rings (exterior first, then holes) of [x, y] points"
    )
    stability_score: float | None = Field(None, description="/v1/segment/auto: stability of the mask")
    point_coords: list[list[float]] | None = Field(None, description="/v1/segment/auto: the grid point [[x, y]]")
    crop_box: list[int] | None = Field(None, description="/v1/segment/auto: [x0, y0, x1, y1] of the crop")
    label: str | None = Field(None, description="/v1/segment/text: the phrase this instance matches")


class SegmentResponse(MaskResult):
    low_res_logits: LowResLogits | None = Field(None, description="with return_logits: pass back as mask_input")
    latency_ms: float = Field(description="server-side processing time, queue wait excluded")
    model_info: dict[str, Any]
    request_id: str


class SegmentListResponse(BaseModel):
    results: list[MaskResult]
    latency_ms: float = Field(description="server-side processing time, queue wait excluded")
    model_info: dict[str, Any]
    request_id: str


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    model_info: dict[str, Any]


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None


class ErrorResponse(BaseModel):
    error: ErrorBody
