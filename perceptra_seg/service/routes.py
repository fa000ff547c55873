"""The HTTP endpoints. Each one parses its body, hands one SDK call to the inference pipeline, and returns JSON.

============================  ==========================================================================
``POST /v1/embed``            image → ``{image_id, width, height}`` (encoder runs once, embedding kept)
``POST /v1/embed/upload``     the same with a multipart ``file``
``POST /v1/segment/box``      one box → the best mask
``POST /v1/segment/points``   clicks → the best mask
``POST /v1/segment``          any number of prompts → ``results`` (one per mask; ``strategy`` decides)
``POST /v1/segment/upload``   multipart ``file`` + ``request`` (JSON of the ``/v1/segment`` options)
``GET /v1/healthz``           liveness: answers whenever the event loop runs
``GET /v1/readyz``            readiness: 200 only after the model loaded and a warm-up ran
``GET /metrics``              Prometheus text format
============================  ==========================================================================
"""

# No ``from __future__ import annotations``: FastAPI must see the dependency types built inside build_router.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import Response
from pydantic import ValidationError

from ..config import ServerConfig
from ..core import Segmentor
from ..exceptions import ImageTooLargeError, SegmentorError
from ..models import SegmentationResult
from .errors import error_response
from .inference import InferenceService, Outcome, Source
from .metrics import CONTENT_TYPE_LATEST
from .schemas import (
    BoxRequest,
    EmbedRequest,
    EmbedResponse,
    ErrorResponse,
    HealthResponse,
    PointsRequest,
    ReadyResponse,
    SegmentListResponse,
    SegmentOptions,
    SegmentRequest,
    SegmentResponse,
)
from .security import Principal
from .state import get_state

__all__ = ["build_router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "invalid image, prompt or option"),
        (401, "missing API key"),
        (403, "invalid API key"),
        (404, "unknown image_id"),
        (413, "body, image bytes or pixels over the limit"),
        (422, "malformed request body"),
        (429, "rate limit exceeded (Retry-After)"),
        (503, "model not ready, queue full or out of memory (Retry-After when worth retrying)"),
        (504, "request deadline exceeded"),
    )
}


def _prompt_kwargs(options: SegmentOptions) -> tuple[dict[str, Any], int]:
    """SDK keyword arguments for the prompts of ``options`` and the number of objects they describe."""
    prompts = [
        {
            **({"box": p.box} if p.box is not None else {}),
            **({"points": [(pt.x, pt.y, pt.label) for pt in p.points]} if p.points is not None else {}),
        }
        for p in options.prompts or []
    ]
    points = [(pt.x, pt.y, pt.label) for pt in options.points] if options.points else None
    count = len(prompts) + len(options.boxes or []) + (1 if points else 0)
    return {"prompts": prompts, "boxes": options.boxes, "points": points}, count


def _segment_job(
    source: Source, options: SegmentOptions
) -> tuple[Callable[[InferenceService], Outcome], int]:
    kwargs, count = _prompt_kwargs(options)

    def call(segmentor: Segmentor, target: Any, formats: list[str]) -> list[SegmentationResult]:
        return segmentor.segment(
            target, **kwargs, strategy=options.strategy, output_formats=formats, multimask=options.multimask
        )

    def job(service: InferenceService) -> Outcome:
        return service.segment(source, call, options.output_formats, prompts=count, single=False)

    return job, count


async def _read_upload(file: UploadFile, max_bytes: int) -> bytes:
    data = await file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"uploaded image is over the {max_bytes} byte limit")
    return data


def build_router(
    server: ServerConfig,
    guard: Callable[..., Principal],
    auth_only: Callable[..., Principal] | None,
) -> APIRouter:
    """All routes. ``guard`` authenticates and rate-limits inference calls; ``auth_only`` (or ``None`` when
    authentication is off) protects health and metrics unless ``server.public_health`` / ``public_metrics``."""
    router = APIRouter()
    Caller = Annotated[Principal, Depends(guard)]
    health_deps: list[DependsParam] = [] if server.public_health or auth_only is None else [Depends(auth_only)]
    metrics_deps: list[DependsParam] = [] if server.public_metrics or auth_only is None else [Depends(auth_only)]

    @router.get("/v1/healthz", response_model=HealthResponse, dependencies=health_deps, tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process and its event loop are running (also while inference is busy)."""
        return {"status": "ok"}

    @router.get(
        "/v1/readyz", response_model=ReadyResponse, dependencies=health_deps, tags=["health"],
        responses={503: _ERRORS[503]},
    )
    async def readyz(request: Request) -> Any:
        """Readiness: the model is loaded and a warm-up inference ran."""
        state = get_state(request)
        try:
            service, _ = state.require_service()
        except SegmentorError as exc:  # the same 503 envelope as inference calls get
            return error_response(503, exc.code, str(exc), retry_after=getattr(exc, "retry_after", None))
        return {"status": "ready", "model_info": service.segmentor.backend.info()}

    @router.get("/metrics", dependencies=metrics_deps, include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @router.post("/v1/embed", response_model=EmbedResponse, responses=_ERRORS, tags=["inference"])
    async def embed(body: EmbedRequest, request: Request, caller: Caller) -> Any:
        """Decode and encode an image once; segment it later by ``image_id`` (valid for this API key only)."""
        state = get_state(request)
        return await state.execute(lambda s: s.embed(body.image, caller.scope), prompts=0)

    @router.post("/v1/embed/upload", response_model=EmbedResponse, responses=_ERRORS, tags=["inference"])
    async def embed_upload(request: Request, caller: Caller, file: Annotated[UploadFile, File()]) -> Any:
        """``/v1/embed`` with the image as a multipart file."""
        state = get_state(request)
        data = await _read_upload(file, state.config.input.max_bytes)
        return await state.execute(lambda s: s.embed(data, caller.scope), prompts=0)

    @router.post("/v1/segment/box", response_model=SegmentResponse, response_model_exclude_none=True,
                 responses=_ERRORS, tags=["inference"])
    async def segment_box(body: BoxRequest, request: Request, caller: Caller) -> Any:
        """The mask of the object inside one ``[x1, y1, x2, y2]`` box."""
        state = get_state(request)
        source = state.source(body.image, body.image_id, caller)

        def call(segmentor: Segmentor, target: Any, formats: list[str]) -> list[SegmentationResult]:
            return [segmentor.segment_from_box(target, body.box, output_formats=formats, multimask=body.multimask)]

        return await state.execute(
            lambda s: s.segment(source, call, body.output_formats, prompts=1, single=True), prompts=1
        )

    @router.post("/v1/segment/points", response_model=SegmentResponse, response_model_exclude_none=True,
                 responses=_ERRORS, tags=["inference"])
    async def segment_points(body: PointsRequest, request: Request, caller: Caller) -> Any:
        """The mask of one object from foreground/background clicks."""
        state = get_state(request)
        source = state.source(body.image, body.image_id, caller)
        points = [(p.x, p.y, p.label) for p in body.points]

        def call(segmentor: Segmentor, target: Any, formats: list[str]) -> list[SegmentationResult]:
            return [segmentor.segment_from_points(target, points, output_formats=formats, multimask=body.multimask)]

        return await state.execute(
            lambda s: s.segment(source, call, body.output_formats, prompts=1, single=True), prompts=1
        )

    @router.post("/v1/segment", response_model=SegmentListResponse, response_model_exclude_none=True,
                 responses=_ERRORS, tags=["inference"])
    async def segment(body: SegmentRequest, request: Request, caller: Caller) -> Any:
        """Every prompt on one image; one result per mask unless ``strategy`` is ``largest`` or ``merge``."""
        state = get_state(request)
        job, count = _segment_job(state.source(body.image, body.image_id, caller), body)
        return await state.execute(job, prompts=count)

    @router.post("/v1/segment/upload", response_model=SegmentListResponse, response_model_exclude_none=True,
                 responses=_ERRORS, tags=["inference"])
    async def segment_upload(
        request: Request,
        caller: Caller,
        file: Annotated[UploadFile, File(description="the image file")],
        options: Annotated[str, Form(alias="request", description="JSON of the /v1/segment options")] = "{}",
    ) -> Any:
        """``/v1/segment`` with the image as a multipart ``file`` and the options as the ``request`` field."""
        state = get_state(request)
        try:
            parsed = SegmentOptions.model_validate_json(options)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            raise RequestValidationError([{**e, "loc": ("body", "request", *e["loc"])} for e in errors]) from None
        data = await _read_upload(file, state.config.input.max_bytes)
        job, count = _segment_job(data, parsed)
        return await state.execute(job, prompts=count)

    return router
