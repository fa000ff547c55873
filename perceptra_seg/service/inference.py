"""The service's inference step: run one :class:`~perceptra_seg.service.calls.ServiceCall` on the Segmentor and
shape its answer.

Everything here is blocking and runs on the :class:`~perceptra_seg.service.limits.InferenceRunner`'s threads. The
SDK decodes the image (once, under the service's input policy: base64/data-URI text or bytes, never a server path,
never a URL — URLs are downloaded before admission by :class:`~perceptra_seg.service.url_fetch.UrlFetcher`), runs
the model and reports its stage timings; this module only turns the result into the response body.

Stages (``segmentor_inference_stage_seconds{stage}``): ``fetch_image`` (download of an image URL, before admission),
``decode_image``, ``encode`` (absent on an embedding-cache hit), ``decode_masks`` and ``outputs`` (see
:mod:`perceptra_seg.timings`; JSON shaping is added to ``outputs`` here).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ..cancel import CancelToken
from ..config import SegmentorConfig
from ..core import Segmentor
from ..inputs import InputPolicy
from ..results import EmbedResult
from ..utils.logits import encode_logits
from ..utils.masks import OutputFormat
from .calls import ServiceCall, ServiceWork
from .shared_ids import ImageIds

__all__ = ["InferenceService", "Outcome", "service_input_policy"]


def service_input_policy(config: SegmentorConfig) -> InputPolicy:
    """The ``input`` limits of ``config`` for images from network peers: text is a data: URI or base64, never a
    server path; a URL is never fetched by the SDK (the service downloads it before admission, see
    :mod:`perceptra_seg.service.url_fetch`, and a URL that reaches the SDK means URL images are off)."""
    return InputPolicy.from_config(config.input, allow_paths=False, allow_urls=False)


@dataclass
class Outcome:
    """What a route needs to answer: response fields plus what goes into logs and metrics."""

    body: dict[str, Any]
    prompts: int
    cache_hit: bool
    stages: dict[str, float] = field(default_factory=dict)


class InferenceService:
    """Runs service calls against one :class:`Segmentor` (blocking; call from worker threads).

    Args:
        segmentor: the loaded Segmentor, built with the service's input policy (no paths, no URLs).
        config: the effective configuration (default output formats).
        ids: the registry that scopes public image ids to API keys.
    """

    def __init__(self, segmentor: Segmentor, *, config: SegmentorConfig, ids: ImageIds) -> None:
        self.segmentor = segmentor
        self.ids = ids
        configured = [f for f in config.outputs.formats if f != "numpy"]
        self.default_formats = cast(tuple[OutputFormat, ...], tuple(configured or ["rle"]))

    def formats(self, output_formats: Sequence[str | enum.Enum] | None) -> tuple[OutputFormat, ...]:
        """The request's output formats (the schema's ``OutputFormat`` members or their names), or the configured
        defaults (numpy arrays cannot travel as JSON)."""
        if output_formats is None:
            return self.default_formats
        names = tuple(item.value if isinstance(item, enum.Enum) else item for item in output_formats)
        return cast(tuple[OutputFormat, ...], names)

    def run(self, call: ServiceCall, cancel: CancelToken) -> Outcome:
        """Execute ``call.request`` with the request's cancel token and shape the response body."""
        if isinstance(call.request, ServiceWork):
            body, stages = call.request.execute(self.segmentor, cancel)
            return Outcome(body=body, prompts=call.prompts, cache_hit=False, stages=stages)
        result = self.segmentor.run(call.request, cancel=cancel)
        stages = dict(result.info.stages_s)
        if isinstance(result, EmbedResult):
            body = self._embed_body(result, call.scope)
        elif call.answer == "session":  # shaped by the session itself, which keeps the logits
            body = {"results": result}
        else:
            shaping_start = time.perf_counter()
            body = result.to_dict(single=call.answer == "mask")
            if call.logits and result and result[0].low_res_logits is not None:
                body["low_res_logits"] = encode_logits(result[0].low_res_logits)
            stages["outputs"] += time.perf_counter() - shaping_start
        return Outcome(body=body, prompts=call.prompts, cache_hit=result.info.cache_hit, stages=stages)

    def _embed_body(self, result: EmbedResult, scope: str) -> dict[str, Any]:
        handle = result.handle
        return {
            "image_id": self.ids.public_id(scope, handle),
            "width": handle.width,
            "height": handle.height,
            "latency_ms": result.info.latency_ms,
            "request_id": result.info.request_id,
        }
