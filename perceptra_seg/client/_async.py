"""The asyncio client, :class:`AsyncClient`: the same methods as :class:`~._sync.Client`, awaited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from ..models import EmbeddedImage, Prompt, SegmentationResult
from ..results import ResultSet
from ._calls import auto as auto_call
from ._calls import box as box_call
from ._calls import embed as embed_call
from ._calls import many as many_call
from ._calls import points as points_call
from ._sync import Formats, headers_for, outcome, transport_error, wait_for
from ._wire import Call, RetryPolicy

__all__ = ["AsyncClient"]


class AsyncClient:
    """An asyncio client of the perceptra-seg REST service (see :class:`~perceptra_seg.client.Client` for the
    arguments, the methods and the errors)::

        async with AsyncClient("http://127.0.0.1:8000", api_key="...") as client:
            results = await client.segment("photo.jpg", boxes=[(40, 30, 200, 180)])
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout = 60.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers_for(api_key), timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _send(self, call: Call) -> Any:
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                response = await self._http.post(call.path, json=call.body)
            except httpx.HTTPError as exc:
                raise transport_error(exc) from None
            body, error = outcome(response)
            if error is None:
                assert body is not None
                return call.parse(body)
            delay = wait_for(self.retry, attempt, error, started)
            if delay is None:
                raise error
            await asyncio.sleep(delay)
            attempt += 1

    async def embed(self, image: Any) -> EmbeddedImage:
        """See :meth:`Client.embed <perceptra_seg.client.Client.embed>`."""
        result: EmbeddedImage = await self._send(embed_call(image))
        return result

    async def segment_box(
        self,
        image: Any,
        box: Sequence[float],
        *,
        output_formats: Formats = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_logits: bool = False,
    ) -> SegmentationResult:
        """See :meth:`Client.segment_box <perceptra_seg.client.Client.segment_box>`."""
        result: SegmentationResult = await self._send(
            box_call(image, box, output_formats, multimask, mask_input, return_logits)
        )
        return result

    async def segment_points(
        self,
        image: Any,
        points: Iterable[Any],
        *,
        output_formats: Formats = None,
        multimask: bool = False,
        mask_input: np.ndarray | None = None,
        return_logits: bool = False,
    ) -> SegmentationResult:
        """See :meth:`Client.segment_points <perceptra_seg.client.Client.segment_points>`."""
        result: SegmentationResult = await self._send(
            points_call(image, points, output_formats, multimask, mask_input, return_logits)
        )
        return result

    async def segment(
        self,
        image: Any,
        prompts: Iterable[Prompt | Mapping[str, Any]] | None = None,
        boxes: Iterable[Sequence[float]] | None = None,
        points: Iterable[Any] | None = None,
        *,
        strategy: str = "all",
        output_formats: Formats = None,
        multimask: bool = False,
    ) -> ResultSet:
        """See :meth:`Client.segment <perceptra_seg.client.Client.segment>`."""
        result: ResultSet = await self._send(
            many_call(image, prompts, boxes, points, strategy, output_formats, multimask)
        )
        return result

    async def segment_auto(self, image: Any, *, output_formats: Formats = None, **options: Any) -> ResultSet:
        """See :meth:`Client.segment_auto <perceptra_seg.client.Client.segment_auto>`."""
        result: ResultSet = await self._send(auto_call(image, output_formats, options))
        return result
