"""The HTTP endpoints. Each one parses its body, hands one SDK call to the inference pipeline, and returns JSON.

============================  ==========================================================================
``POST /v1/embed``            image → ``{image_id, width, height}`` (encoder runs once, embedding kept)
``POST /v1/embed/upload``     the same with a multipart ``file``
``POST /v1/segment/box``      one box → the best mask
``POST /v1/segment/points``   clicks → the best mask
``POST /v1/segment``          any number of prompts → ``results`` (one per mask; ``strategy`` decides)
``POST /v1/segment/auto``     segment everything (grid of points, crops, filters, NMS) → ``results``
``POST /v1/segment/upload``   multipart ``file`` + ``request`` (JSON of the ``/v1/segment`` options)
``POST /v1/segment/text``     every instance of a phrase / exemplar boxes (SAM 3), see :mod:`.text_route`
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

from ..config import ServerConfig
from ..exceptions import SegmentorError
from ..models import EmbeddedImage
from .bodies import json_body_doc, read_json, read_options, read_upload, upload_body_doc
from .calls import Source, auto_call, auto_points, embed_call, prompt_count, segment_call, single_call
from .errors import error_response
from .metrics import CONTENT_TYPE_LATEST
from .request_context import current_request_id
from .schemas import (
    AutoRequest,
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
from .text_route import register_text_route

__all__ = ["build_router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "invalid image, prompt or option"),
        (401, "missing API key"),
        (403, "invalid API key"),
        (404, "unknown image_id"),
        (408, "request body not received within server.body_timeout_s"),
        (409, "image_id embedded by another model than this worker runs (server.state: redis)"),
        (413, "body, image bytes or pixels, prompts, points or mask outputs over the limit"),
        (422, "malformed request body"),
        (429, "rate limit exceeded (Retry-After)"),
        (
            503,
            "model not ready, queue full, out of memory, or shared state (Redis) unavailable for an image_id "
            "(Retry-After when worth retrying)",
        ),
        (504, "request deadline exceeded, or the image URL took longer than server.url_fetch_timeout_s"),
    )
}


async def _segment_one(
    request: Request, caller: Principal, model: type[BoxRequest] | type[PointsRequest], server: ServerConfig
) -> Any:
    """The body of the single-object routes: parse, bound the work, resolve the image, run (best mask only)."""
    state = get_state(request)
    body = await read_json(request, model, server)
    formats = state.formats(body.output_formats)
    state.check_work(1, multimask=body.multimask, formats=formats)
    source = await state.source(body.image, body.image_id, caller, request)
    return await state.execute(single_call(body, source, formats, current_request_id()), request)


async def _segment_many(
    request: Request, caller: Principal, options: SegmentOptions, image: SegmentRequest | bytes
) -> Any:
    """The body of ``/v1/segment`` (``image`` is the parsed body, whose ``image`` or ``image_id`` is resolved here)
    and its upload form (``image`` is the uploaded file): bound the work, resolve the image, run."""
    state = get_state(request)
    formats = state.formats(options.output_formats)
    state.check_work(prompt_count(options), multimask=options.multimask, formats=formats)
    if isinstance(image, bytes):
        source: Source = image
    else:
        source = await state.source(image.image, image.image_id, caller, request)
    return await state.execute(segment_call(options, source, formats, current_request_id()), request)


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

    @router.get(
        "/v1/healthz",
        response_model=HealthResponse,
        dependencies=health_deps,
        tags=["health"],
        operation_id="healthz",
    )
    async def healthz() -> dict[str, str]:
        """Liveness: the process and its event loop are running (also while inference is busy)."""
        return {"status": "ok"}

    @router.get(
        "/v1/readyz",
        operation_id="readyz",
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
        operation_id="embed",
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
        return await state.execute(embed_call(source, caller.scope, current_request_id()), request)

    @router.post(
        "/v1/embed/upload",
        operation_id="embed_upload",
        response_model=EmbedResponse,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=upload_body_doc(with_options=False),
    )
    async def embed_upload(request: Request, caller: Caller) -> Any:
        """``/v1/embed`` with the image as a multipart file."""
        state = get_state(request)
        data, _ = await read_upload(request, server, state.config.input.max_bytes)
        return await state.execute(embed_call(data, caller.scope, current_request_id()), request)

    @router.post(
        "/v1/segment/box",
        operation_id="segment_box",
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
        operation_id="segment_points",
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
        operation_id="segment",
        response_model=SegmentListResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=json_body_doc(SegmentRequest),
    )
    async def segment(request: Request, caller: Caller) -> Any:
        """Every prompt on one image; one result per mask unless ``strategy`` is ``largest`` or ``merge``."""
        body = await read_json(request, SegmentRequest, server)
        return await _segment_many(request, caller, body, body)

    @router.post(
        "/v1/segment/auto",
        operation_id="segment_auto",
        response_model=SegmentListResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["inference"],
        openapi_extra=json_body_doc(AutoRequest),
    )
    async def segment_auto(request: Request, caller: Caller) -> Any:
        """Segment everything: a grid of point prompts (and crops), quality filters and NMS, as Meta's automatic
        mask generators; one result per kept mask with ``stability_score``, ``point_coords`` and ``crop_box``."""
        state = get_state(request)
        body = await read_json(request, AutoRequest, server)
        formats = state.formats(body.output_formats)
        service, _ = state.require_service()
        state.check_auto_work(auto_points(service.segmentor.backend.family, body))
        source = await state.source(body.image, body.image_id, caller, request)
        return await state.execute(auto_call(body, source, formats, current_request_id()), request)

    @router.post(
        "/v1/segment/upload",
        operation_id="segment_upload",
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
        return await _segment_many(request, caller, options, data)

    register_text_route(router, server, Caller, _ERRORS)
    return router
