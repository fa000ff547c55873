"""Build and run Meta's SAM 3 *video* model (``Sam3VideoInferenceWithInstanceInteractivity``) on a CPU, for parity.

:func:`build_reduced_sam3_video` assembles the model exactly as ``sam3.model_builder.build_sam3_video_model`` does
(same tracker, detector heads and planning settings) except for the reduced ViT and text encoder of
:func:`tests.reference_sam3.build_reduced_sam3`. :func:`video_reference_on_cpu` makes Meta's video path run on a
CPU in fp32; every change is a device or storage detail, none changes a computed value:

* ``Tensor.cuda()`` returns the tensor; the tracker's per-object state is kept on the CPU
  (``offload_state_to_cpu=True`` instead of the hard-coded ``"cuda"`` storage device);
* the casts to ``bfloat16`` that Meta makes for GPU storage / all-gather (tracker backbone features, memory
  features) keep the float32 values (Meta's GPU run computes in bfloat16 autocast, which a CPU test cannot match);
* Meta's CPU connected-components fall-back (``skimage.measure.label``, then a Python loop over components to count
  pixels, minutes on random-weight masks with thousands of specks) is replaced by the same labelling with the counts
  taken by ``numpy.bincount``; a batch of zero masks (which Meta's fall-back cannot stack) gives empty results;
* frames are given as already prepared pixels (the test passes the same tensor to both implementations).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .reference_sam3 import on_cpu, reduced_vision_and_text

__all__ = ["build_reduced_sam3_video", "run_reference_video", "video_reference_on_cpu"]


def build_reduced_sam3_video(sam3: types.SimpleNamespace, bpe_path: Path, *, vit_width: int = 64) -> Any:
    """Meta's SAM 3 video model with :func:`tests.reference_sam3.reduced_vision_and_text`'s ViT (with the tracker's
    neck) and text encoder; tracker, detector heads and the planning settings as
    ``build_sam3_video_model(apply_temporal_disambiguation=True)``. Random weights, eval."""
    b = sam3.builder
    with on_cpu():
        neck, text = reduced_vision_and_text(sam3, bpe_path, vit_width=vit_width, interactive=True)
        scoring_mlp = b.MLP(
            input_dim=256,
            hidden_dim=2048,
            output_dim=256,
            num_layers=2,
            dropout=0.1,
            residual=True,
            out_norm=torch.nn.LayerNorm(256),
        )
        detector = b.Sam3ImageOnVideoMultiGPU(
            num_feature_levels=1,
            backbone=b.SAM3VLBackbone(scalp=1, visual=neck, text=text),
            transformer=b._create_sam3_transformer(has_presence_token=True),
            segmentation_head=b._create_segmentation_head(),
            semantic_segmentation_head=None,
            input_geometry_encoder=b._create_geometry_encoder(),
            use_early_fusion=True,
            use_dot_prod_scoring=True,
            dot_prod_scoring=b.DotProductScoring(d_model=256, d_proj=256, prompt_mlp=scoring_mlp),
            supervise_joint_box_scores=True,
        )
        model = b.Sam3VideoInferenceWithInstanceInteractivity(
            detector=detector,
            tracker=b.build_tracker(apply_temporal_disambiguation=True),
            score_threshold_detection=0.5,
            assoc_iou_thresh=0.1,
            det_nms_thresh=0.1,
            new_det_thresh=0.7,
            hotstart_delay=15,
            hotstart_unmatch_thresh=8,
            hotstart_dup_thresh=8,
            suppress_unmatched_only_within_hotstart=True,
            min_trk_keep_alive=-1,
            max_trk_keep_alive=30,
            init_trk_keep_alive=30,
            suppress_overlapping_based_on_recent_occlusion_threshold=0.7,
            suppress_det_close_to_boundary=False,
            fill_hole_area=16,
            recondition_every_nth_frame=16,
            masklet_confirmation_enable=False,
            decrease_trk_keep_alive_for_empty_masklets=False,
            image_size=1008,
            image_mean=(0.5, 0.5, 0.5),
            image_std=(0.5, 0.5, 0.5),
            compile_model=False,
        )
    return model.eval()


def _connected_components(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Meta's CPU fall-back (``skimage.measure.label``, full connectivity) with the pixel counts by bincount."""
    from skimage.measure import label

    shape = masks.shape
    planes = masks.reshape(-1, *shape[-2:]).cpu().numpy()
    labels = np.zeros(planes.shape, np.int64)
    counts = np.zeros(planes.shape, np.int64)
    for index, plane in enumerate(planes):
        labelled = label(plane)
        sizes = np.bincount(labelled.ravel())
        sizes[0] = 0
        labels[index], counts[index] = labelled, sizes[labelled]
    return torch.from_numpy(labels).view(shape), torch.from_numpy(counts).view(shape)


@contextlib.contextmanager
def video_reference_on_cpu(model: Any, pixels: torch.Tensor, height: int, width: int) -> Iterator[None]:
    """While inside: Meta's video model runs on the CPU in fp32 and reads ``pixels`` (``[T, 3, 1008, 1008]``) as
    its video of ``height`` × ``width`` frames (see the module docstring)."""
    import sam3.model.sam3_video_inference as inference
    import sam3.perflib.connected_components as components

    def load(*_: Any, **__: Any) -> tuple[torch.Tensor, int, int]:
        return pixels, height, width

    to = torch.Tensor.to

    def keep_float32(self: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if (args and args[0] is torch.bfloat16) or kwargs.get("dtype") is torch.bfloat16:
            return self
        return to(self, *args, **kwargs)

    tracker_init = model.tracker.init_state
    saved = (inference.load_resource_as_video_frames, components.connected_components, torch.Tensor.cuda)
    inference.load_resource_as_video_frames = load
    components.connected_components = _connected_components
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.Tensor.to = keep_float32  # type: ignore[method-assign]
    model.tracker.init_state = lambda *a, **k: tracker_init(*a, **{**k, "offload_state_to_cpu": True})
    try:
        with on_cpu():
            yield
    finally:
        inference.load_resource_as_video_frames, components.connected_components, torch.Tensor.cuda = saved
        torch.Tensor.to = to  # type: ignore[method-assign]
        model.tracker.init_state = tracker_init


def run_reference_video(
    model: Any, pixels: torch.Tensor, height: int, width: int, phrase: str
) -> dict[int, dict[str, np.ndarray]]:
    """Meta's answer for ``phrase`` prompted on frame 0 and propagated forward: per frame ``out_obj_ids`` [N],
    ``out_probs`` [N] and ``out_binary_masks`` bool [N, H, W].

    Frame 0's answer is the one ``add_prompt`` returns, and propagation starts at frame 1: Meta's ``add_prompt``
    already runs frame 0, and propagating from frame 0 would run it a second time (with random weights that second
    pass adds duplicates of the frame-0 objects; our ``track()`` processes every frame once).
    """
    with video_reference_on_cpu(model, pixels, height, width), torch.inference_mode():
        state = model.init_state("frames")
        first, answer = model.add_prompt(state, 0, text_str=phrase)
        answers = {int(first): answer}
        answers.update(model.propagate_in_video(state, start_frame_idx=1, max_frame_num_to_track=len(pixels)))
        return answers
