"""A reduced random-weight SAM 3 *video* model in Meta's format, Meta's answers on a tiny synthetic clip, once per
test session.

The model (:func:`tests.reference_sam3_video.build_reduced_sam3_video`) gets the treatment of tests/sam3_fixture.py
(finite text-encoder parameters, scoring and mask heads spread with :func:`tests.sam3_fixture.spread_heads` on the
clip's first frame), then its presence head's last bias is shifted (:func:`_calibrate_presence`) so that only
the best :data:`NEW_OBJECTS` queries of the first frame score above Meta's new-object threshold (0.7) in Meta's video
path, with every score of every frame clear of the thresholds: every tracked instance costs seconds per frame on a
CPU, and a score at a threshold would make the test depend on rounding.
It is saved as Meta saves ``sam3.pt`` (``{"model": {"detector.*", "tracker.*"}}``) beside a small BPE vocabulary,
and Meta's video inference answers :data:`PHRASE` on :func:`clip` (prompted on frame 0, propagated forward).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from .reference_sam3 import import_sam3, on_cpu, write_bpe_file
from .reference_sam3_video import build_reduced_sam3_video, run_reference_video
from .sam3_fixture import SMALL_SAM3_ARCHITECTURE, fill_text_encoder_empties, reference_answer, spread_heads

PHRASE = "red car"
#: Meta's score above which a detection becomes a new object, and the one above which it counts as a detection.
NEW_OBJECT_THRESHOLD, DETECTION_THRESHOLD = 0.7, 0.5
#: Detections of the first frame above the new-object threshold (each tracked object costs seconds per frame).
NEW_OBJECTS = 2
#: Smallest distance (|log ratio|) of any score from either threshold: far above the two paths' score difference.
MARGIN = 0.005
#: A presence-logit shift that makes the presence probability 1 (to float32 precision).
SATURATE = 30.0
FRAMES, HEIGHT, WIDTH = 2, 96, 128


def clip() -> list[np.ndarray]:
    """``FRAMES`` RGB uint8 ``[HEIGHT, WIDTH, 3]`` frames: a red and a green rectangle moving on grey."""
    frames = []
    for t in range(FRAMES):
        frame = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
        frame[20 + 2 * t : 50 + 2 * t, 10 + 4 * t : 40 + 4 * t] = (220, 40, 40)
        frame[50:80, 70 + 3 * t : 110 + 3 * t] = (40, 200, 60)
        frames.append(frame)
    return frames


def _video_scores(classes: torch.Tensor, presence: float, shift: float) -> torch.Tensor:
    """Meta's video detection scores ``sigmoid(class) × presence`` after adding ``shift`` to the presence logit."""
    return classes * torch.sigmoid(torch.tensor(math.log(presence / (1 - presence)) + shift))


def _calibrate_presence(detector: Any, frame_scores: list[Any]) -> None:
    """Shift the presence head's last bias so that on the first frame exactly the best :data:`NEW_OBJECTS` queries
    of :data:`PHRASE` score above Meta's new-object threshold (0.7) *in Meta's video path*, and no query of any frame
    scores within :data:`MARGIN` of 0.7 or of the detection threshold (0.5). ``frame_scores[f]()`` answers the phrase
    on frame ``f`` through Meta's image processor.

    With ``supervise_joint_box_scores`` (Meta's video detector) the detector's logits are already the joint
    ``sigmoid(class) × presence``, which the video path uses as is, while the image processor multiplies by the
    presence once more: image scores are ``sigmoid(class) × presence²``. One run with the presence saturated gives the
    class probabilities, one run before gives the presence in use on each frame.
    """
    bias = detector.transformer.decoder.presence_token_head.layers[-1].bias
    before = [scores() for scores in frame_scores]
    with torch.no_grad():
        bias.add_(SATURATE)
    classes = [scores() for scores in frame_scores]
    presence = [float((b[int(b.argmax())] / c[int(b.argmax())]).sqrt()) for b, c in zip(before, classes, strict=True)]
    ordered = classes[0].sort(descending=True).values
    wanted = NEW_OBJECT_THRESHOLD / float((ordered[NEW_OBJECTS - 1] * ordered[NEW_OBJECTS]).sqrt())
    shift = math.log(wanted / (1 - wanted)) - math.log(presence[0] / (1 - presence[0]))
    for frame, (c, p) in enumerate(zip(classes, presence, strict=True)):
        video = _video_scores(c, p, shift)
        for threshold in (NEW_OBJECT_THRESHOLD, DETECTION_THRESHOLD):
            nearest = float((video / threshold).log().abs().min())
            assert nearest > MARGIN, f"frame {frame}: a score within {nearest:.4f} of {threshold} (log ratio)"
    with torch.no_grad():
        bias.add_(shift - SATURATE)


@dataclass
class SmallSam3Video:
    """The checkpoint file, our config, the clip and Meta's answers per frame (``out_obj_ids``, ``out_probs``,
    ``out_binary_masks``)."""

    path: Path
    config: dict[str, Any]
    frames: list[np.ndarray]
    answers: dict[int, dict[str, np.ndarray]]


@pytest.fixture(scope="session")
def small_sam3_video(tmp_path_factory: pytest.TempPathFactory) -> SmallSam3Video:
    from perceptra_seg.concepts.forward import preprocess

    sam3 = import_sam3()
    folder = tmp_path_factory.mktemp("small_sam3_video")
    bpe = write_bpe_file(folder / "bpe_simple_vocab_16e6.txt.gz")
    torch.manual_seed(3)
    model = build_reduced_sam3_video(sam3, bpe)
    detector = model.detector
    fill_text_encoder_empties(detector)
    frames = clip()
    processor = sam3.processor.Sam3Processor(detector, device="cpu", confidence_threshold=0.0)
    with on_cpu():
        state = processor.set_image(Image.fromarray(frames[0]))
    spread_heads(detector, [lambda p=p: reference_answer(processor, state, p) for p in (PHRASE, "person")])  # type: ignore[misc]
    states = [state]
    with on_cpu():
        states += [processor.set_image(Image.fromarray(frame)) for frame in frames[1:]]
    _calibrate_presence(detector, [lambda s=s: reference_answer(processor, s, PHRASE)[0] for s in states])  # type: ignore[misc]
    pixels = torch.cat([preprocess(frame, 1008) for frame in frames])
    answers = run_reference_video(model, pixels, HEIGHT, WIDTH, PHRASE)
    path = folder / "sam3.pt"
    torch.save({"model": {k: v.contiguous() for k, v in model.state_dict().items()}}, path)
    config = {
        "model": {"name": "sam3", "checkpoint_path": str(path), "architecture": SMALL_SAM3_ARCHITECTURE},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return SmallSam3Video(path, config, frames, answers)
