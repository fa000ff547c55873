"""What one app instance holds between requests, and the one path every inference request takes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ..config import SegmentorConfig
from ..exceptions import ModelLoadError
from ..models import EmbeddedImage
from .context import current_context, current_request_id
from .errors import ModelNotReadyError
from .image_ids import ImageIdRegistry
from .inference import InferenceService, Outcome
from .limits import InferenceRunner
from .metrics import ServiceMetrics
from .security import Principal

__all__ = ["ServiceState", "get_state"]

_LOADING_RETRY_AFTER_S = 5


@dataclass
class ServiceState:
    """Per-app state; ``service`` and ``runner`` exist only while the lifespan runs and the model is loaded."""

    config: SegmentorConfig
    metrics: ServiceMetrics
    ids: ImageIdRegistry = field(default_factory=ImageIdRegistry)
    runner: InferenceRunner | None = None
    service: InferenceService | None = None
    load_error: BaseException | None = None

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

    def source(self, image: str | None, image_id: str | None, principal: Principal) -> str | EmbeddedImage:
        """The request's image, or the handle its ``image_id`` names within the caller's scope (else 404)."""
        if image_id is not None:
            return self.ids.resolve(principal.scope, image_id)
        assert image is not None  # the request schemas require exactly one of the two
        return image

    async def execute(self, job: Callable[[InferenceService], Outcome], *, prompts: int) -> dict[str, Any]:
        """Run ``job`` through the bounded runner; record stages, prompt count and cache hit; add ``request_id``."""
        service, runner = self.require_service()
        context = current_context()
        if context is not None:
            context.prompts = prompts
        outcome = await runner.run(lambda: job(service))
        if context is not None:
            context.cache_hit = outcome.cache_hit
        self.metrics.observe_stages(outcome.stages)
        return {**outcome.body, "request_id": current_request_id() or ""}


def get_state(request: Request) -> ServiceState:
    state = request.app.state.service
    assert isinstance(state, ServiceState)
    return state
