"""The batch routes: submit many images with prompts, poll the job, page through its results, cancel it.

==================================  ==================================================================================
``POST /v1/batch``                  JSON ``{"images": [<a /v1/segment body>, ...]}``, or multipart: one ``file`` part
                                    per image plus ``request`` (one options object for every file, or a list of
                                    them, one per file) → 202 ``{job_id, status, total, ...}``
``GET /v1/batch/{job_id}``          status, counts and the results ``?offset=&limit=`` (one slot per image)
``DELETE /v1/batch/{job_id}``       stop the job if it still runs and delete it with its results (204)
==================================  ==================================================================================

Submission is refused as a whole (nothing runs) for: more than ``server.max_batch_images`` images (413
``batch_too_large``), an image asking for more than the per-request caps (413 ``request_too_large``, naming the
image), an image URL while ``input.allow_urls`` is off (400), a malformed body (422), and more than
``server.max_batch_jobs`` unfinished jobs or ``server.max_stored_batch_jobs`` jobs in all of this API key (429
``too_many_batch_jobs``). Everything else that can go
wrong with one image is reported in that image's slot (:mod:`perceptra_seg.service.batch_jobs`).
"""

# No ``from __future__ import annotations``: FastAPI must see the dependency types built inside build_batch_router.

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..config import ServerConfig
from ..exceptions import ImageTooLargeError, InvalidInputError
from .batch_jobs import BatchItem, BatchStore
from .bodies import check_caps, json_body_doc, value_budget
from .calls import prompt_count
from .errors import RequestTooLargeError
from .schemas import ErrorResponse, MaskResult, SegmentOptions, SegmentRequest
from .security import Principal
from .state import ServiceState, get_state
from .url_fetch import is_url

__all__ = ["BATCH_PATH", "BatchTooLargeError", "build_batch_router"]

BATCH_PATH = "/v1/batch"
#: JSON values one image entry may add beyond its prompts (its own braces, image, options).
_PER_IMAGE_VALUES = 32
_PAGE_DEFAULT = 100
_PAGE_MAX = 1000

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "an image URL while the server refuses URLs (input.allow_urls), or an unreadable multipart body"),
        (401, "missing API key"),
        (403, "invalid API key"),
        (404, "unknown batch job (or another key's, cancelled or expired)"),
        (408, "request body not received within server.body_timeout_s"),
        (413, "body over the limit, more than server.max_batch_images images, or an image over the request caps"),
        (422, "malformed request body"),
        (429, "rate limit exceeded, or this API key's server.max_batch_jobs or max_stored_batch_jobs is reached"),
        (503, "model not ready, or the job runs on another worker and Redis is unavailable (Retry-After)"),
    )
}


class BatchTooLargeError(RequestTooLargeError):
    """More images in one job than ``server.max_batch_images``."""

    code = "batch_too_large"


class BatchRequest(BaseModel):
    """The JSON form of ``POST /v1/batch``: one ``/v1/segment`` body per image (``image`` or ``image_id``)."""

    model_config = ConfigDict(extra="forbid")

    images: list[SegmentRequest] = Field(min_length=1, description="at most server.max_batch_images entries")


class BatchError(BaseModel):
    code: str = Field(description="as the error code /v1/segment would answer for this image")
    message: str


class BatchSlot(BaseModel):
    index: int = Field(description="position of the image in the submitted list (or of the file in the upload)")
    status: Literal["pending", "done", "failed"]
    results: list[MaskResult] | None = Field(None, description="done: one entry per mask, as /v1/segment answers")
    latency_ms: float | None = Field(None, description="done: server-side processing time of this image")
    error: BatchError | None = Field(None, description="failed: why")


class BatchJobResponse(BaseModel):
    job_id: str = Field(description="valid for this API key only")
    status: Literal["queued", "running", "done", "failed"] = Field(
        description="done: every image ran and at least one succeeded; failed: every image failed"
    )
    total: int
    done: int
    failed: int
    pending: int
    model_info: dict[str, Any]


class BatchPageResponse(BatchJobResponse):
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; null on the last one")
    results: list[BatchSlot]


_OPTIONS_LIST = TypeAdapter(list[SegmentOptions])


def _store(state: ServiceState) -> BatchStore:
    assert state.batches is not None
    return state.batches


def _scan(data: bytes, server: ServerConfig) -> None:
    """413 when ``data`` holds more JSON values than one largest ``/v1/segment`` body plus a few per image can."""
    budget = value_budget(server) + _PER_IMAGE_VALUES * server.max_batch_images
    values = data.count(b",") + data.count(b"[") + data.count(b"{")
    if values > budget:
        raise RequestTooLargeError(
            f"batch body holds about {values} JSON values, more than {budget}: send fewer images or prompts"
        )


def _invalid(exc: ValidationError, *location: str) -> RequestValidationError:
    errors = exc.errors(include_url=False, include_input=False)
    return RequestValidationError([{**e, "loc": ("body", *location, *e["loc"])} for e in errors])


def _parse_json(body: bytes, server: ServerConfig) -> BatchRequest:
    """Validate a JSON batch body after the cheap scan (blocking): at most ``server.max_batch_images`` images,
    each within the per-request caps."""
    _scan(body, server)
    try:
        parsed = BatchRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    _check_count(len(parsed.images), server)
    for index, image in enumerate(parsed.images):
        _at(index, check_caps, image, server)
    return parsed


def _parse_options(text: str, files: int, server: ServerConfig) -> list[SegmentOptions]:
    """The multipart ``request`` field: one options object for every file, or a list with one per file."""
    _scan(text.encode(), server)
    try:
        if text.lstrip().startswith("["):
            options = _OPTIONS_LIST.validate_json(text)
        else:
            options = [SegmentOptions.model_validate_json(text)] * files
    except ValidationError as exc:
        raise _invalid(exc, "request") from None
    if len(options) != files:
        raise InvalidInputError(f"request lists {len(options)} option objects for {files} files")
    for index, item in enumerate(options):
        _at(index, check_caps, item, server)
    return options


def _check_count(images: int, server: ServerConfig) -> None:
    if images > server.max_batch_images:
        raise BatchTooLargeError(
            f"batch has {images} images, over the limit of {server.max_batch_images} (server.max_batch_images)"
        )


def _at(index: int, check: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """Run a per-image check; a too-large error names the image."""
    try:
        check(*args, **kwargs)
    except RequestTooLargeError as exc:
        raise RequestTooLargeError(f"image {index}: {exc}") from None


async def _read_upload(request: Request, server: ServerConfig, max_bytes: int) -> list[BatchItem | None]:
    """The multipart form: every ``file`` part (each at most ``max_bytes``) with its options (formats unresolved)."""
    try:
        form = await request.form(max_files=server.max_batch_images, max_fields=server.max_batch_images + 8)
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise BatchTooLargeError(
                f"more than {server.max_batch_images} files, the limit (server.max_batch_images)"
            ) from None
        raise InvalidInputError(f"expected a multipart/form-data body: {exc.detail}") from None
    except (AssertionError, ValueError) as exc:
        raise InvalidInputError(f"expected a multipart/form-data body: {exc}") from None
    try:
        files = [part for part in form.getlist("file") if isinstance(part, UploadFile)]
        if not files:
            raise RequestValidationError(
                [{"type": "missing", "loc": ("body", "file"), "msg": "Field required", "input": None}]
            )
        text = await _options_text(form, max_bytes)
        options = await anyio.to_thread.run_sync(partial(_parse_options, text, len(files), server))
        items: list[BatchItem | None] = []
        for index, (upload, option) in enumerate(zip(files, options, strict=True)):
            data = await upload.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise ImageTooLargeError(f"file {index} is over the {max_bytes} byte limit (input.max_bytes)")
            items.append(BatchItem(data, None, option, ()))
        return items
    finally:
        await form.close()


async def _options_text(form: FormData, max_bytes: int) -> str:
    """The ``request`` part as text (``"{}"`` when absent): a plain field, or a file part such as curl's
    ``-F request=@options.json`` sends. Any other field name is refused rather than silently ignored.

    Raises:
        InvalidInputError: an unknown field, more than one ``request`` part, or one that is not UTF-8 text.
    """
    unknown = sorted(set(form.keys()) - {"file", "request"})
    if unknown:
        raise InvalidInputError(f"unknown multipart field(s) {unknown}: send 'file' parts and one 'request' part")
    parts = form.getlist("request")
    if len(parts) > 1:
        raise InvalidInputError(f"{len(parts)} 'request' parts: send one (an options object, or a list of them)")
    if not parts:
        return "{}"
    part = parts[0]
    if isinstance(part, str):
        return part
    data = await part.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise RequestTooLargeError(f"the 'request' part is over the {max_bytes} byte limit (input.max_bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError("the 'request' part is not UTF-8 JSON text") from None


def _prepare(state: ServiceState, items: list[BatchItem | None]) -> list[BatchItem]:
    """Resolve each item's output formats and check its work bound and image URL (all before anything runs)."""
    ready = []
    for index, item in enumerate(items):
        assert item is not None
        options = item.options
        formats = state.formats(options.output_formats)
        _at(index, state.check_work, prompt_count(options), multimask=options.multimask, formats=formats)
        if isinstance(item.image, str) and is_url(item.image) and state.fetcher is None:
            raise InvalidInputError(f"image {index} is a URL; this server does not fetch URLs (input.allow_urls)")
        ready.append(BatchItem(item.image, item.image_id, options, formats))
    return ready


def build_batch_router(server: ServerConfig, guard: Callable[..., Principal]) -> APIRouter:
    """The ``/v1/batch`` routes; ``guard`` authenticates and rate-limits as for the image routes."""
    router = APIRouter()
    Caller = Annotated[Principal, Depends(guard)]

    @router.post(
        BATCH_PATH,
        operation_id="batch_submit",
        status_code=202,
        response_model=BatchJobResponse,
        responses=_ERRORS,
        tags=["batch"],
        openapi_extra=_submit_doc(),
    )
    async def submit(request: Request, caller: Caller) -> Any:
        """Start a job over many images (JSON or multipart); poll ``GET /v1/batch/{job_id}`` for its results."""
        state = get_state(request)
        service, _ = state.require_service()
        store = _store(state)
        await store.check_capacity(caller.scope)  # refused before the body is read
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            items = await _read_upload(request, server, state.config.input.max_bytes)
        else:
            body = await request.body()
            parsed = await anyio.to_thread.run_sync(partial(_parse_json, body, server))
            items = [BatchItem(entry.image, entry.image_id, entry, ()) for entry in parsed.images]
        _check_count(len(items), server)
        job = await store.submit(state, caller.scope, _prepare(state, items), service.segmentor.backend.info())
        return JSONResponse(job.summary(), status_code=202, headers={"Location": f"{BATCH_PATH}/{job.job_id}"})

    @router.get(
        BATCH_PATH + "/{job_id}",
        operation_id="batch_get",
        response_model=BatchPageResponse,
        responses={status: _ERRORS[status] for status in (401, 403, 404, 422, 429, 503)},
        tags=["batch"],
    )
    async def get_job(
        job_id: str,
        request: Request,
        caller: Caller,
        offset: Annotated[int, Query(ge=0, description="first slot of the page")] = 0,
        limit: Annotated[int, Query(ge=1, le=_PAGE_MAX, description="slots per page")] = _PAGE_DEFAULT,
    ) -> Any:
        """Status, counts and one page of results: one slot per image, in submission order."""
        # Sent as it is (the slots hold the /v1/segment shapes already); the response model documents it.
        return JSONResponse(await _store(get_state(request)).page(caller.scope, job_id, offset, limit))

    @router.delete(
        BATCH_PATH + "/{job_id}",
        operation_id="batch_delete",
        status_code=204,
        response_class=Response,
        responses={status: _ERRORS[status] for status in (401, 403, 404, 429, 503)},
        tags=["batch"],
    )
    async def delete_job(job_id: str, request: Request, caller: Caller) -> Response:
        """Stop the job if it still runs and delete it with its results."""
        await _store(get_state(request)).remove(caller.scope, job_id)
        return Response(status_code=204)

    return router


def _submit_doc() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /v1/batch``: the JSON body, or the multipart form."""
    properties: dict[str, Any] = {
        "file": {"type": "array", "items": {"type": "string", "format": "binary"}, "description": "one per image"},
        "request": {
            "type": "string",
            "description": "JSON: one /v1/segment options object for every file, or a list of them, one per file",
        },
    }
    multipart = {"schema": {"type": "object", "properties": properties, "required": ["file"]}}
    doc = json_body_doc(BatchRequest)
    doc["requestBody"]["content"]["multipart/form-data"] = multipart
    return doc
