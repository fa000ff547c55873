"""What ``Segmentor.open_video`` and ``Segmentor.track`` do (kept out of ``core.py``, which only delegates)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..cancel import CancelToken
from ..exceptions import InvalidInputError
from ..models import SegmentationResult
from ..utils.masks import validate_formats
from .frames import FrameSource, open_frames
from .loaded_once import drop, loaded_once
from .model import VideoModel, load_video_model
from .prompts import VideoPrompt
from .sam3_tracking import check_concept_prompts, track_concept
from .session import VideoSession

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["default_start_frame", "open_session", "release_video_model", "track", "video_model"]

_ATTRIBUTE = "_video_model"


def video_model(seg: Segmentor) -> VideoModel:
    """The segmentor's tracking model, loaded on first use (once, even when threads race) and kept until
    :meth:`Segmentor.close`."""
    return loaded_once(seg, _ATTRIBUTE, lambda: load_video_model(seg.config))


def release_video_model(seg: Segmentor) -> None:
    """Drop the segmentor's tracking model (sessions still open keep theirs until they close)."""
    drop(seg, _ATTRIBUTE)


def open_session(seg: Segmentor, video: Any) -> VideoSession:
    """A :class:`VideoSession` on ``video`` (see :func:`~perceptra_seg.video.frames.open_frames` for what it may be)."""
    model = video_model(seg)  # an image-only model fails here, before the video is opened
    owns = not isinstance(video, FrameSource)
    frames = open_frames(video)
    return VideoSession(model, frames, outputs=seg.config.outputs, owns_frames=owns)


def track(
    seg: Segmentor,
    video: Any,
    prompts: Iterable[VideoPrompt | Mapping[str, Any]],
    *,
    reverse: bool = False,
    start_frame: int | None = None,
    max_frames: int | None = None,
    output_formats: Sequence[str] = ("rle",),
    cancel: CancelToken | None = None,
) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
    """Open ``video``, apply every prompt (in order), propagate once, and close the session when the iterator is
    exhausted or closed. Prompts, formats and frame ranges are checked before this returns."""
    parsed = [VideoPrompt.from_dict(p) for p in prompts]
    if not parsed:
        raise InvalidInputError("track needs at least one prompt")
    validate_formats(output_formats)
    if check_concept_prompts(seg.config.model.name, parsed) is not None:
        return _track_concept(seg, video, parsed[0], reverse, start_frame, max_frames, output_formats, cancel)
    session = open_session(seg, video)
    try:
        for prompt in parsed:
            prompt.check_fits(session.num_frames, *session.frame_size)
        if start_frame is None:
            start_frame = default_start_frame([p.frame for p in parsed], reverse=reverse)
        for prompt in parsed:
            session.add_prompt(prompt, output_formats=())
        frames = session.propagate(
            reverse=reverse,
            start_frame=start_frame,
            max_frames=max_frames,
            output_formats=output_formats,
            cancel=cancel,
        )
    except BaseException:
        session.close()
        raise
    return _closing(session, frames)


def _track_concept(
    seg: Segmentor,
    video: Any,
    prompt: VideoPrompt,
    reverse: bool,
    start_frame: int | None,
    max_frames: int | None,
    output_formats: Sequence[str],
    cancel: CancelToken | None,
) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
    """SAM 3: every instance of the prompt's phrase (:mod:`perceptra_seg.video.sam3_tracking`)."""
    owns = not isinstance(video, FrameSource)
    frames = open_frames(video)
    try:
        prompt.check_fits(frames.num_frames, frames.height, frames.width)
        results = track_concept(
            seg,
            frames,
            prompt,
            reverse=reverse,
            start_frame=start_frame,
            max_frames=max_frames,
            output_formats=validate_formats(output_formats),
            cancel=cancel,
        )
    except BaseException:
        if owns:
            frames.close()
        raise
    return _closing(frames if owns else None, results)


def _closing(
    owner: VideoSession | FrameSource | None, results: Iterator[Any]
) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
    """``results``, then ``owner.close()`` when they are exhausted or the iterator is closed (``None``: nothing)."""
    try:
        yield from results
    finally:
        if owner is not None:
            owner.close()


def default_start_frame(prompted_frames: list[int], *, reverse: bool) -> int:
    """Where :func:`track` starts without ``start_frame``: the first prompted frame, the last one with ``reverse``."""
    return max(prompted_frames) if reverse else min(prompted_frames)
