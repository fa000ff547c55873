"""What one ``/v1/ws`` annotation session remembers: its image, each object's clicks, box and last mask (with the
low-resolution logits that refine the next click), and a bounded undo history.

Pure bookkeeping: no I/O and no model calls (those go through
:meth:`ServiceState.execute <perceptra_seg.service.state.ServiceState.execute>`, see :mod:`.ws`). Memory is bounded
by ``server.ws_max_objects`` objects plus ``server.ws_max_undo`` undo steps, each holding one mask result and its
``[L, L]`` float32 logits (256 KiB for Meta's models), plus at most ``server.max_points_per_prompt`` clicks per object.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from ..exceptions import InvalidInputError, NotFoundError
from ..models import BBox, EmbeddedImage, Point, Prompt, SegmentationResult
from ..results import mask_document
from ..utils.coco import to_coco_results
from .errors import RequestTooLargeError

__all__ = ["AnnotationSession", "NoImageError", "NothingToUndoError", "ObjectState"]


class NoImageError(InvalidInputError):
    """A prompt (or export) arrived before any ``image`` / ``image_id`` message."""

    code = "no_image"


class NothingToUndoError(InvalidInputError):
    """``undo`` with an empty history (nothing done yet, or ``server.ws_max_undo`` is 0)."""

    code = "nothing_to_undo"


@dataclass(frozen=True)
class ObjectState:
    """One object's prompt and its current mask.

    Attributes:
        points: every click so far, ``(x, y, label)`` in original-image pixels, in click order.
        box: the last ``(x1, y1, x2, y2)`` box given for the object, or ``None``.
        result: the mask of that prompt (``rle`` and ``low_res_logits`` filled in).
    """

    points: tuple[Point, ...]
    box: BBox | None
    result: SegmentationResult

    def document(self, object_id: int) -> dict[str, Any]:
        """The ``mask`` message body (without ``latency_ms``): ``object``, ``points``, ``box``, ``rle``, ``score``,
        ``area``, ``bbox`` (``[x1, y1, x2, y2]``, ``x2``/``y2`` exclusive)."""
        fields = mask_document(self.result, encodings=("rle",))
        fields.pop("prompt_index", None)
        return {
            "type": "mask",
            "object": object_id,
            "points": [{"x": x, "y": y, "label": label} for x, y, label in self.points],
            "box": None if self.box is None else list(self.box),
            **fields,
        }


class AnnotationSession:
    """Objects and undo history of one WebSocket session (one coroutine uses it at a time).

    Args:
        max_objects: objects that may hold a mask at once (``server.ws_max_objects``).
        max_undo: undo steps remembered, oldest dropped first (``server.ws_max_undo``; 0 = none).
        max_points: clicks one object may accumulate (``server.max_points_per_prompt``).
    """

    def __init__(self, *, max_objects: int, max_undo: int, max_points: int) -> None:
        self.max_objects = max_objects
        self.max_points = max_points
        self.image: EmbeddedImage | None = None
        self.image_id: str | None = None
        self.objects: dict[int, ObjectState] = {}
        self._undo: deque[tuple[int, ObjectState | None]] = deque(maxlen=max_undo)

    def set_image(self, handle: EmbeddedImage, image_id: str) -> None:
        """Start over on a new image: objects and undo history are dropped."""
        self.image, self.image_id = handle, image_id
        self.reset()

    def reset(self) -> None:
        """Drop every object and the undo history (the image stays)."""
        self.objects.clear()
        self._undo.clear()

    def require_image(self) -> EmbeddedImage:
        """The session's image handle.

        Raises:
            NoImageError: no ``image`` / ``image_id`` message yet.
        """
        if self.image is None:
            raise NoImageError("send an 'image' (or 'image_id') message first")
        return self.image

    def next_prompt(self, object_id: int, points: tuple[Point, ...], box: BBox | None) -> Prompt:
        """The prompt that refines ``object_id`` with new ``points`` (added to its earlier clicks) and ``box``
        (replacing its earlier box; ``None`` keeps it): the object's previous ``low_res_logits`` go along as
        ``mask_input``, exactly as the SDK's ``segment_from_points(..., mask_input=previous.low_res_logits)``.

        Raises:
            NoImageError: no image yet.
            RequestTooLargeError: a new object beyond ``max_objects``, or more than ``max_points`` clicks.
        """
        self.require_image()
        previous = self.objects.get(object_id)
        if previous is None and len(self.objects) >= self.max_objects:
            raise RequestTooLargeError(
                f"this session already holds {len(self.objects)} objects, the limit (server.ws_max_objects); "
                "delete one first"
            )
        all_points = (previous.points if previous is not None else ()) + points
        if len(all_points) > self.max_points:
            raise RequestTooLargeError(
                f"object {object_id} would have {len(all_points)} points, over the limit of {self.max_points} "
                "(server.max_points_per_prompt)"
            )
        kept_box = box if box is not None else (previous.box if previous is not None else None)
        logits = previous.result.low_res_logits if previous is not None else None
        return Prompt(box=kept_box, points=all_points, mask_input=logits)

    def record(self, object_id: int, prompt: Prompt, result: SegmentationResult) -> ObjectState:
        """Store ``result`` as the object's mask for ``prompt`` (one undo step)."""
        state = ObjectState(points=prompt.points, box=prompt.box, result=result)
        self._undo.append((object_id, self.objects.get(object_id)))
        self.objects[object_id] = state
        return state

    def delete(self, object_id: int) -> None:
        """Forget ``object_id`` (one undo step).

        Raises:
            NotFoundError: no such object.
        """
        state = self.objects.pop(object_id, None)
        if state is None:
            raise NotFoundError(f"object {object_id} does not exist in this session")
        self._undo.append((object_id, state))

    def undo(self) -> tuple[int, ObjectState | None]:
        """Take back the last prompt or deletion; returns the object and its restored state (``None``: the object
        did not exist before, so it is gone now).

        Raises:
            NothingToUndoError: the history is empty.
        """
        if not self._undo:
            raise NothingToUndoError("nothing to undo")
        object_id, before = self._undo.pop()
        if before is None:
            self.objects.pop(object_id, None)
        else:
            self.objects[object_id] = before
        return object_id, before

    def export(self, *, coco_image_id: int, category_id: int) -> dict[str, Any]:
        """Every object's mask as COCO results (``COCO.loadRes`` reads the list), in object order.

        Returns:
            ``{"type": "export", "objects": [k, ...], "annotations": [{image_id, category_id, segmentation, score,
            bbox (XYWH), area}, ...]}``, ``annotations[i]`` being object ``objects[i]``.

        Raises:
            NoImageError: no image yet.
        """
        self.require_image()
        ids = sorted(self.objects)
        annotations = to_coco_results(
            [self.objects[k].result for k in ids], image_id=coco_image_id, category_id=category_id
        )
        return {"type": "export", "objects": ids, "annotations": annotations}
