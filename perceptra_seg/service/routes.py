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

The inference routes authenticate (and rate-limit) from the headers first; only then is the body read and parsed,
off the event loop and with bounded cost (:mod:`perceptra_seg.service.bodies`). Image URLs are fetched before
admission (:mod:`perceptra_seg.service.url_fetch`); the work a request asks for is bounded before admission
(``server.max_mask_outputs``), and every SDK call gets the request's cancel token (deadline, disconnect).
"""

# No ``from __future__ import annotations``: FastAPI must see the dependency types built inside build_router.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.params import Depends as DependsParam
from fastapi.responses import Response

from ..cancel import CancelToken
from ..config import ServerConfig
from ..core import Segmentor
from ..exceptions import SegmentorError
from ..models import EmbeddedImage, SegmentationResult
from .bodies import json_body_doc, read_json, read_options, read_upload, upload_body_doc
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
from .state import Job, ServiceState, get_state

__all__ = ["build_router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "invalid image, prompt or option"),
        (401, "missing API key"),
        (403, "invalid API key"),
        (404, "unknown image_id"),
        (408, "request body not received within server.body_timeout_s"),
        (413, "body, image bytes or pixels, prompts, points or mask outputs over the limit"),
        (422, "malformed request body"),
        (429, "rate limit exceeded (Retry-After)"),
        (503, "model not ready, queue full or out of memory (Retry-After when worth retrying)"),
        (504, "request deadline exceeded, or the image URL took longer than server.url_fetch_timeout_s"),
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


def _check_segment_work(state: ServiceState, options: SegmentOptions) -> None:
    """413 before anything is fetched or admitted when the request asks for too many mask outputs."""
    _, count = _prompt_kwargs(options)
    state.check_work(count, multimask=options.multimask, formats=options.output_formats)


async def _run_segment(
    state: ServiceState, request: Request, source: Source, options: SegmentOptions
) -> dict[str, Any]:
    kwargs, count = _prompt_kwargs(options)

    def call(segmentor: Segmentor, target: Any, formats: list[str], cancel: CancelToken) -> list[SegmentationResult]:
        return segmentor.segment(
            target,
            **kwargs,
            strategy=options.strategy,
            output_formats=formats,
            multimask=options.multimask,
            cancel=cancel,
        )

    def job(service: InferenceService, cancel: CancelToken) -> Outcome:
        return service.segment(source, call, options.output_formats, prompts=count, single=False, cancel=cancel)

    return await state.execute(job, prompts=count, request=request)


async def _run_single(
    state: ServiceState,
    request: Request,
    source: Source,
    body: BoxRequest | PointsRequest,
) -> dict[str, Any]:

    def call(segmentor: Segmentor, target: Any, formats: list[str], cancel: CancelToken) -> list[SegmentationResult]:
        if isinstance(body, BoxRequest):
            return [
                segmentor.segment_from_box(
                    target, body.box, output_formats=formats, multimask=body.multimask, cancel=cancel
                )
            ]
        points = [(p.x, p.y, p.label) for p in body.points]
        return [
            segmentor.segment_from_points(
                target, points, output_formats=formats, multimask=body.multimask, cancel=cancel
            )
        ]

    def job(service: InferenceService, cancel: CancelToken) -> Outcome:
        return service.segment(source, call, body.output_formats, prompts=1, single=True, cancel=cancel)

    return await state.execute(job, prompts=1, request=request)


def _embed_job(source: str | bytes, scope: str) -> Job:
    def job(service: InferenceService, cancel: CancelToken) -> Outcome:
        return service.embed(source, scope, cancel)

    return job


async def _segment_one(
    request: Request, caller: Principal, model: type[BoxRequest] | type[PointsRequest], server: ServerConfig
) -> Any:
    """The body of the single-object routes: parse, bound the work, resolve the image, run (best mask only)."""
    state = get_state(request)
    body = await read_json(request, model, server)
    state.check_work(1, multimask=body.multimask, formats=body.output_formats)
    source = await state.source(body.image, body.image_id, caller, request)
    return await _run_single(state, request, source, body)


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
        "/v1/readyz",
        response_model=ReadyResponse,
        dependencies=health_deps,
        tags=["health"],
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

    @router.post(
        "/v1/embed",
        response_model=EmbedResponse,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=json_body_doc(EmbedRequest),
    )
    async def embed(request: Request, caller: Caller) -> Any:
        """Decode and encode an image once; segment it later by ``image_id`` (valid for this API key only)."""
        state = get_state(request)
        body = await read_json(request, EmbedRequest, server)
        source = await state.source(body.image, None, caller, request)
        assert not isinstance(source, EmbeddedImage)  # no image_id here
        return await state.execute(_embed_job(source, caller.scope), prompts=0, request=request)

    @router.post(
        "/v1/embed/upload",
        response_model=EmbedResponse,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=upload_body_doc(with_options=False),
    )
    async def embed_upload(request: Request, caller: Caller) -> Any:
        """``/v1/embed`` with the image as a multipart file."""
        state = get_state(request)
        data, _ = await read_upload(request, server, state.config.input.max_bytes)
        return await state.execute(_embed_job(data, caller.scope), prompts=0, request=request)

    @router.post(
        "/v1/segment/box",
        response_model=SegmentResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=json_body_doc(BoxRequest),
    )
    async def segment_box(request: Request, caller: Caller) -> Any:
        """The mask of the object inside one ``[x1, y1, x2, y2]`` box."""
        return await _segment_one(request, caller, BoxRequest, server)

    @router.post(
        "/v1/segment/points",
        response_model=SegmentResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=json_body_doc(PointsRequest),
    )
    async def segment_points(request: Request, caller: Caller) -> Any:
        """The mask of one object from foreground/background clicks."""
        return await _segment_one(request, caller, PointsRequest, server)

    @router.post(
        "/v1/segment",
        response_model=SegmentListResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=json_body_doc(SegmentRequest),
    )
    async def segment(request: Request, caller: Caller) -> Any:
        """Every prompt on one image; one result per mask unless ``strategy`` is ``largest`` or ``merge``."""
        state = get_state(request)
        body = await read_json(request, SegmentRequest, server)
        _check_segment_work(state, body)
        source = await state.source(body.image, body.image_id, caller, request)
        return await _run_segment(state, request, source, body)

    @router.post(
        "/v1/segment/upload",
        response_model=SegmentListResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=upload_body_doc(with_options=True),
    )
    async def segment_upload(request: Request, caller: Caller) -> Any:
        """``/v1/segment`` with the image as a multipart ``file`` and the options as the ``request`` field."""
        state = get_state(request)
        data, text = await read_upload(request, server, state.config.input.max_bytes)
        options = await read_options(text or "{}", server)
        _check_segment_work(state, options)
        return await _run_segment(state, request, data, options)

    return router
