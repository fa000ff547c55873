"""What one app instance holds between requests, and the one path every inference request takes."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

from ..cancel import CancelToken, OperationCancelledError
from ..config import SegmentorConfig
from ..exceptions import ModelLoadError
from ..models import EmbeddedImage
from ..utils.masks import OutputFormat
from .calls import ServiceCall, Source
from .errors import ModelNotReadyError, RequestTooLargeError
from .image_ids import ImageIdRegistry
from .inference import InferenceService
from .limits import InferenceRunner
from .metrics import ServiceMetrics
from .request_context import current_context
from .security import Principal
from .shared_ids import ImageIds, SharedImageIds
from .url_fetch import UrlFetcher, is_url
from .video_store import VideoStore

if TYPE_CHECKING:
    from .batch_jobs import BatchStore

__all__ = ["ServiceState", "get_state"]

T = TypeVar("T")

_LOADING_RETRY_AFTER_S = 5


@dataclass
class ServiceState:
    """Per-app state; ``service`` and ``runner`` exist only while the lifespan runs and the model is loaded."""

    config: SegmentorConfig
    metrics: ServiceMetrics
    ids: ImageIds = field(default_factory=ImageIdRegistry)
    runner: InferenceRunner | None = None
    service: InferenceService | None = None
    fetcher: UrlFetcher | None = None
    load_error: BaseException | None = None
    videos: VideoStore | None = None
    batches: BatchStore | None = None

    def require_service(self) -> tuple[InferenceService, InferenceRunner]:
        """The loaded pipeline.

        Raises:
            ModelNotReadyError: still loading (503, ``Retry-After``).
            ModelLoadError: loading failed (503; the cause is in the server log only).
        """
        if self.service is None or self.runner is None:
            if self.load_error is not None:
                raise ModelLoadError("the model failed to load; see the server log")
            raise ModelNotReadyError("the model is loading; retry shortly", retry_after=_LOADING_RETRY_AFTER_S)
        return self.service, self.runner

    async def source(
        self, image: str | None, image_id: str | None, principal: Principal, request: Request | None = None
    ) -> Source:
        """The request's image, or the handle its ``image_id`` names within the caller's scope (else 404).

        An image URL (when ``input.allow_urls`` is on) is downloaded here, before admission to the inference runner,
        by the bounded :class:`UrlFetcher`; its bytes are returned (decoded in the slot). When the client of
        ``request`` disconnects meanwhile, the download is stopped at once (its socket is shut down) and
        :class:`~perceptra_seg.cancel.OperationCancelledError` is raised, so it does not keep a download thread.
        """
        if image_id is not None:
            return await self.resolve_id(principal.scope, image_id)
        assert image is not None  # the request schemas require exactly one of the two
        if self.fetcher is not None and is_url(image):
            self.require_service()  # no download for a server that cannot answer anyway
            start = time.perf_counter()
            data = await _unless_disconnected(self.fetcher.load(image), request)
            self.metrics.observe_stages({"fetch_image": time.perf_counter() - start})
            return data
        return image

    async def resolve_id(self, scope: str, image_id: str) -> EmbeddedImage:
        """The handle ``image_id`` names in ``scope`` (404 if none); shared ids are looked up in a worker thread."""
        if isinstance(self.ids, SharedImageIds):
            self.require_service()  # the shared registry needs the loaded model
            return await asyncio.to_thread(self.ids.resolve, scope, image_id)
        return self.ids.resolve(scope, image_id)

    def formats(self, output_formats: Sequence[str | enum.Enum] | None) -> tuple[OutputFormat, ...]:
        """The request's output formats, or the service's defaults (see :meth:`InferenceService.formats`)."""
        service, _ = self.require_service()
        return service.formats(output_formats)

    def check_work(self, prompts: int, *, multimask: bool, formats: Sequence[OutputFormat]) -> None:
        """413 when ``prompts`` × masks per prompt × output formats is over ``server.max_mask_outputs``."""
        masks = 3 if multimask else 1
        encodings = max(1, len(formats))
        work = prompts * masks * encodings
        limit = self.config.server.max_mask_outputs
        if work > limit:
            raise RequestTooLargeError(
                f"request asks for {prompts} prompts x {masks} masks x {encodings} output formats = {work} mask "
                f"outputs, over the limit of {limit} (server.max_mask_outputs)"
            )

    def check_auto_work(self, points: int) -> None:
        """413 when an automatic-mask request asks about more grid points than ``server.max_auto_points``."""
        limit = self.config.server.max_auto_points
        if points > limit:
            raise RequestTooLargeError(
                f"request asks the decoder about {points} grid points (points per side, crop layers and the "
                f"downscale factor together), over the limit of {limit} (server.max_auto_points)"
            )

    async def execute(
        self, call: ServiceCall, request: Request | None = None, *, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """Run ``call`` through the bounded runner; record stages, prompt count and cache hit.

        ``timeout_s`` replaces ``server.request_timeout_s`` as the deadline (video propagation).

        The call gets a :class:`CancelToken` that is set when the deadline passes (by the runner) or when the client
        of ``request`` disconnects (watched here once the body has been read), so abandoned work stops early.
        """
        service, runner = self.require_service()
        context = current_context()
        if context is not None:
            context.prompts = call.prompts
        token = CancelToken()
        watcher = asyncio.create_task(_watch_disconnect(request, token)) if request is not None else None
        try:
            outcome = await runner.run(partial(service.run, call, token), cancel=token, timeout_s=timeout_s)
        finally:
            if watcher is not None:
                watcher.cancel()
        if context is not None:
            context.cache_hit = outcome.cache_hit
        self.metrics.observe_stages(outcome.stages)
        return outcome.body


async def _unless_disconnected(work: Coroutine[Any, Any, T], request: Request | None) -> T:
    """Await ``work``; cancel it and raise :class:`OperationCancelledError` if ``request``'s client goes away first."""
    task = asyncio.ensure_future(work)
    if request is None:
        return await task
    token = CancelToken()
    watcher = asyncio.create_task(_watch_disconnect(request, token))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # also when this request's own task is cancelled
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise OperationCancelledError(f"operation cancelled: {token.reason or 'client disconnected'}")
    return task.result()


async def _watch_disconnect(request: Request, token: CancelToken) -> None:
    """Set ``token`` when the client goes away (the body was read already: the next message is the disconnect)."""
    try:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                token.cancel("client disconnected")
                return
    except Exception:  # a broken receive channel means the client is gone as well
        token.cancel("client disconnected")


def get_state(request: Request) -> ServiceState:
    state = request.app.state.service
    assert isinstance(state, ServiceState)
    return state
