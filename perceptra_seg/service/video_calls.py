"""The REST video calls: request bodies, and the work each call hands to the inference runner.

Every video operation is a :class:`~perceptra_seg.service.calls.ServiceWork` inside an ordinary
:class:`~perceptra_seg.service.calls.ServiceCall`, run by :meth:`ServiceState.execute
<perceptra_seg.service.state.ServiceState.execute>`: the same bounded runner (slots, queue, deadline), cancel token
(deadline, disconnect), stage metrics and error mapping as the image routes. Nothing here runs on the event loop.

* :class:`OpenVideo` (``POST /v1/videos``): probe the uploaded file, check ``server.max_video_frames`` /
  ``max_video_pixels`` (413), open the tracking session.
* :class:`AddVideoPrompt` (``POST /v1/videos/{id}/prompts``): one prompt; the answer is every object's mask on
  that frame.
* :class:`PropagateVideo` (``POST /v1/videos/{id}/propagate``): track through the video (on a SAM 3 server: every
  instance of the body's ``text`` phrase, found from ``start_frame`` on); each frame's document is handed to
  ``emit`` as soon as it is done (the route streams them as NDJSON). ``emit`` blocks while
  :data:`MAX_PENDING_LINES` lines wait to be sent, so a slow reader slows the tracking instead of filling memory.
"""

from __future__ import annotations

import abc
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..cancel import CancelToken, OperationCancelledError
from ..concepts.request import MAX_PHRASE_CHARS, TextPromptsUnsupportedError
from ..config import ServerConfig
from ..exceptions import ImageTooLargeError, InvalidInputError
from ..utils.masks import OutputFormat
from .calls import ServiceWork
from .errors import RequestTooLargeError
from .schemas import Box, PointIn
from .schemas import OutputFormat as OutputFormatName
from .video_store import StoredVideo, VideoInfo, VideoStore

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = [
    "MAX_PENDING_LINES",
    "AddVideoPrompt",
    "OpenVideo",
    "PropagateRequest",
    "PropagateVideo",
    "VideoPromptRequest",
    "VideoTooLargeError",
]

#: Frame documents computed but not yet sent before the tracking waits for the client.
MAX_PENDING_LINES = 8


class VideoTooLargeError(ImageTooLargeError):
    """The video is over ``server.max_video_bytes``, ``max_video_frames`` or ``max_video_pixels`` (413)."""

    code = "video_too_large"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VideoPromptRequest(_Body):
    """One prompt for one object on one frame: a box, clicks, or both (pixels of the original frame)."""

    frame: int = Field(ge=0, description="frame index (0-based) the prompt is on")
    obj_id: int = Field(ge=0, description="the object's id, chosen by the client; prompts with the same id refine it")
    box: Box | None = None
    points: list[PointIn] | None = None
    output_formats: list[OutputFormatName] | None = Field(None, description="mask encodings; default: rle")


class PropagateRequest(_Body):
    """Where to track: from ``start_frame`` (default: the first prompted frame), forward or backward."""

    reverse: bool = Field(False, description="track towards frame 0")
    start_frame: int | None = Field(None, ge=0, description="first frame to track; default the first prompted one")
    max_frames: int | None = Field(None, ge=1, description="track at most this many frames; default: to the end")
    output_formats: list[OutputFormatName] | None = Field(None, description="mask encodings; default: rle")
    text: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_PHRASE_CHARS,
        description="SAM 3 servers only (and required there): track every instance of this phrase from start_frame "
        "(default 0), forward",
    )


def formats_of(names: list[Any] | None) -> tuple[OutputFormat, ...]:
    """The body's ``output_formats`` (enum members) as SDK names; ``rle`` by default."""
    if not names:
        return ("rle",)
    return tuple(dict.fromkeys(getattr(n, "value", n) for n in names))


class _Claimed(ServiceWork):
    """Work on a stored video whose operation lock the route took; released when the work ends, or by
    :meth:`abandon` when it never started (queue full, cancelled while queued)."""

    def __init__(self, store: VideoStore, entry: StoredVideo) -> None:
        self.store, self.entry = store, entry
        self._state = "pending"
        self._flag = threading.Lock()

    def execute(self, segmentor: Segmentor, cancel: CancelToken) -> tuple[dict[str, Any], dict[str, float]]:
        with self._flag:
            if self._state != "pending":
                raise OperationCancelledError("operation cancelled: request abandoned")
            self._state = "running"
        try:
            cancel.check()
            return self.run(segmentor, cancel)
        finally:
            self.store.release(self.entry)

    @abc.abstractmethod
    def run(self, segmentor: Segmentor, cancel: CancelToken) -> tuple[dict[str, Any], dict[str, float]]:
        """The operation itself, with this video's lock held; returns the body and its stage timings (seconds)."""

    def abandon(self) -> None:
        """Called by the route once the call ended (however): gives the lock back if the work never ran."""
        with self._flag:
            if self._state == "pending":
                self._state = "abandoned"
                self.store.release(self.entry)


class OpenVideo(ServiceWork):
    """Probe the uploaded file at ``path``, check the limits, open its session (kept in :attr:`session`)."""

    def __init__(self, path: Path, server: ServerConfig) -> None:
        self.path, self.server = path, server
        self.info: VideoInfo | None = None
        self._session: Any = None
        self._abandoned = False
        self._flag = threading.Lock()

    def execute(self, segmentor: Segmentor, cancel: CancelToken) -> tuple[dict[str, Any], dict[str, float]]:
        from ..video.frames import open_frames

        start = time.perf_counter()
        frames = open_frames(str(self.path))
        try:
            info = VideoInfo(frames.num_frames, frames.width, frames.height, frames.fps)
        finally:
            frames.close()
        if info.num_frames > self.server.max_video_frames:
            raise VideoTooLargeError(
                f"video has {info.num_frames} frames, over the limit of {self.server.max_video_frames} "
                "(server.max_video_frames)"
            )
        if info.width * info.height > self.server.max_video_pixels:
            raise VideoTooLargeError(
                f"video frames are {info.width}x{info.height} = {info.width * info.height} pixels, over the limit "
                f"of {self.server.max_video_pixels} (server.max_video_pixels)"
            )
        cancel.check()
        probed = time.perf_counter()
        if segmentor.backend.family == "sam3":
            from ..video.sam3_tracking import concept_tracker

            concept_tracker(segmentor)  # SAM 3's video model loads now: a checkpoint without its tracker fails here
            session = None  # and no session is kept: each propagate call finds and tracks its phrase from scratch
        else:
            session = segmentor.open_video(str(self.path))
        with self._flag:
            if self._abandoned:
                if session is not None:
                    session.close()
                raise OperationCancelledError("operation cancelled: request abandoned")
            self._session, self.info = session, info
        body = {"num_frames": info.num_frames, "width": info.width, "height": info.height, "fps": info.fps}
        return body, {"probe_video": probed - start, "open_video": time.perf_counter() - probed}

    def take(self) -> Any:
        """The opened session; the caller owns it from now on."""
        with self._flag:
            session, self._session = self._session, None
        return session

    def abandon(self) -> None:
        """Close a session nobody took (the call failed or its client left); later opens close their own."""
        with self._flag:
            self._abandoned = True
            session, self._session = self._session, None
        if session is not None:
            session.close()


class AddVideoPrompt(_Claimed):
    """``session.add_prompt``; the body is the frame document of every object on the prompt's frame."""

    def __init__(self, store: VideoStore, entry: StoredVideo, body: VideoPromptRequest, server: ServerConfig):
        super().__init__(store, entry)
        self.body, self.server = body, server

    def prompt(self) -> dict[str, Any]:
        """The SDK prompt dict (``VideoPrompt.from_dict`` form)."""
        prompt: dict[str, Any] = {"frame": self.body.frame, "obj_id": self.body.obj_id}
        if self.body.box is not None:
            prompt["box"] = tuple(self.body.box)
        if self.body.points:
            prompt["points"] = [(p.x, p.y, p.label) for p in self.body.points]
        return prompt

    def run(self, segmentor: Segmentor, cancel: CancelToken) -> tuple[dict[str, Any], dict[str, float]]:
        from ..video.outputs import frame_document

        session = self.entry.session
        if session is None:
            raise InvalidInputError(
                'this server runs SAM 3, which tracks phrases: POST /v1/videos/{id}/propagate with {"text": ...}'
            )
        if self.body.box is None and not self.body.points:
            raise InvalidInputError("a video prompt needs 'box', 'points' or both")
        limit = self.server.max_video_objects
        if self.body.obj_id not in session.object_ids and len(session.object_ids) >= limit:
            raise RequestTooLargeError(
                f"the video already tracks {len(session.object_ids)} objects, the limit (server.max_video_objects)"
            )
        start = time.perf_counter()
        results = session.add_prompt(self.prompt(), output_formats=formats_of(self.body.output_formats))
        return frame_document(self.body.frame, results), {"video_prompt": time.perf_counter() - start}


class PropagateVideo(_Claimed):
    """``session.propagate``; each frame's document goes to ``emit`` (a JSON text line) as soon as it is done."""

    def __init__(
        self,
        store: VideoStore,
        entry: StoredVideo,
        body: PropagateRequest,
        emit: Callable[[str], None],
        room: threading.Semaphore,
    ) -> None:
        super().__init__(store, entry)
        self.body, self.emit, self.room = body, emit, room
        self.frames = 0

    def run(self, segmentor: Segmentor, cancel: CancelToken) -> tuple[dict[str, Any], dict[str, float]]:
        from ..video.outputs import frame_document

        start = time.perf_counter()
        body, session = self.body, self.entry.session
        ranges: dict[str, Any] = {
            "reverse": body.reverse,
            "start_frame": body.start_frame,
            "max_frames": body.max_frames,
        }
        formats = formats_of(body.output_formats)
        if session is not None:
            if body.text is not None:
                raise TextPromptsUnsupportedError(f"text prompts need model sam3, not {segmentor.config.model.name!r}")
            stream = session.propagate(**ranges, output_formats=formats, cancel=cancel)
        elif body.text is None:
            raise InvalidInputError("model sam3 tracks a phrase: give 'text' (every instance of it is tracked)")
        else:
            prompt = {"frame": body.start_frame or 0, "text": body.text}
            stream = segmentor.track(str(self.entry.path), [prompt], **ranges, output_formats=formats, cancel=cancel)
        try:
            for frame_index, results in stream:
                line = json.dumps(frame_document(frame_index, results), separators=(",", ":")) + "\n"
                while not self.room.acquire(timeout=0.05):  # the client reads slower than we track
                    cancel.check()
                self.emit(line)
                self.frames += 1
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return {"frames": self.frames}, {"propagate": time.perf_counter() - start}
