"""SAM 3 concept tracking on transformers' ``Sam3VideoModel``, with Meta's detector and CPU post-processing.

transformers' ``Sam3VideoModel`` ports the planning heuristics of Meta's ``Sam3VideoInference`` (matching detections
to tracks by mask IoU, new objects above ``new_det_thresh``, hot-start removal of unmatched / duplicate tracks,
keep-alive counters, suppression of recently occluded overlaps, periodic reconditioning from detections). Three
places differ from Meta's results, and :class:`ConceptVideoModel` changes exactly those:

* **Detection.** transformers' detector call leaves out the geometry encoder's CLS token that Meta always appends to
  the prompt (see :mod:`perceptra_seg.concepts.forward`); :meth:`ConceptVideoModel.run_detection` uses our
  :func:`~perceptra_seg.concepts.forward.detect` and Meta's video score, ``sigmoid(clamp(logit(p), -10, 10))`` with
  ``p = sigmoid(class) × sigmoid(presence)``.
* **NMS and hole filling** need transformers' ``cv-utils`` hub kernel, which is downloaded at run time and (on CPU or
  offline) is missing; transformers then silently skips NMS and hole filling. :func:`install_cpu_kernels` provides
  the two operations the model calls (8-connected components with their sizes, greedy NMS on an IoU matrix), as
  Meta's CPU fall-backs compute them, whenever the hub kernel is not loaded.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from transformers import Sam3VideoModel
from transformers.models.sam3_video import modeling_sam3_video

from ..concepts.forward import detect, encode_text
from .sam3_conversion import convert_sam3_video_state_dict

_DETECTOR = "detector_model."

__all__ = ["ConceptVideoModel", "CpuKernels", "install_cpu_kernels", "load_concept_video_model"]


class CpuKernels:
    """The two ``cv-utils`` kernel calls ``Sam3VideoModel`` makes, computed on the CPU."""

    @staticmethod
    def cc_2d(mask: torch.Tensor, get_counts: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """8-connected components of each ``[N, 1, H, W]`` uint8 mask: labels and, per pixel, its component's size.

        Background pixels (0) get label 0 and count 0.
        """
        labels = torch.zeros(mask.shape, dtype=torch.int32)
        counts = torch.zeros(mask.shape, dtype=torch.int32)
        for index, plane in enumerate(mask.reshape(-1, *mask.shape[-2:]).cpu().numpy()):
            count, label = cv2.connectedComponents(np.ascontiguousarray(plane, dtype=np.uint8), connectivity=8)
            sizes = np.bincount(label.ravel(), minlength=count).astype(np.int32)
            sizes[0] = 0
            labels.view(-1, *mask.shape[-2:])[index] = torch.from_numpy(label.astype(np.int32))
            counts.view(-1, *mask.shape[-2:])[index] = torch.from_numpy(sizes[label])
        return labels.to(mask.device), counts.to(mask.device)

    @staticmethod
    def generic_nms(
        ious: torch.Tensor, scores: torch.Tensor, iou_threshold: float, use_iou_matrix: bool = True
    ) -> torch.Tensor:
        """Greedy NMS on a pairwise IoU matrix ``[N, N]``: indices kept, highest score first (int64)."""
        overlap = ious.float().cpu().numpy()
        order = scores.float().cpu().numpy().argsort()[::-1]
        kept: list[int] = []
        while order.size:
            best = int(order[0])
            kept.append(best)
            order = order[1:][overlap[best, order[1:]] <= iou_threshold]
        return torch.tensor(kept, dtype=torch.int64, device=scores.device)


def install_cpu_kernels() -> None:
    """Give transformers' SAM 3 video module :class:`CpuKernels` unless its hub kernel is already loaded."""
    if not modeling_sam3_video.cv_utils_kernel:
        modeling_sam3_video.cv_utils_kernel = CpuKernels()  # type: ignore[assignment]


def _meta_video_score(probs: torch.Tensor) -> torch.Tensor:
    """Meta's video detector score: the joint probability through ``logit`` (eps 1e-3), clamped to [-10, 10]."""
    clipped = probs.clamp(0.0, 1.0)
    logits = torch.log(clipped.clamp(min=1e-3) / (1.0 - clipped).clamp(min=1e-3)).clamp(-10.0, 10.0)
    return logits.sigmoid()


class ConceptVideoModel(Sam3VideoModel):
    """``Sam3VideoModel`` whose per-frame detection is Meta's (see the module docstring).

    A session's prompt token ids (``session.prompt_input_ids[prompt_id]``, ``[1, 32]`` int64, 0 = padding) come from
    our :class:`~perceptra_seg.concepts.tokenizer.ConceptTokenizer`.
    """

    def run_detection(self, inference_session: Any, vision_embeds: Any) -> dict[int, dict[str, torch.Tensor]]:
        detector = self.detector_model
        levels = len(vision_embeds.fpn_hidden_states) - 1
        features = tuple(vision_embeds.fpn_hidden_states[:levels]) + tuple(vision_embeds.fpn_position_encoding[:levels])
        no_boxes = features[0].new_zeros(1, 0, 5)
        detections: dict[int, dict[str, torch.Tensor]] = {}
        for prompt_id in inference_session.prompts:
            text = inference_session.prompt_embeddings.get(prompt_id)
            if text is None:
                text = encode_text(detector, inference_session.prompt_input_ids[prompt_id])
                inference_session.prompt_embeddings[prompt_id] = text
            found = detect(detector, features, text, no_boxes)
            probs = _meta_video_score(found.scores)
            masks = found.mask_logits
            if self.det_nms_thresh > 0.0:
                keep = modeling_sam3_video.nms_masks(probs, masks, self.score_threshold_detection, self.det_nms_thresh)
                probs = torch.where(keep, probs, torch.zeros_like(probs))
            chosen = torch.where(probs > self.score_threshold_detection)[0]
            detections[prompt_id] = {"bbox": found.boxes[chosen], "mask": masks[chosen], "scores": probs[chosen]}
        return detections


def _same_layout(first: torch.nn.Module, second: torch.nn.Module) -> bool:
    """True when both modules have the same parameter and buffer names with the same shapes and dtypes."""
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)


def load_concept_video_model(
    state_dict: dict[str, torch.Tensor], detector_architecture: dict[str, Any], detector: Any = None
) -> Any:
    """A :class:`ConceptVideoModel` (eval) from Meta's SAM 3 state dict, loaded with ``strict=True``.

    Args:
        state_dict: Meta's keys (``detector.*``, ``tracker.*``), unwrapped from ``{"model": ...}``.
        detector_architecture: ``Sam3Config`` keyword arguments of the detector (the tracker is SAM 3's, fixed).
        detector: the image backend's ``Sam3Model`` loaded from the same file, or ``None``. When its layout is the
            video model's detector's, it *becomes* that detector (one copy of the weights for images and video) and
            only the tracker parts are loaded from ``state_dict``; otherwise the detector is loaded as well.

    Raises:
        ValueError: not a SAM 3 file with its video tracker.
        RuntimeError: the weights do not fit the architecture (from ``load_state_dict``).
    """
    from transformers import Sam3Config, Sam3VideoConfig

    model = ConceptVideoModel(Sam3VideoConfig(detector_config=Sam3Config(**detector_architecture)))
    converted = convert_sam3_video_state_dict(state_dict)
    if detector is not None and _same_layout(detector, model.detector_model):
        model.detector_model = detector
        own = {k: v for k, v in converted.items() if not k.startswith(_DETECTOR)}
        missing, unexpected = model.load_state_dict(own, strict=False)
        stray = [k for k in missing if not k.startswith(_DETECTOR)] + list(unexpected)
        if stray:
            raise RuntimeError(f"the tracker weights do not fit SAM 3's video model: {sorted(stray)[:8]}")
    else:
        model.load_state_dict(converted, strict=True)
    install_cpu_kernels()
    return model.eval()
