"""``VideoSession``: prompt objects on any frame of one video, propagate, and stream per-frame masks."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..cancel import CancelToken, check
from ..config import OutputsConfig
from ..exceptions import InvalidInputError
from ..models import SegmentationResult
from ..utils.masks import encode_outputs, mask_area, mask_bbox, validate_formats
from . import tracker
from .frames import FrameSource
from .model import VideoModel
from .prompts import VideoPrompt

__all__ = ["VideoSession", "frame_pixel_values"]

logger = logging.getLogger(__name__)

_MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float32)[:, None, None]
_STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float32)[:, None, None]


def frame_pixel_values(frame: np.ndarray, image_size: int) -> torch.Tensor:
    """Model input ``[1, 3, S, S]`` float32 of an RGB ``uint8`` ``[H, W, 3]`` frame, exactly as Meta's video loader
    prepares a JPEG frame: PIL resize to ``S×S`` (Pillow's default filter, bicubic), ``/ 255``, then ImageNet
    mean/std normalisation."""
    resized = np.asarray(Image.fromarray(frame).resize((image_size, image_size)))
    pixels = torch.from_numpy(resized / 255.0).permute(2, 0, 1).float()
    return ((pixels - _MEAN) / _STD)[None]


class VideoSession:
    """Interactive tracking on one video: :meth:`add_prompt`, :meth:`propagate`, :meth:`remove_object`,
    :meth:`reset`, :meth:`close` (also a context manager). Returned by :meth:`Segmentor.open_video`.

    Results are :class:`~perceptra_seg.models.SegmentationResult` per object id: the mask at the frame's size
    (low-resolution logits resized bilinearly, ``> 0``), in the formats asked for; ``score`` is the model's
    object-presence probability on that frame (sigmoid of SAM 2's object-score logit; < 0.5 means the object is
    judged absent and its mask is empty); ``area``/``bbox`` as for images; ``latency_ms`` the time of that frame's
    step; ``request_id`` the session id.

    Memory: frames are decoded when visited and never stored; the tracking state keeps each object's prompted
    frames and only the recent tracked frames the model reads (see :mod:`perceptra_seg.video.tracker`).
    A session is meant for one thread at a time; calls from several threads are serialised.

    Attributes:
        num_frames: frames in the video.
        frame_size: ``(H, W)`` of every frame.
        session_id: random id, used as the results' ``request_id``.
    """

    def __init__(
        self, video_model: VideoModel, frames: FrameSource, *, outputs: OutputsConfig, owns_frames: bool = True
    ) -> None:
        self._model: VideoModel | None = video_model
        self._frames: FrameSource | None = frames
        self._owns_frames = owns_frames
        self._outputs = outputs
        self.num_frames = frames.num_frames
        self.frame_size = (frames.height, frames.width)
        self.session_id = uuid.uuid4().hex
        self._state: tracker.TrackingState | None = tracker.new_state(video_model, frames.num_frames)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> VideoSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the tracking state and cached features, and close the video if the session opened it."""
        with self._lock:
            if self._state is not None:
                self._state.clear()
            self._state = None
            self._model = None  # the Segmentor keeps the model; a closed session holds no reference to it
            if self._frames is not None and self._owns_frames:
                self._frames.close()
            self._frames = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._state is None

    @property
    def object_ids(self) -> list[int]:
        """The object ids prompted so far, in the order they were first prompted."""
        return list(self._live().obj_ids)

    @property
    def state(self) -> tracker.TrackingState:
        """The tracking state (plain tensors, ids and prompts)."""
        return self._live()

    def _live(self) -> tracker.TrackingState:
        if self._state is None:
            raise InvalidInputError("the video session is closed")
        return self._state

    def _network(self) -> VideoModel:
        if self._model is None:
            raise InvalidInputError("the video session is closed")
        return self._model

    def _source(self) -> FrameSource:
        if self._frames is None:
            raise InvalidInputError("the video session is closed")
        return self._frames

    # ------------------------------------------------------------------ prompts and tracking

    def add_prompt(
        self, prompt: VideoPrompt | Mapping[str, Any], *, output_formats: Sequence[str] = ("rle",)
    ) -> dict[int, SegmentationResult]:
        """Prompt one object on one frame (box, clicks, box + clicks, or a mask) and return every object's mask on
        that frame afterwards, keyed by object id (as Meta's ``add_new_points_or_box``).

        A frame the object was not tracked on yet is segmented from the prompt alone; on a frame it was tracked on
        the prompt corrects that mask. Either way the frame conditions all later propagation of the object.

        Raises:
            InvalidInputError: a malformed prompt, a frame out of range, a box/point outside the frame, a mask of
                another size, or a closed session.
        """
        formats = validate_formats(output_formats)
        parsed = VideoPrompt.from_dict(prompt)
        if parsed.text is not None:
            raise InvalidInputError(
                "a video session takes box, point and mask prompts; text prompts go to Segmentor.track (model sam3)"
            )
        with self._lock:
            state = self._live()
            parsed.check_fits(self.num_frames, *self.frame_size)
            start = time.perf_counter()
            self._encode(parsed.frame)
            outputs = tracker.add_prompt(self._network(), state, parsed, self.frame_size)
            return self._results(outputs, formats, start)

    def propagate(
        self,
        *,
        reverse: bool = False,
        start_frame: int | None = None,
        max_frames: int | None = None,
        output_formats: Sequence[str] = ("rle",),
        cancel: CancelToken | None = None,
    ) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
        """Track every prompted object through the video, yielding ``(frame_index, {obj_id: result})`` for each
        frame as soon as it is done, in processing order (ascending, or descending with ``reverse``).

        Args:
            reverse: track towards frame 0.
            start_frame: first frame to process; default: the earliest prompted frame (as Meta's predictor).
            max_frames: at most this many frames are processed and yielded; default: to the end (or frame 0).
            output_formats: ``numpy``, ``rle``, ``png``, ``polygons``.
            cancel: checked before each frame; a cancelled token stops the iteration with
                :class:`~perceptra_seg.cancel.OperationCancelledError`.

        Raises:
            InvalidInputError: no object prompted yet, ``start_frame`` out of range, ``max_frames`` < 1, a closed
                session (raised here, before iterating).
        """
        formats = validate_formats(output_formats)
        state = self._live()
        if not state.obj_ids:
            raise InvalidInputError("no object to track: add a prompt first")
        if start_frame is None:
            start_frame = min(f for d in state.output_dict_per_obj.values() for f in d["cond_frame_outputs"])
        if isinstance(start_frame, bool) or not isinstance(start_frame, int) or not 0 <= start_frame < self.num_frames:
            raise InvalidInputError(
                f"start_frame {start_frame!r} is out of range: the video has {self.num_frames} frames"
            )
        if max_frames is not None and (
            isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1
        ):
            raise InvalidInputError(f"max_frames must be a positive integer, got {max_frames!r}")
        limit = self.num_frames if max_frames is None else max_frames
        if reverse:
            order = range(start_frame, max(start_frame - limit, -1), -1)
        else:
            order = range(start_frame, min(start_frame + limit, self.num_frames))
        return self._propagate(order, reverse, formats, cancel)

    def _propagate(
        self, order: range, reverse: bool, formats: Sequence[Any], cancel: CancelToken | None
    ) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
        for frame_idx in order:
            check(cancel)
            with self._lock:
                state = self._live()
                start = time.perf_counter()
                self._encode(frame_idx)
                outputs = tracker.propagate_frame(self._network(), state, frame_idx, reverse=reverse)
                results = self._results(outputs, formats, start)
            yield frame_idx, results

    def remove_object(self, obj_id: int) -> None:
        """Stop tracking ``obj_id`` and forget its prompts and memory.

        Raises:
            InvalidInputError: ``obj_id`` was never prompted (or was removed).
        """
        with self._lock:
            state = self._live()
            if obj_id not in state.obj_ids:
                raise InvalidInputError(f"unknown object id {obj_id!r}; the session tracks {state.obj_ids}")
            tracker.remove_object(state, obj_id)

    def reset(self) -> None:
        """Forget every object, prompt and tracked frame; the video stays open for new prompts."""
        with self._lock:
            self._live().clear()

    # ------------------------------------------------------------------ helpers

    def _encode(self, frame_idx: int) -> None:
        state = self._live()
        if state.cache.get_vision_features(frame_idx) is None:
            pixels = frame_pixel_values(self._source().frame(frame_idx), self._network().image_size)
            with torch.inference_mode():
                tracker.ensure_features(self._network(), state, frame_idx, pixels)

    def _results(
        self, outputs: dict[int, tracker.FrameOutput], formats: Sequence[Any], start: float
    ) -> dict[int, SegmentationResult]:
        height, width = self.frame_size
        info = self._network().info()
        results = {}
        for obj_id, output in outputs.items():
            logits = F.interpolate(output.logits.float(), size=(height, width), mode="bilinear", align_corners=False)
            mask = (logits[0, 0] > 0).cpu().numpy()
            score = 1.0 / (1.0 + math.exp(-max(min(output.object_score_logit, 80.0), -80.0)))
            results[obj_id] = SegmentationResult(
                score=score,
                area=mask_area(mask),
                bbox=mask_bbox(mask),
                latency_ms=(time.perf_counter() - start) * 1000.0,
                model_info=info,
                request_id=self.session_id,
                **encode_outputs(mask, formats, self._outputs),
            )
        return results
