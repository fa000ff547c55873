"""One image of a ``POST /v1/batch`` job (:class:`BatchItem`) and how it runs (:func:`run_item`).

An item runs through :meth:`ServiceState.execute <perceptra_seg.service.state.ServiceState.execute>` exactly as a
``/v1/segment`` request would; what goes wrong with it becomes its slot's ``error`` instead of an HTTP answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import SegmentorError
from ..utils.masks import OutputFormat
from .calls import Source, segment_call
from .errors import QueueFullError
from .schemas import SegmentOptions
from .url_fetch import is_url

if TYPE_CHECKING:
    from .state import ServiceState

__all__ = ["BatchItem", "run_item"]

logger = logging.getLogger("perceptra_seg.service.batch")


@dataclass
class BatchItem:
    """One image of a job: ``image`` (base64 / data URI / URL text, or uploaded bytes) or ``image_id``, and what to
    ask about it (``formats`` already resolved against the service's defaults)."""

    image: str | bytes | None
    image_id: str | None
    options: SegmentOptions
    formats: tuple[OutputFormat, ...]


async def run_item(state: ServiceState, scope: str, index: int, item: BatchItem) -> dict[str, Any]:
    """One image through the service's runner: its slot, ``done`` with ``results`` (the ``/v1/segment`` shapes)
    and ``latency_ms``, or ``failed`` with ``error`` (``code``, ``message``)."""
    try:
        source = await _source(state, scope, item)
        call = segment_call(item.options, source, item.formats, None)
        while True:
            try:
                body = await state.execute(call)
                break
            except QueueFullError as exc:  # interactive requests fill the queue: wait for room, do not fail
                await asyncio.sleep(exc.retry_after)
    except SegmentorError as exc:
        return {"index": index, "status": "failed", "error": {"code": exc.code, "message": str(exc)}}
    except Exception:  # as REST's 500: the cause goes to the log only
        logger.exception("batch image %d failed", index)
        return {"index": index, "status": "failed", "error": {"code": "internal_error", "message": "internal error"}}
    return {"index": index, "status": "done", "results": body["results"], "latency_ms": body["latency_ms"]}


async def _source(state: ServiceState, scope: str, item: BatchItem) -> Source:
    """The item's image: the embedded handle of its ``image_id``, a downloaded URL, or its text / bytes."""
    if item.image_id is not None:
        return await state.resolve_id(scope, item.image_id)
    assert item.image is not None
    if isinstance(item.image, str) and is_url(item.image) and state.fetcher is not None:
        while True:
            try:
                return await state.fetcher.load(item.image)
            except QueueFullError as exc:  # every download thread is busy: wait for one
                await asyncio.sleep(exc.retry_after)
    return item.image
