"""What travels between the client and the service: request bodies out, results in, and when to retry.

Nothing here does I/O; :mod:`._sync` and :mod:`._async` send what :class:`Call` describes and hand the answer to
its ``parse``. Coordinates are pixels of the original image: boxes ``(x1, y1, x2, y2)`` (XYXY), points
``(x, y, label)`` with label 1 = foreground, 0 = background.
"""

from __future__ import annotations

import base64
import email.utils
import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import InvalidInputError
from ..models import EmbeddedImage, Prompt, SegmentationResult
from ..results import CallInfo, ResultSet
from ..utils.logits import decode_logits
from ..utils.masks import rle_to_mask

__all__ = ["Call", "RetryPolicy", "embed_call", "retry_delay", "segment_call"]


@dataclass(frozen=True)
class RetryPolicy:
    """When a rejected call (HTTP 429, or 503 other than ``model_load_error``) is sent again.

    The server rejects such calls before running them, so sending one again is safe. The wait before retry ``n``
    (0-based) is the answer's ``Retry-After`` when it has one, else ``backoff_s * 2**n``, capped at
    ``max_backoff_s``; a retry whose wait would end after ``total_s`` seconds since the first attempt is not made
    (the error is raised instead).

    Attributes:
        max_retries: retries after the first attempt (0 = never retry).
        backoff_s: first wait when the server sends no ``Retry-After``.
        max_backoff_s: the longest single wait, ``Retry-After`` included.
        total_s: the longest time from the first attempt to the start of the last one.
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    total_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.backoff_s < 0 or self.max_backoff_s < 0 or self.total_s < 0:
            raise InvalidInputError("retry settings must be non-negative")


def retry_after_seconds(header: str | None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; ``None`` when absent or unreadable."""
    if not header:
        return None
    text = header.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def retry_delay(
    policy: RetryPolicy, attempt: int, status: int, code: str | None, retry_after: float | None, elapsed_s: float
) -> float | None:
    """Seconds to wait before retry ``attempt`` (0-based), or ``None`` when this answer is not retried."""
    if status not in (429, 503) or code == "model_load_error" or attempt >= policy.max_retries:
        return None
    wait = retry_after if retry_after is not None else policy.backoff_s * (2**attempt)
    wait = min(wait, policy.max_backoff_s)
    if elapsed_s + wait > policy.total_s:
        return None
    return wait


@dataclass(frozen=True)
class Call:
    """One REST call: ``POST path`` with the JSON ``body``; ``parse`` turns the 200 answer into the result."""

    path: str
    body: dict[str, Any]
    parse: Callable[[dict[str, Any]], Any]


# ---------------------------------------------------------------------------------------------------- requests out


def image_fields(image: Any) -> tuple[dict[str, str], tuple[int, int] | None]:
    """``{"image": base64}`` / ``{"image": url}`` / ``{"image_id": id}`` for ``image``, and its ``(H, W)`` when
    known here.

    ``image`` is an :class:`~perceptra_seg.models.EmbeddedImage` (from :meth:`Client.embed`), encoded bytes, a
    path (``str`` or :class:`~pathlib.Path`), an ``http(s)://`` URL (fetched by the server when it allows URLs) or
    a ``data:`` URI,
    a PIL image, or a uint8 numpy ``[H, W]`` / ``[H, W, 3]`` / ``[H, W, 4]`` array (sent as PNG: lossless).
    """
    if isinstance(image, EmbeddedImage):
        return {"image_id": image.image_id}, (image.height, image.width)
    if isinstance(image, str) and image.startswith(("http://", "https://", "data:")):
        return {"image": image}, None  # a URL the server fetches, or a data: URI it decodes
    if isinstance(image, (str, Path)):
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot read image file {str(image)!r}: {exc.strerror or exc}") from None
        return _encoded(data)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _encoded(bytes(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise InvalidInputError(
                f"a numpy image must be uint8 [H, W], [H, W, 3] or [H, W, 4]; got {image.dtype} {list(image.shape)}"
            )
        from PIL import Image as PILImage

        return _encoded(_png(PILImage.fromarray(image)))
    from PIL import Image

    if isinstance(image, Image.Image):
        return _encoded(_png(image))
    raise InvalidInputError(
        f"unsupported image type {type(image).__name__}: pass bytes, a path, a URL, a PIL image, a uint8 numpy "
        "array or an EmbeddedImage"
    )


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _encoded(data: bytes) -> tuple[dict[str, str], tuple[int, int] | None]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:  # reads the header only
            size: tuple[int, int] | None = (int(opened.height), int(opened.width))
    except (UnidentifiedImageError, OSError, ValueError):
        size = None  # the server says what is wrong with it
    return {"image": base64.b64encode(data).decode("ascii")}, size


def formats_field(output_formats: Sequence[str] | str | None) -> list[str] | None:
    """The wire formats for ``output_formats``: ``numpy`` travels as ``rle`` (decoded into ``mask`` here)."""
    if output_formats is None:
        return None
    names = [output_formats] if isinstance(output_formats, str) else list(output_formats)
    wire = ["rle" if name == "numpy" else name for name in names]
    return list(dict.fromkeys(wire))


def box_field(box: Sequence[float]) -> list[float]:
    values = [float(v) for v in box]
    if len(values) != 4:
        raise InvalidInputError(f"a box is (x1, y1, x2, y2); got {len(values)} numbers")
    return values


def points_field(points: Iterable[Any]) -> list[dict[str, Any]]:
    """``[{"x", "y", "label"}]`` from ``(x, y, label)`` sequences or ``{"x", "y", "label"}`` mappings."""
    out = []
    for point in points:
        if isinstance(point, Mapping):
            out.append({"x": float(point["x"]), "y": float(point["y"]), "label": int(point.get("label", 1))})
            continue
        values = list(point)
        if len(values) != 3:
            raise InvalidInputError(f"a point is (x, y, label); got {len(values)} numbers")
        out.append({"x": float(values[0]), "y": float(values[1]), "label": int(values[2])})
    return out


def prompt_field(prompt: Prompt | Mapping[str, Any]) -> dict[str, Any]:
    """One ``PromptIn`` of ``/v1/segment``; ``mask_input`` is refused (REST refines one object per call)."""
    box: Any
    points: Any
    if isinstance(prompt, Prompt):
        box, points, mask_input = prompt.box, prompt.points, prompt.mask_input
    else:
        box, points, mask_input = prompt.get("box"), prompt.get("points"), prompt.get("mask_input")
    if mask_input is not None:
        raise InvalidInputError("mask_input is not sent with segment(); refine one object with segment_points/_box")
    out: dict[str, Any] = {}
    if box is not None:
        out["box"] = box_field(box)
    if points:
        out["points"] = points_field(points)
    return out


# ------------------------------------------------------------------------------------------------------ results in


def _result(doc: Mapping[str, Any], top: Mapping[str, Any]) -> SegmentationResult:
    """A :class:`SegmentationResult` from one mask document of the service (see ``results.mask_document``)."""
    rle = doc.get("rle")
    png = doc.get("png_base64")
    logits = doc.get("low_res_logits")
    low_res = None
    if logits is not None:
        low_res = decode_logits(int(logits["size"]), logits["data"])
    crop = doc.get("crop_box")
    return SegmentationResult(
        score=float(doc["score"]),
        area=int(doc["area"]),
        bbox=tuple(int(v) for v in doc["bbox"]),  # type: ignore[arg-type]
        latency_ms=float(top.get("latency_ms", 0.0)),
        model_info=dict(top.get("model_info", {})),
        request_id=str(top.get("request_id", "")),
        prompt_index=int(doc.get("prompt_index", 0)),
        mask=rle_to_mask(rle) if rle is not None else None,
        rle=rle,
        polygons=doc.get("polygons"),
        png_bytes=base64.b64decode(png) if png is not None else None,
        low_res_logits=low_res,
        stability_score=doc.get("stability_score"),
        point_coords=doc.get("point_coords"),
        crop_box=tuple(int(v) for v in crop) if crop is not None else None,  # type: ignore[arg-type]
    )


def _image_size(results: Sequence[SegmentationResult], known: tuple[int, int] | None) -> tuple[int, int]:
    if known is not None:
        return known
    for result in results:
        if result.mask is not None:
            return (int(result.mask.shape[0]), int(result.mask.shape[1]))
        if result.png_bytes is not None:
            from PIL import Image

            with Image.open(io.BytesIO(result.png_bytes)) as opened:
                return (int(opened.height), int(opened.width))
    return (0, 0)  # no mask and no encoding that tells (e.g. polygons only, image by URL)


def result_set(body: Mapping[str, Any], known: tuple[int, int] | None, *, single: bool) -> ResultSet:
    """The :class:`ResultSet` of a segment answer (``single``: one mask at the top level)."""
    docs = [body] if single else list(body["results"])
    results = [_result(doc, body) for doc in docs]
    info = CallInfo(
        request_id=str(body.get("request_id", "")),
        model_info=dict(body.get("model_info", {})),
        latency_ms=float(body.get("latency_ms", 0.0)),
    )
    return ResultSet(results, info, _image_size(results, known))


def embed_call(image: Any) -> Call:
    fields, _ = image_fields(image)
    if "image_id" in fields:
        raise InvalidInputError("embed() takes an image, not an EmbeddedImage")

    def parse(body: dict[str, Any]) -> EmbeddedImage:
        return EmbeddedImage(str(body["image_id"]), int(body["width"]), int(body["height"]))

    return Call("/v1/embed", dict(fields), parse)


def segment_call(path: str, image: Any, options: dict[str, Any], *, single: bool) -> Call:
    """``POST path`` with the image fields plus ``options`` (``None`` values left out)."""
    fields, size = image_fields(image)
    body: dict[str, Any] = {**fields, **{k: v for k, v in options.items() if v is not None}}

    def parse(answer: dict[str, Any]) -> Any:
        results = result_set(answer, size, single=single)
        return results[0] if single else results

    return Call(path, body, parse)
