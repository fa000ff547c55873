"""Text-prompted concept tracking with SAM 3: ``Segmentor(model="sam3").track(video, [{"frame": F, "text": ...}])``.

SAM 3's video model finds every instance of a noun phrase on each frame (its concept detector), tracks them with
its memory tracker, and reconciles the two every frame (Meta's planning: new objects, matching, hot-start removal,
suppression, reconditioning; see :mod:`perceptra_seg.video.sam3_model`). Each instance keeps one object id for the
whole video; the results carry its mask, its detection score and the phrase as ``label``.

The weights are Meta's ``sam3.pt`` (``detector.*`` and ``tracker.*``), converted to transformers' ``Sam3VideoModel``
with ``strict=True``. Frames are decoded and prepared when the model reads them (one at a time); the tracking state
is transformers' ``Sam3VideoInferenceSession``, which in this first version is **not yet a plain value**: it lives
in the process that runs :func:`track_concept` and cannot be written out or moved to another worker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..backends.torch_backend import resolve_device
from ..cancel import CancelToken, check
from ..concepts.backend import Sam3Backend, _deep_merge, _vocabulary
from ..concepts.forward import preprocess
from ..concepts.tokenizer import ConceptTokenizer
from ..config import OutputsConfig, SegmentorConfig
from ..conversion import unwrap_checkpoint
from ..exceptions import ConfigError, InvalidInputError, ModelLoadError
from ..models import SegmentationResult
from ..registry import architecture_config, get_model_spec
from ..utils.masks import encode_outputs, mask_area, mask_bbox
from ..weights import resolve_configured_checkpoint
from .frames import FrameSource
from .loaded_once import loaded_once
from .prompts import VideoPrompt
from .sam3_conversion import has_sam3_tracker
from .sam3_post import postprocess_step

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["ConceptTracker", "concept_tracker", "track_concept"]

_ATTRIBUTE = "_concept_tracker"


class _PreparedFrames(Mapping[int, torch.Tensor]):
    """The session's frame store: frame ``i`` decoded and prepared (``[3, S, S]`` float32, Meta's transform) when
    the model asks for it; only the last prepared frame is kept. Each new frame first calls ``on_frame(i)`` (the
    cancel check and the trimming of the tracking memory)."""

    def __init__(self, frames: FrameSource, resolution: int, on_frame: Callable[[int], None]) -> None:
        self._frames, self._resolution, self._on_frame = frames, resolution, on_frame
        self._last: tuple[int, torch.Tensor] | None = None

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._last is None or self._last[0] != index:
            self._on_frame(index)
            self._last = (index, preprocess(self._frames.frame(index), self._resolution)[0])
        return self._last[1]

    def __len__(self) -> int:
        return self._frames.num_frames

    def __iter__(self) -> Iterator[int]:
        return iter(range(self._frames.num_frames))


def memory_window(model: Any) -> int:
    """Frames behind the current one whose tracked outputs the tracker still reads: its memory frames
    (``num_maskmem``) and object pointers (``max_object_pointers_in_encoder``)."""
    config = model.config.tracker_config
    return max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder))


def forget_before(session: Any, frame: int) -> None:
    """Drop every object's tracked (non-conditioning) outputs of frames before ``frame`` (forward tracking).

    transformers' session keeps every frame's memory features (``[64, 72, 72]`` float32) and masks for every object;
    the tracker reads only the last :func:`memory_window` frames, so older ones only cost memory. Conditioning
    frames (the one an object was found on, and reconditioned ones) are kept.
    """
    for outputs in session.output_dict_per_obj.values():
        tracked = outputs["non_cond_frame_outputs"]
        for old in [index for index in tracked if index < frame]:
            del tracked[old]


class ConceptTracker:
    """SAM 3's video model (weights, tokenizer, device), loaded once per :class:`~perceptra_seg.core.Segmentor`."""

    def __init__(self, config: SegmentorConfig, detector: Any = None) -> None:
        """Load from ``config``'s checkpoint; ``detector`` (the image backend's ``Sam3Model`` from the same file) is
        shared instead of loading a second copy when it fits."""
        spec = get_model_spec(config.model.name, config.model.variant)
        if config.runtime.backend != "torch":
            raise ConfigError(f"SAM 3 video tracking runs on the torch backend only, not {config.runtime.backend!r}")
        if config.runtime.precision not in ("auto", "fp32"):
            raise ConfigError(f"SAM 3 video tracking runs in fp32 only, not {config.runtime.precision!r}")
        self.device = resolve_device(config.runtime.device)
        source = resolve_configured_checkpoint(spec, config.model)
        location = Path(source.location)
        if source.kind != "meta":
            raise ModelLoadError(
                f"SAM 3 video tracking loads Meta's sam3.pt (detector and tracker), not {source.location!r}"
            )
        try:
            state = unwrap_checkpoint(torch.load(location, map_location="cpu", weights_only=True))
        except (RuntimeError, EOFError, ValueError, OSError) as exc:
            raise ModelLoadError(f"cannot read checkpoint {location}: {exc}") from None
        if not has_sam3_tracker(state):
            raise ModelLoadError(f"checkpoint {location.name} has no SAM 3 video tracker ('tracker.*' weights)")
        from .sam3_model import load_concept_video_model

        architecture = _deep_merge(architecture_config("sam3", "default", "sam3"), config.model.architecture or {})
        try:
            model = load_concept_video_model(state, architecture, detector)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"checkpoint {location.name} does not fit SAM 3's video model: {exc}") from None
        self.model: Any = model.to(self.device)
        self.tokenizer = ConceptTokenizer.from_bpe_file(_vocabulary(location, config))
        self.resolution = int(model.config.detector_config.vision_config.backbone_config.image_size)
        self._info = {
            "model": spec.name,
            "variant": spec.variant,
            "backend": "torch",
            "device": str(self.device),
            "precision": "fp32",
            "checkpoint": source.fingerprint,
        }

    def info(self) -> dict[str, Any]:
        """Model name, variant, backend, device, precision and checkpoint fingerprint (for results)."""
        return dict(self._info)

    def track(
        self,
        frames: FrameSource,
        phrase: str,
        *,
        start_frame: int,
        max_frames: int | None,
        output_formats: Sequence[Any],
        outputs: OutputsConfig,
        cancel: CancelToken | None = None,
    ) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
        """Yield ``(frame_index, {obj_id: result})`` from ``start_frame`` forward (at most ``max_frames`` frames).

        The model holds back its first outputs for up to 15 frames (Meta's hot start: an instance that is not
        confirmed in that window is dropped before it is ever reported), so the first frame arrives late.
        """
        from transformers.models.sam3_video.modeling_sam3_video import Sam3VideoInferenceSession

        session = Sam3VideoInferenceSession(
            video=None,
            video_height=frames.height,
            video_width=frames.width,
            inference_device=self.device,
            inference_state_device=self.device,
            dtype=torch.float32,
        )
        window = memory_window(self.model)

        def on_frame(index: int) -> None:  # before the model reads frame ``index``: up to 15 run before a yield
            check(cancel)
            forget_before(session, index - window)

        session.processed_frames = _PreparedFrames(frames, self.resolution, on_frame)  # type: ignore[assignment]
        prompt_id = session.add_prompt(phrase)
        session.prompt_input_ids[prompt_id] = self.tokenizer(phrase).to(self.device)
        limit = None if max_frames is None else max_frames - 1  # transformers counts the frames after the first
        request_id = uuid.uuid4().hex
        steps = self.model.propagate_in_video_iterator(
            session, start_frame_idx=start_frame, max_frame_num_to_track=limit
        )
        start = time.perf_counter()
        while True:
            check(cancel)
            output = next(steps, None)
            if output is None:
                return
            ids, scores, masks = postprocess_step(output, session.hotstart_removed_obj_ids, frames.height, frames.width)
            elapsed_ms = (time.perf_counter() - start) * 1000.0
            results = {}
            for obj_id, score, mask in zip(ids.tolist(), scores.tolist(), masks, strict=True):
                results[int(obj_id)] = SegmentationResult(
                    score=float(score),
                    area=mask_area(mask),
                    bbox=mask_bbox(mask),
                    latency_ms=elapsed_ms,
                    model_info=self.info(),
                    request_id=request_id,
                    label=phrase,
                    **encode_outputs(mask, output_formats, outputs),
                )
            yield int(output.frame_idx), results
            start = time.perf_counter()


def concept_tracker(seg: Segmentor) -> ConceptTracker:
    """The segmentor's SAM 3 video model, loaded on first use (once, even when threads race); its detector is the
    image backend's when that is a loaded :class:`~perceptra_seg.concepts.backend.Sam3Backend`."""
    backend = seg.backend
    detector = backend.model if isinstance(backend, Sam3Backend) else None
    return loaded_once(seg, _ATTRIBUTE, lambda: ConceptTracker(seg.config, detector))


def check_concept_prompts(model_name: str, prompts: Sequence[VideoPrompt]) -> str | None:
    """The phrase to track when ``prompts`` are text prompts for SAM 3, ``None`` when they are all geometric.

    Raises:
        InvalidInputError: text prompts for another model, text mixed with box / point / mask prompts, or more than
            one text prompt (one phrase per call).
    """
    texts = [p for p in prompts if p.text is not None]
    if not texts:
        if model_name == "sam3":
            raise InvalidInputError(
                "model sam3 tracks text prompts ({'frame': F, 'text': '...'}); box, point and mask prompts in video "
                "need sam_v2 or edgetam"
            )
        return None
    if model_name != "sam3":
        raise InvalidInputError(f"text prompts need model sam3, not {model_name!r}")
    if len(texts) != len(prompts):
        raise InvalidInputError("text prompts cannot be mixed with box, point or mask prompts in one track call")
    if len(texts) > 1:
        raise InvalidInputError("track takes one text prompt (one phrase) per call")
    return texts[0].text


def track_concept(
    seg: Segmentor,
    frames: FrameSource,
    prompt: VideoPrompt,
    *,
    reverse: bool,
    start_frame: int | None,
    max_frames: int | None,
    output_formats: Sequence[Any],
    cancel: CancelToken | None,
) -> Iterator[tuple[int, dict[int, SegmentationResult]]]:
    """Check the call, load the model, and return the frame iterator of :meth:`ConceptTracker.track`."""
    if reverse:
        raise InvalidInputError("text prompts are tracked forward only (reverse=False)")
    start = prompt.frame if start_frame is None else start_frame
    if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < frames.num_frames:
        raise InvalidInputError(f"start_frame {start!r} is out of range: the video has {frames.num_frames} frames")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise InvalidInputError(f"max_frames must be a positive integer, got {max_frames!r}")
    assert prompt.text is not None
    return concept_tracker(seg).track(
        frames,
        prompt.text,
        start_frame=start,
        max_frames=max_frames,
        output_formats=output_formats,
        outputs=seg.config.outputs,
        cancel=cancel,
    )
