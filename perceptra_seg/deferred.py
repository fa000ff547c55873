"""Calls of :class:`~perceptra_seg.core.Segmentor` whose implementation needs PyTorch, imported on first use.

Kept out of ``core.py`` so that module stays orchestration only: ``Segmentor.open_video`` and ``Segmentor.track``
are these functions (``self`` is the segmentor); automatic masks go through :func:`execute_automatic_request`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .cancel import CancelToken
from .extras import missing_extra
from .models import SegmentationResult
from .requests import AutoMaskRequest
from .results import ResultSet

if TYPE_CHECKING:
    from .core import Segmentor
    from .video.prompts import VideoPrompt
    from .video.session import VideoSession

__all__ = ["execute_automatic_request", "open_video", "track"]


def execute_automatic_request(seg: Segmentor, request: AutoMaskRequest, cancel: CancelToken | None) -> ResultSet:
    """Run an automatic-mask request; its upsampling and NMS need PyTorch, imported here (not with the package).

    Raises:
        ModelLoadError: PyTorch is not installed (names the ``torch`` extra's install line).
    """
    try:
        from .automatic.execute import execute_automatic
    except ImportError as exc:
        raise missing_extra("torch", exc) from exc
    return execute_automatic(seg, request, cancel)


def open_video(self: Segmentor, video: Any) -> VideoSession:
    """An interactive tracking session on ``video`` (SAM 2 / 2.1 models only; see ``docs/video.md``).

    Args:
        video: a video file (mp4/webm/mov… through PyAV), a folder of JPEG/PNG frames (ordered by the number in
            each name), or a sequence of RGB ``uint8`` ``[H, W, 3]`` arrays.

    Returns:
        A :class:`~perceptra_seg.video.session.VideoSession` (a context manager): ``add_prompt``, ``propagate``,
        ``remove_object``, ``reset``, ``close``.

    Raises:
        InvalidInputError: an image-only model (``sam_v1``, ``demo``), or a video that cannot be opened.
        ModelLoadError: the tracking weights cannot be loaded (loaded once per ``Segmentor``, on first use).
    """
    from .video.api import open_session

    return open_session(self, video)


def track(
    self: Segmentor,
    video: Any,
    prompts: Iterable[Mapping[str, Any] | VideoPrompt],
    *,
    reverse: bool = False,
    start_frame: int | None = None,
    max_frames: int | None = None,
    output_formats: Sequence[str] = ("rle",),
    cancel: CancelToken | None = None,
) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
    """Track objects through ``video`` and stream the masks.

    Every prompt (``{"frame", "obj_id", "box"?, "points"?, "mask"?}`` in original-frame pixels: box XYXY, points
    ``(x, y, label)``, mask bool ``[H, W]``) is applied in order, then the objects are propagated once.

    With ``model="sam3"`` the one prompt is a phrase, ``{"frame": F, "text": "red car"}``: every instance of it is
    found and tracked forward from frame ``F``; the model numbers the instances (results keyed by those ids, with
    the phrase as ``label``). SAM 3 holds back its first frames until its hot start (15 frames) has confirmed them.

    Args:
        video: as for :func:`open_video`.
        prompts: at least one; several objects and several frames per object are allowed.
        reverse: propagate towards frame 0.
        start_frame: first frame processed; default: the earliest prompted frame (the latest with ``reverse``).
        max_frames: at most this many frames are processed; default: to the end of the video (or frame 0).
        output_formats: ``numpy``, ``rle``, ``png``, ``polygons``.
        cancel: checked before each frame (:class:`~perceptra_seg.cancel.OperationCancelledError`).

    Returns:
        An iterator of ``(frame_index, {obj_id: SegmentationResult})`` in processing order; each frame is yielded as
        soon as it is done. The video is closed when the iterator is exhausted or closed.

    Raises:
        InvalidInputError: an invalid prompt, frame or box out of range, an image-only model, a text prompt for a model
            other than sam3 or mixed with other prompts (before iterating).
    """
    from .video.api import track as track_video

    return track_video(
        self,
        video,
        prompts,
        reverse=reverse,
        start_frame=start_frame,
        max_frames=max_frames,
        output_formats=output_formats,
        cancel=cancel,
    )
