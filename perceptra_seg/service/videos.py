"""The video tracking routes (SAM 2 / 2.1 models): upload once, prompt objects, stream the propagation.

======================================  ==============================================================================
``POST /v1/videos``                     multipart ``file`` (or JSON ``{"url"}``) → ``{video_id, num_frames, width,
                                        height, fps}``
``POST /v1/videos/{id}/prompts``        a box and/or clicks for one object on one frame → every object's mask there
``POST /v1/videos/{id}/propagate``      track through the video → NDJSON, one line per frame as soon as it is done
``DELETE /v1/videos/{id}``              close the session and delete the file now (204)
======================================  ==============================================================================

The upload is written to a temporary file on the server's disk (at most ``server.max_video_bytes``; this path's
body limit is that plus a little for the multipart framing, instead of ``server.max_body_bytes``). With
``input.allow_urls`` a JSON body ``{"url": "https://..."}`` names the video instead: it is downloaded by the
service's SSRF-guarded URL fetcher (``server.url_fetch_timeout_s``, ``server.max_url_fetches``) straight to that
file, under the same byte limit. Ids, quotas and
expiry are :class:`~perceptra_seg.service.video_store.VideoStore`'s. Every model call is a
:class:`~perceptra_seg.service.calls.ServiceCall` through :meth:`ServiceState.execute
<perceptra_seg.service.state.ServiceState.execute>` (:mod:`perceptra_seg.service.video_calls`), so health checks
answer while a video is tracked, a client that disconnects stops the tracking at the next frame, and
``server.video_timeout_s`` bounds a propagation. An error before the first frame is an ordinary error response;
one after it ends the stream with a line ``{"error": {"code", "message", "request_id"}}``.
"""

# No ``from __future__ import annotations``: FastAPI must see the dependency types built inside build_video_router.

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..config import ServerConfig
from ..exceptions import ImageTooLargeError, InvalidInputError, SegmentorError
from .bodies import json_body_doc, multipart_file, read_json
from .calls import ServiceCall
from .request_context import current_request_id
from .schemas import ErrorResponse, MaskResult
from .security import Principal
from .state import ServiceState, get_state
from .video_calls import (
    MAX_PENDING_LINES,
    AddVideoPrompt,
    OpenVideo,
    PropagateRequest,
    PropagateVideo,
    VideoPromptRequest,
    VideoTooLargeError,
)
from .video_store import VideoStore

__all__ = ["UPLOAD_PATH", "build_video_router", "upload_limit"]

logger = logging.getLogger("perceptra_seg.service.videos")

UPLOAD_PATH = "/v1/videos"
#: Bytes a multipart body may hold beyond the file itself (boundaries, part headers).
_MULTIPART_SLACK = 64 * 1024
_COPY_CHUNK = 1024 * 1024

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "undecodable video, invalid prompt or option, or a model without video support"),
        (401, "missing API key"),
        (403, "invalid API key"),
        (404, "unknown video_id (or another key's, deleted or expired)"),
        (408, "request body not received within server.body_timeout_s"),
        (409, "another operation is running on this video"),
        (413, "video bytes, frames or pixels, points or objects over the limit"),
        (422, "malformed request body"),
        (429, "rate limit exceeded, or the API key holds server.max_video_sessions videos"),
        (503, "model not ready, queue full or out of memory (Retry-After when worth retrying)"),
        (504, "deadline exceeded (server.request_timeout_s; server.video_timeout_s for propagate)"),
    )
}


class VideoResponse(BaseModel):
    video_id: str = Field(description="valid for this API key only; expires server.video_ttl_s after its last use")
    num_frames: int
    width: int
    height: int
    fps: float | None = Field(description="frames per second of the container; null when it has none")


class VideoObjectMask(MaskResult):
    obj_id: int
    prompt_index: int = Field(0, description="always 0 (objects are named by obj_id)")


class VideoFrameResponse(BaseModel):
    frame: int = Field(description="frame index (0-based)")
    objects: list[VideoObjectMask] = Field(description="every object's mask on this frame, sorted by obj_id")


def upload_limit(server: ServerConfig) -> int:
    """Body limit of ``POST /v1/videos``: the file limit plus the multipart framing."""
    return server.max_video_bytes + _MULTIPART_SLACK


def _store(state: ServiceState) -> VideoStore:
    assert state.videos is not None
    return state.videos


class VideoUrlRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http(s) URL of the video (only when the server allows URLs: input.allow_urls)")


def _upload_doc() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {"file": {"type": "string", "format": "binary", "description": "the video file"}},
        "required": ["file"],
    }
    content = {
        "multipart/form-data": {"schema": schema, "encoding": {"file": {"contentType": "application/octet-stream"}}},
        "application/json": {"schema": VideoUrlRequest.model_json_schema()},
    }
    return {"requestBody": {"required": True, "content": content}}


async def _download(request: Request, state: ServiceState, server: ServerConfig, path: Path) -> None:
    """Fetch the JSON body's ``url`` into ``path`` (at most ``server.max_video_bytes``)."""
    body = await read_json(request, VideoUrlRequest, server)
    if state.fetcher is None:
        raise InvalidInputError("video URLs are off on this server (input.allow_urls); upload the file instead")
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        await state.fetcher.load(body.url, max_bytes=server.max_video_bytes, sink=handle.write)
    except ImageTooLargeError:
        raise VideoTooLargeError(
            f"the video at that URL is over the {server.max_video_bytes} byte limit (server.max_video_bytes)"
        ) from None
    finally:
        await asyncio.to_thread(handle.close)


async def _save_upload(request: Request, server: ServerConfig, path: Path) -> None:
    """Copy the multipart ``file`` part to ``path`` (off the event loop), refusing more than max_video_bytes."""
    async with multipart_file(request, max_fields=1) as (_, file):
        limit = server.max_video_bytes

        def copy() -> int:
            written = 0
            with path.open("wb") as target:
                while chunk := file.file.read(_COPY_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise VideoTooLargeError(
                            f"uploaded video is over the {limit} byte limit (server.max_video_bytes)"
                        )
                    target.write(chunk)
            return written

        await asyncio.to_thread(copy)


async def _execute_claimed(
    state: ServiceState, work: AddVideoPrompt | PropagateVideo, request: Request | None, timeout_s: float | None
) -> dict[str, Any]:
    try:
        return await state.execute(ServiceCall(work, "video", prompts=1), request, timeout_s=timeout_s)
    finally:
        work.abandon()


def build_video_router(server: ServerConfig, guard: Callable[..., Principal]) -> APIRouter:
    """The ``/v1/videos`` routes; ``guard`` authenticates and rate-limits as for the image routes."""
    router = APIRouter()
    Caller = Annotated[Principal, Depends(guard)]

    @router.post(
        UPLOAD_PATH,
        operation_id="video_upload",
        response_model=VideoResponse,
        responses=_ERRORS,
        tags=["video"],
        openapi_extra=_upload_doc(),
    )
    async def upload_video(request: Request, caller: Caller) -> Any:
        """Upload a video (multipart ``file``: mp4, webm, mov, ...; or JSON ``{"url"}`` when the server allows URLs)
        and open a tracking session on it."""
        state = get_state(request)
        service, _ = state.require_service()
        family = service.segmentor.backend.family
        if family not in ("sam2", "sam3"):  # refused before the upload is read
            raise InvalidInputError(
                f"video tracking needs a SAM 2 / 2.1, EdgeTAM or SAM 3 model; this server runs a {family} model"
            )
        store = _store(state)
        store.check_capacity(caller.scope)
        path = store.new_file()
        work = OpenVideo(path, server)
        kept = False
        try:
            if request.headers.get("content-type", "").startswith("application/json"):
                await _download(request, state, server, path)
            else:
                await _save_upload(request, server, path)
            body = await state.execute(ServiceCall(work, "video", prompts=0), request)
            session = work.take()
            try:
                entry = store.add(caller.scope, path, work.info, session)  # type: ignore[arg-type]
            except BaseException:
                if session is not None:
                    session.close()
                raise
            kept = True
            return {"video_id": entry.video_id, **body}
        finally:
            work.abandon()
            if not kept:
                path.unlink(missing_ok=True)

    @router.post(
        UPLOAD_PATH + "/{video_id}/prompts",
        operation_id="video_prompt",
        response_model=VideoFrameResponse,
        response_model_exclude_none=True,
        responses=_ERRORS,
        tags=["video"],
        openapi_extra=json_body_doc(VideoPromptRequest),
    )
    async def add_prompt(video_id: str, request: Request, caller: Caller) -> Any:
        """A box and/or clicks for one object on one frame; answers every object's mask on that frame."""
        state = get_state(request)
        state.require_service()
        body = await read_json(request, VideoPromptRequest, server)
        if body.points is not None and len(body.points) > server.max_points_per_prompt:
            from .errors import RequestTooLargeError

            raise RequestTooLargeError(
                f"a prompt has {len(body.points)} points, over the limit of {server.max_points_per_prompt} "
                "(server.max_points_per_prompt)"
            )
        store = _store(state)
        entry = store.acquire(caller.scope, video_id)
        work = AddVideoPrompt(store, entry, body, server)
        return await _execute_claimed(state, work, request, None)

    @router.post(
        UPLOAD_PATH + "/{video_id}/propagate",
        operation_id="video_propagate",
        responses={
            200: {
                "description": "one JSON frame document per line (VideoFrameResponse), in tracking order",
                "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
            },
            **_ERRORS,
        },
        response_class=StreamingResponse,
        tags=["video"],
        openapi_extra=json_body_doc(PropagateRequest),
    )
    async def propagate(video_id: str, request: Request, caller: Caller) -> Any:
        """Track every prompted object through the video, streaming one NDJSON line per frame as it is done."""
        state = get_state(request)
        state.require_service()
        body = await read_json(request, PropagateRequest, server)
        store = _store(state)
        entry = store.acquire(caller.scope, video_id)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        room = threading.Semaphore(MAX_PENDING_LINES)

        def emit(line: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, line)

        work = PropagateVideo(store, entry, body, emit, room)
        task = asyncio.create_task(_execute_claimed(state, work, request, server.video_timeout_s))
        task.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            first = await queue.get()
        except BaseException:
            task.cancel()
            raise
        if first is None:  # the call ended before any frame: an ordinary answer (error status, or no frames)
            await task
            return Response(b"", media_type="application/x-ndjson")
        return StreamingResponse(_lines(first, queue, room, task), media_type="application/x-ndjson")

    @router.delete(
        UPLOAD_PATH + "/{video_id}",
        operation_id="video_delete",
        status_code=204,
        response_class=Response,
        responses={status: _ERRORS[status] for status in (401, 403, 404, 409, 429)},
        tags=["video"],
    )
    async def delete_video(video_id: str, request: Request, caller: Caller) -> Response:
        """Close the video's session and delete its file now."""
        store = _store(get_state(request))
        await asyncio.to_thread(store.remove, caller.scope, video_id)
        return Response(status_code=204)

    return router


async def _lines(
    first: str, queue: "asyncio.Queue[str | None]", room: threading.Semaphore, task: "asyncio.Task[Any]"
) -> AsyncIterator[str]:
    """Yield the frame lines as the worker emits them; end with an error line if the call failed midway."""
    try:
        line: str | None = first
        while line is not None:
            yield line
            room.release()
            line = await queue.get()
        try:
            await task
        except SegmentorError as exc:
            yield json.dumps(_error_line(exc.code, str(exc))) + "\n"
        except Exception:  # as REST's 500: the cause goes to the log only
            logger.exception("video propagation failed")
            yield json.dumps(_error_line("internal_error", "internal server error")) + "\n"
    finally:
        if not task.done():  # the client went away: the cancel token stops the tracking at the next frame
            task.cancel()


def _error_line(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": current_request_id()}}
