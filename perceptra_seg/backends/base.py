"""The backend protocol: the encode/decode split every runtime implements.

A backend turns an image into an opaque :class:`ImageEmbedding` once (the expensive part), then answers any number
of prompt batches against it with the small mask decoder. Everything before ``encode`` (image decoding, validation)
and after ``decode`` (upsampling, thresholding, output encoding) is backend-independent and lives in the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..registry import Family

__all__ = ["Backend", "DecoderOutput", "Family", "ImageEmbedding", "PromptBatch", "require_backend"]


@dataclass
class ImageEmbedding:
    """The encoder's output for one image, plus the geometry needed to map prompts and logits.

    Attributes:
        original_size: ``(H, W)`` of the image given to ``encode``.
        input_size: ``(h, w)`` of the resized image inside the model's 1024×1024 input (SAM 1: longest side 1024,
            the rest padding; SAM 2: always ``(1024, 1024)``).
        features: backend-specific tensors (opaque to the core).
        nbytes: memory held by ``features``, used by the byte-bounded embedding cache.
    """

    original_size: tuple[int, int]
    input_size: tuple[int, int]
    features: Any = field(repr=False)
    nbytes: int


@dataclass(frozen=True)
class PromptBatch:
    """N prompts of one shape, in model-input coordinates (already scaled to the 1024 input frame).

    Every prompt in a batch has the same structure (same number of points, box or not, mask or not), so one decoder
    call answers all of them exactly as N separate calls would.

    Attributes:
        points: float32 ``[N, P, 2]`` as ``(x, y)``, or ``None``.
        labels: int64 ``[N, P]`` (1 foreground, 0 background), or ``None``.
        boxes: float32 ``[N, 4]`` as ``(x1, y1, x2, y2)``, or ``None``.
        mask_inputs: float32 ``[N, 1, S, S]`` low-resolution logits of earlier predictions (``S`` =
            :attr:`Backend.mask_size`), or ``None``.
    """

    points: np.ndarray | None = None
    labels: np.ndarray | None = None
    boxes: np.ndarray | None = None
    mask_inputs: np.ndarray | None = None

    def __len__(self) -> int:
        for array in (self.boxes, self.points, self.mask_inputs):
            if array is not None:
                return int(array.shape[0])
        return 0


@dataclass(frozen=True)
class DecoderOutput:
    """Decoder results for a :class:`PromptBatch` of N prompts with K masks each.

    Attributes:
        low_res_logits: float32 ``[N, K, S, S]`` mask logits over the whole 1024 input (``S`` =
            :attr:`Backend.mask_size`, 256 for Meta's models: a quarter of the input's resolution).
        iou_scores: float32 ``[N, K]`` predicted IoU of each mask.
        mask_logits: float32 ``[N, K, S, S]`` the logits the masks are upsampled from, when the model's own
            predictor post-processes them first (SAM 3's tracker fills small holes) and returns ``low_res_logits``
            unprocessed; ``None``: the masks come from ``low_res_logits``.
    """

    low_res_logits: np.ndarray
    iou_scores: np.ndarray
    mask_logits: np.ndarray | None = None


@runtime_checkable
class Backend(Protocol):
    """What the core needs from a runtime (PyTorch, ONNX Runtime, a test fake).

    A runtime subclasses it (and so inherits the defaults of the optional hooks, such as :meth:`check_prompts`) or
    implements every member itself; ``isinstance(obj, Backend)`` checks that every member is there.
    """

    #: ``sam1`` or ``sam2``: selects preprocessing and coordinate mapping in the core.
    family: Family
    #: Identifies backend, device, precision and weights; part of every embedding-cache key.
    fingerprint: str
    #: Side ``S`` of the square low-resolution logits and mask inputs: 4 × the embedding grid (256 for every Meta
    #: model, whose 1024 input becomes a 64×64 grid of 16-pixel patches).
    mask_size: int

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """Run the image encoder on an RGB uint8 ``[H, W, 3]`` image."""
        ...

    def decode(self, embedding: ImageEmbedding, batch: PromptBatch, *, multimask: bool) -> DecoderOutput:
        """Run prompt encoder + mask decoder for a batch (K = 3 masks if ``multimask`` else 1)."""
        ...

    def info(self) -> dict[str, Any]:
        """Model name, variant, backend, device, precision and checkpoint fingerprint (for results and logs)."""
        ...

    def check_prompts(self) -> None:
        """Refuse box / point prompts this model cannot answer at all, before any image is encoded for them.

        Called by the core once per segment request (never for text / concept requests). The default, inherited by
        every backend that subclasses :class:`Backend`, accepts them; SAM 3 without tracker weights overrides it.

        Raises:
            InvalidInputError: the model has no head for box / point prompts (the message says why).
        """
        return None

    def close(self) -> None:
        """Release models and device memory. Idempotent; afterwards ``encode`` / ``decode`` raise
        :class:`~perceptra_seg.exceptions.BackendError` ("the <name> backend is closed")."""
        ...


def require_backend(candidate: object) -> Backend:
    """``candidate`` itself when it has every member of :class:`Backend`.

    Raises:
        ConfigError: a member is missing (named in the message); subclassing :class:`Backend` inherits the optional
            hooks (such as :meth:`Backend.check_prompts`).
    """
    if isinstance(candidate, Backend):
        return candidate
    from ..exceptions import ConfigError

    members = {name for name in (*vars(Backend), *Backend.__annotations__) if not name.startswith("_")}
    missing = sorted(name for name in members if not hasattr(candidate, name))
    raise ConfigError(
        f"backend {type(candidate).__name__} is not a perceptra_seg Backend: it lacks {missing} (subclass "
        "perceptra_seg.backends.Backend to inherit the optional hooks)"
    )
