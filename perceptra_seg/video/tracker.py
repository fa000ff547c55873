"""The tracking algorithm of Meta's ``SAM2VideoPredictor``, run on transformers' ``Sam2VideoModel``.

transformers provides the networks and the per-frame step (``_run_single_frame_inference``: memory attention over
the memory bank, SAM heads, object pointer) and the memory encoder; this module drives them the way Meta's
predictor does, with three differences in what is *kept*, never in what is computed:

* a prompt's memory is encoded right away (Meta defers it to the next propagation; the inputs are the same);
* only the memory the model can still read is kept: every conditioning (prompted) frame, and the non-conditioning
  frames within ``max(num_maskmem, max_object_pointers_in_encoder) - 1`` frames behind the current one in the
  direction of travel (their memory features, object pointers and low-resolution masks); older ones are dropped as
  tracking advances, so memory stays flat however long the video is;
* frame pixels are never stored: each frame is encoded when it is visited and only its features are cached.

A correction on an already tracked frame becomes a conditioning frame (Meta's ``add_all_frames_to_correct_as_cond``),
so it steers every later propagation.

The state (:class:`TrackingState`) is plain data: tensors, object ids, prompts and per-frame flags.

EdgeTAM (transformers' ``EdgeTamVideoModel``) has the same steps; it differs in two places, both switched on
:func:`_edgetam`: its step would encode the memory itself (turned off; memory is encoded here as for SAM 2), and its
memories are perceiver latents laid out ``[objects, latents, C]`` instead of ``[H*W, objects, C]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from ..exceptions import InvalidInputError
from .model import VideoModel
from .prompts import VideoPrompt

__all__ = ["FrameOutput", "TrackingState", "add_prompt", "propagate_frame", "remove_object"]

_V = TypeVar("_V")
_NO_OBJECT = -1024.0  # Meta's NO_OBJ_SCORE: the logit filled in for an object without output on a frame
_CONDITIONING, _TRACKED = "cond_frame_outputs", "non_cond_frame_outputs"
# tracked[obj][frame]: 0 = not visited by propagation, 1 = visited forward, 2 = visited in reverse
_FORWARD, _REVERSE = 1, 2


@dataclass
class FrameOutput:
    """One object's result on one frame: low-resolution mask logits ``[1, 1, L, L]`` and the object-score logit."""

    logits: torch.Tensor
    object_score_logit: float


@dataclass
class TrackingState:
    """Everything a tracking session knows, as plain values (what transformers' steps read is named as they expect).

    Attributes:
        num_frames: frames in the video.
        obj_ids: the caller's object ids, in the order they were first prompted (index = the model's object index).
        prompts: ``obj_idx -> frame -> VideoPrompt`` (the latest prompt of each object on each frame).
        output_dict_per_obj: ``obj_idx -> {"cond_frame_outputs" | "non_cond_frame_outputs" -> frame -> outputs}``;
            outputs hold ``pred_masks`` ``[1, 1, L, L]``, ``object_pointer``, ``object_score_logits``,
            ``maskmem_features`` (bfloat16) and ``maskmem_pos_enc``.
        tracked: ``obj_idx -> bytearray(num_frames)``; which frames propagation visited and in which direction.
        cache: vision features of the last encoded frame (transformers' ``Sam2VideoInferenceCache``).
    """

    num_frames: int
    obj_ids: list[int] = field(default_factory=list)
    prompts: dict[int, dict[int, VideoPrompt]] = field(default_factory=dict)
    output_dict_per_obj: dict[int, dict[str, dict[int, dict[str, Any]]]] = field(default_factory=dict)
    tracked: dict[int, bytearray] = field(default_factory=dict)
    cache: Any = None
    dtype: torch.dtype = torch.float32

    def obj_idx(self, obj_id: int, *, create: bool) -> int:
        """The model's index for ``obj_id`` (a new object gets the next one when ``create``)."""
        if obj_id in self.obj_ids:
            return self.obj_ids.index(obj_id)
        if not create:
            raise KeyError(obj_id)
        self.obj_ids.append(obj_id)
        index = len(self.obj_ids) - 1
        self.prompts[index] = {}
        self.output_dict_per_obj[index] = {_CONDITIONING: {}, _TRACKED: {}}
        self.tracked[index] = bytearray(self.num_frames)
        return index

    def clear(self) -> None:
        """Forget every object, prompt, output and cached feature (the video stays)."""
        self.obj_ids.clear()
        self.prompts.clear()
        self.output_dict_per_obj.clear()
        self.tracked.clear()
        if self.cache is not None:
            self.cache.clear_all()

    def retained_frames(self) -> int:
        """How many per-frame output entries are held over all objects (conditioning + tracked)."""
        return sum(len(d[_CONDITIONING]) + len(d[_TRACKED]) for d in self.output_dict_per_obj.values())


def new_state(video_model: VideoModel, num_frames: int) -> TrackingState:
    """An empty state for a video of ``num_frames`` frames."""
    from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceCache

    cache = Sam2VideoInferenceCache(
        inference_device=video_model.device, inference_state_device=video_model.device, max_vision_features_cache_size=1
    )
    return TrackingState(num_frames=num_frames, cache=cache)


def ensure_features(video_model: VideoModel, state: TrackingState, frame_idx: int, pixel_values: torch.Tensor) -> None:
    """Encode frame ``frame_idx`` (``pixel_values`` ``[1, 3, S, S]``) unless its features are the cached ones."""
    if state.cache.get_vision_features(frame_idx) is not None:
        return
    output = video_model.model.get_image_features(pixel_values.to(video_model.device), return_dict=True)
    features = {"vision_feats": output.fpn_hidden_states, "vision_pos_embeds": output.fpn_position_encoding}
    state.cache.cache_vision_features(frame_idx, features)


def _point_inputs(prompt: VideoPrompt, size: tuple[int, int], image_size: int, device: torch.device) -> dict[str, Any]:
    """Meta's point encoding: a box is two points labelled 2 and 3 before the clicks; coordinates scaled to the
    model input as ``p / (W, H) * image_size``."""
    coords: list[tuple[float, float]] = []
    labels: list[int] = []
    if prompt.box is not None:
        x1, y1, x2, y2 = prompt.box
        coords += [(x1, y1), (x2, y2)]
        labels += [2, 3]
    coords += [(x, y) for x, y, _ in prompt.points]
    labels += [label for _, _, label in prompt.points]
    height, width = size
    points = torch.tensor(coords, dtype=torch.float32)[None] / torch.tensor([width, height]) * image_size
    return {
        "point_coords": points[None].to(device),  # [1, 1, N, 2]
        "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None].to(device),  # [1, 1, N]
    }


def _mask_inputs(mask: torch.Tensor, image_size: int, device: torch.device) -> torch.Tensor:
    """Meta's mask prompt: the ``[H, W]`` mask resized (antialiased bilinear) to the model input, thresholded at 0.5."""
    resized = F.interpolate(
        mask[None, None].float(), size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
    )
    return (resized >= 0.5).float().to(device)


def _encode_memory(
    video_model: VideoModel, state: TrackingState, frame_idx: int, outputs: list[dict[str, Any]], *, from_prompt: bool
) -> None:
    """Run the memory encoder on each output's mask, batched, and store the memory in the outputs."""
    if not outputs:
        return
    model = video_model.model
    feats = state.cache.get_vision_features(frame_idx)["vision_feats"][-1]
    size = (video_model.image_size, video_model.image_size)
    if from_prompt:  # Meta re-derives a prompted frame's high-res mask from its low-res logits
        masks = [F.interpolate(o["pred_masks"], size=size, mode="bilinear", align_corners=False) for o in outputs]
    else:  # EdgeTAM's step returns no high-res mask: it is the same bilinear upsampling of the low-res one
        masks = [
            o.pop("high_res_masks")
            if "high_res_masks" in o
            else F.interpolate(o["pred_masks"], size=size, mode="bilinear", align_corners=False)
            for o in outputs
        ]
    scores = torch.cat([o["object_score_logits"] for o in outputs], dim=0)
    features, position = model._encode_new_memory(
        current_vision_feats=feats.expand(-1, len(outputs), -1),
        pred_masks_high_res=torch.cat(masks, dim=0),
        object_score_logits=scores,
        is_mask_from_pts=from_prompt,
    )
    # SAM 2 memories are [H*W, objects, C]; EdgeTAM's (perceiver latents) are [objects, latents, C]
    pick = (lambda i: slice(i, i + 1)) if _edgetam(video_model) else (lambda i: (slice(None), slice(i, i + 1)))
    for i, out in enumerate(outputs):
        out.pop("high_res_masks", None)
        out["maskmem_features"] = features[pick(i)]
        out["maskmem_pos_enc"] = position[pick(i)]


def _step(
    video_model: VideoModel,
    state: TrackingState,
    obj_idx: int,
    frame_idx: int,
    *,
    is_init_cond_frame: bool,
    reverse: bool,
    point_inputs: dict[str, Any] | None = None,
    mask_inputs: torch.Tensor | None = None,
    prev_logits: torch.Tensor | None = None,
) -> dict[str, Any]:
    # EdgeTAM's step would encode the memory itself; here it is encoded by _encode_memory as for SAM 2
    options = {"run_mem_encoder": False} if _edgetam(video_model) else {}
    out: dict[str, Any] = video_model.model._run_single_frame_inference(
        inference_session=state,
        frame_idx=frame_idx,
        obj_idx=obj_idx,
        batch_size=1,
        is_init_cond_frame=is_init_cond_frame,
        point_inputs=point_inputs,
        mask_inputs=mask_inputs,
        reverse=reverse,
        prev_sam_mask_logits=prev_logits,
        **options,
    )
    return out


def _edgetam(video_model: VideoModel) -> bool:
    """The model is ``EdgeTamVideoModel`` (perceiver memories, memory encoding optional in its step)."""
    return video_model.spec.architecture == "edgetam"


def _output_on(state: TrackingState, obj_idx: int, frame_idx: int) -> dict[str, Any] | None:
    outputs = state.output_dict_per_obj[obj_idx]
    return outputs[_CONDITIONING].get(frame_idx) or outputs[_TRACKED].get(frame_idx)


def _frame_outputs(state: TrackingState, frame_idx: int, size: int) -> dict[int, FrameOutput]:
    result = {}
    for obj_idx, obj_id in enumerate(state.obj_ids):
        out = _output_on(state, obj_idx, frame_idx)
        if out is None:
            result[obj_id] = FrameOutput(torch.full((1, 1, size, size), _NO_OBJECT), _NO_OBJECT)
        else:
            result[obj_id] = FrameOutput(out["pred_masks"], float(out["object_score_logits"].flatten()[0]))
    return result


@torch.inference_mode()
def add_prompt(
    video_model: VideoModel, state: TrackingState, prompt: VideoPrompt, size: tuple[int, int]
) -> dict[int, FrameOutput]:
    """Apply one prompt (its frame's features must be cached) and return every object's output on that frame.

    As Meta's ``add_new_points_or_box`` / ``add_new_mask``: on a frame the object was not tracked on, the prompt
    segments it without memory (an initial conditioning frame); on a tracked frame it corrects the tracked mask,
    fed back together with the clicks. Either way the frame becomes a conditioning frame of that object.
    """
    if prompt.obj_id is None:
        raise InvalidInputError("text prompts are tracked by SAM 3 (Segmentor.track with model sam3), not here")
    obj_idx = state.obj_idx(prompt.obj_id, create=True)
    device = video_model.device
    frame = prompt.frame
    visited = state.tracked[obj_idx][frame]
    is_init = visited == 0
    reverse = visited == _REVERSE
    if prompt.mask is not None:
        mask = _mask_inputs(torch.from_numpy(prompt.mask), video_model.image_size, device)
        out = _step(video_model, state, obj_idx, frame, is_init_cond_frame=is_init, reverse=reverse, mask_inputs=mask)
    else:
        previous = _output_on(state, obj_idx, frame)
        prev_logits = None if previous is None else torch.clamp(previous["pred_masks"].to(device), -32.0, 32.0)
        points = _point_inputs(prompt, size, video_model.image_size, device)
        out = _step(
            video_model,
            state,
            obj_idx,
            frame,
            is_init_cond_frame=is_init,
            reverse=reverse,
            point_inputs=points,
            prev_logits=prev_logits,
        )
    out.pop("high_res_masks", None)
    _encode_memory(video_model, state, frame, [out], from_prompt=True)
    outputs = state.output_dict_per_obj[obj_idx]
    outputs[_CONDITIONING][frame] = out
    outputs[_TRACKED].pop(frame, None)
    state.prompts[obj_idx][frame] = prompt
    return _frame_outputs(state, frame, out["pred_masks"].shape[-1])


@torch.inference_mode()
def propagate_frame(
    video_model: VideoModel, state: TrackingState, frame_idx: int, *, reverse: bool
) -> dict[int, FrameOutput]:
    """Track every object onto ``frame_idx`` (its features must be cached), as one step of Meta's
    ``propagate_in_video``: conditioning frames keep their output, the others are predicted from memory."""
    fresh: list[dict[str, Any]] = []
    for obj_idx in range(len(state.obj_ids)):
        outputs = state.output_dict_per_obj[obj_idx]
        if frame_idx not in outputs[_CONDITIONING]:
            out = _step(video_model, state, obj_idx, frame_idx, is_init_cond_frame=False, reverse=reverse)
            outputs[_TRACKED][frame_idx] = out
            fresh.append(out)
        state.tracked[obj_idx][frame_idx] = _REVERSE if reverse else _FORWARD
    _encode_memory(video_model, state, frame_idx, fresh, from_prompt=False)
    result = _frame_outputs(state, frame_idx, int(video_model.model.prompt_encoder.mask_input_size[0]))
    _prune(video_model, state, frame_idx, reverse=reverse)
    return result


def memory_window(video_model: VideoModel) -> int:
    """How many tracked frames behind the current one the model can read (memory frames and object pointers)."""
    config = video_model.model.config
    return max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder)) - 1


def _prune(video_model: VideoModel, state: TrackingState, frame_idx: int, *, reverse: bool) -> None:
    """Drop tracked (non-conditioning) outputs the model will not read again from this position and direction."""
    window = memory_window(video_model)
    for outputs in state.output_dict_per_obj.values():
        tracked = outputs[_TRACKED]
        stale = [f for f in tracked if (f > frame_idx + window if reverse else f < frame_idx - window)]
        for f in stale:
            del tracked[f]


def remove_object(state: TrackingState, obj_id: int) -> None:
    """Forget one object; the others keep their memory and are renumbered in order (as Meta's ``remove_object``)."""
    index = state.obj_idx(obj_id, create=False)
    state.obj_ids.pop(index)
    state.prompts = _renumbered(state.prompts, index)
    state.output_dict_per_obj = _renumbered(state.output_dict_per_obj, index)
    state.tracked = _renumbered(state.tracked, index)


def _renumbered(table: dict[int, _V], removed: int) -> dict[int, _V]:
    return dict(enumerate(value for key, value in sorted(table.items()) if key != removed))
