"""A reduced random-weight SAM 3 *video* model in Meta's format, Meta's answers on a tiny synthetic clip, once per
test session.

The model (:func:`tests.reference_sam3_video.build_reduced_sam3_video`) gets the treatment of tests/sam3_fixture.py
(finite text-encoder parameters, scoring and mask heads spread with :func:`tests.sam3_fixture.spread_heads` on the
clip's first frame), then its presence head's last bias is shifted (:func:`_calibrate_presence`) so that
only two queries of the first frame score above Meta's new-object threshold (0.7) in Meta's *image* processor: every
tracked instance costs seconds per frame on a CPU. The calibration does not carry over to the video path (Meta's
video inference still reports 5 instances on frame 0 and 20 on frame 1 of this clip: with random weights the
tracker's masks rarely match later detections, so later frames add instances of their own).
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
#: Meta's score above which a detection becomes a new object.
NEW_OBJECT_THRESHOLD = 0.7
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


def _calibrate_presence(detector: Any, scores: Any) -> None:
    """Shift the presence head's last bias so that Meta's new-object threshold (0.7) falls mid-way between the 2nd
    and 3rd best scores of :data:`PHRASE` on the first frame (``scores()`` answers it).

    Meta's score is ``sigmoid(class) × sigmoid(presence)``: one run with the presence saturated gives the class
    probabilities, one run before gives the presence in use.
    """
    bias = detector.transformer.decoder.presence_token_head.layers[-1].bias
    before = scores()
    with torch.no_grad():
        bias.add_(SATURATE)
    classes = scores()
    top = int(before.argmax())
    current = float(before[top] / classes[top])  # the presence probability in use before the shift
    ordered = classes.sort(descending=True).values
    assert float(ordered[1] / ordered[2]) > 1.002  # a gap far wider than the score error (about 1e-6)
    wanted = NEW_OBJECT_THRESHOLD / float(ordered[1] + ordered[2]) * 2  # the two best pass
    with torch.no_grad():
        bias.add_(math.log(wanted / (1 - wanted)) - math.log(current / (1 - current)) - SATURATE)


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
    _calibrate_presence(detector, lambda: reference_answer(processor, state, PHRASE)[0])
    pixels = torch.cat([preprocess(frame, 1008) for frame in frames])
    answers = run_reference_video(model, pixels, HEIGHT, WIDTH, PHRASE)
    path = folder / "sam3.pt"
    torch.save({"model": {k: v.contiguous() for k, v in model.state_dict().items()}}, path)
    config = {
        "model": {"name": "sam3", "checkpoint_path": str(path), "architecture": SMALL_SAM3_ARCHITECTURE},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return SmallSam3Video(path, config, frames, answers)
