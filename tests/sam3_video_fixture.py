"""A reduced random-weight SAM 3 *video* model in Meta's format, Meta's answers on a tiny synthetic clip, once per
test session.

The model (:func:`tests.reference_sam3_video.build_reduced_sam3_video`) gets the treatment of tests/sam3_fixture.py
(finite text-encoder parameters, scoring and mask heads spread with :func:`tests.sam3_fixture.spread_heads` on the
clip's first frame, here with a narrower score spread), its tracker's mask logits are scaled up
(:func:`_amplify_tracker`), and its presence head's last bias is shifted (:func:`_calibrate_presence`) so that about
:data:`FEW_OBJECTS` (or :data:`MANY_OBJECTS`) queries of the first frame score above Meta's detection threshold in
Meta's video path, with every score of every frame clear of both thresholds: every tracked instance costs seconds per
frame on a CPU, and a score or logit at a threshold would make the test depend on rounding.
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
#: Queries of the first frame above the detection threshold, before NMS (each tracked object costs seconds per
#: frame): 12 leave two objects after NMS, 30 leave eight.
FEW_OBJECTS, MANY_OBJECTS = 12, 30
#: Smallest distance (|log ratio|) of any score from the new-object and the detection threshold; the two paths'
#: scores differ by about 4e-5 (relative).
MARGINS = {NEW_OBJECT_THRESHOLD: 1e-3, DETECTION_THRESHOLD: 1e-3}
#: Spread of the class logits across queries: near 0, where a sigmoid still separates neighbouring queries (with
#: tests/sam3_fixture.py's 2.0 the best queries all score above 0.99 and differ by a few thousandths).
SCORE_STD = 0.6
#: Gain of the tracker's mask logits (see :func:`_amplify_tracker`).
TRACKER_GAIN = 100.0
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


def _clear(scores: torch.Tensor) -> bool:
    """True when no score lies within :data:`MARGINS` (log ratio) of its threshold."""
    return all(float((scores / threshold).log().abs().min()) > margin for threshold, margin in MARGINS.items())


def _calibrate_presence(detector: Any, frame_scores: list[Any], first_frame_objects: int) -> None:
    """Shift the presence head's last bias so that on the first frame the best ``first_frame_objects`` (or a few more)
    queries of :data:`PHRASE` score above Meta's detection threshold (0.5) *in Meta's video path*, and no query of
    any frame scores within :data:`MARGINS` of the detection threshold or of the new-object threshold (0.7).
    ``frame_scores[f]()`` answers the phrase on frame ``f`` through Meta's image processor.

    On the prompted frame every detection above 0.5 (after NMS) starts an object; on later frames a detection starts
    one only above 0.7 and when it overlaps no tracked object. With ``supervise_joint_box_scores`` (Meta's video
    detector) the detector's logits are already the joint ``sigmoid(class) × presence``, which the video path uses as
    is, while the image processor multiplies by the presence once more: its scores are ``sigmoid(class) ×
    presence²``. One run with the presence saturated gives the class probabilities, one run before gives the presence
    in use on each frame.
    """
    bias = detector.transformer.decoder.presence_token_head.layers[-1].bias
    before = [scores() for scores in frame_scores]
    with torch.no_grad():
        bias.add_(SATURATE)
    classes = [scores() for scores in frame_scores]
    presence = [float((b[int(b.argmax())] / c[int(b.argmax())]).sqrt()) for b, c in zip(before, classes, strict=True)]
    ordered = classes[0].sort(descending=True).values
    for count in range(first_frame_objects, first_frame_objects + 8):  # the first cut clear of every query
        wanted = DETECTION_THRESHOLD / float((ordered[count - 1] * ordered[count]).sqrt())
        shift = math.log(wanted / (1 - wanted)) - math.log(presence[0] / (1 - presence[0]))
        logits = [math.log(p / (1 - p)) + shift for p in presence]
        if all(_clear(c * torch.sigmoid(torch.tensor(x))) for c, x in zip(classes, logits, strict=True)):
            break
    else:
        raise AssertionError(f"no cut from {first_frame_objects} queries on is clear of the thresholds")
    with torch.no_grad():
        bias.add_(shift - SATURATE)


def _amplify_tracker(tracker: Any) -> None:
    """Scale the last layers of the tracker's mask hypernetworks by :data:`TRACKER_GAIN`.

    With random weights the tracker's mask logits on a propagated frame lie within about 0.1 of 0, so rounding
    (about 1e-5 between the two implementations) would decide whether a faint object has any pixel at all. Scaling a
    last linear layer scales those logits and changes nothing else. (The object-score head is left alone: its
    sigmoid would saturate, and the non-overlap rule compares those scores between objects.)
    """
    with torch.no_grad():
        for layer in (mlp.layers[-1] for mlp in tracker.sam_mask_decoder.output_hypernetworks_mlps):
            layer.weight.mul_(TRACKER_GAIN)
            layer.bias.mul_(TRACKER_GAIN)


@dataclass
class SmallSam3Video:
    """The checkpoint file, our config, the clip and Meta's answers per frame (``out_obj_ids``, ``out_probs``,
    ``out_binary_masks``)."""

    path: Path
    config: dict[str, Any]
    frames: list[np.ndarray]
    answers: dict[int, dict[str, np.ndarray]]


def build_calibrated_model(folder: Path, first_frame_objects: int) -> tuple[Any, SmallSam3Video]:
    """Build, calibrate and save the reduced model in ``folder`` (see the module docstring; about
    ``first_frame_objects`` detections pass the detection threshold on the first frame): Meta's model (eval, CPU)
    and the case without answers (``answers`` empty)."""
    sam3 = import_sam3()
    bpe = write_bpe_file(folder / "bpe_simple_vocab_16e6.txt.gz")
    torch.manual_seed(3)
    model = build_reduced_sam3_video(sam3, bpe)
    detector = model.detector
    fill_text_encoder_empties(detector)
    _amplify_tracker(model.tracker)
    frames = clip()
    processor = sam3.processor.Sam3Processor(detector, device="cpu", confidence_threshold=0.0)
    with on_cpu():
        states = [processor.set_image(Image.fromarray(frame)) for frame in frames]
    runs = [lambda p=p: reference_answer(processor, states[0], p) for p in (PHRASE, "person")]
    spread_heads(detector, runs, score_std=SCORE_STD)  # type: ignore[misc]
    _calibrate_presence(
        detector,
        [lambda s=s: reference_answer(processor, s, PHRASE)[0] for s in states],  # type: ignore[misc]
        first_frame_objects,
    )
    path = folder / "sam3.pt"
    torch.save({"model": {k: v.contiguous() for k, v in model.state_dict().items()}}, path)
    config = {
        "model": {"name": "sam3", "checkpoint_path": str(path), "architecture": SMALL_SAM3_ARCHITECTURE},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }
    return model, SmallSam3Video(path, config, frames, {})


def reference_pixels(frames: list[np.ndarray]) -> torch.Tensor:
    """The clip as Meta's video inference reads it here: ``[T, 3, 1008, 1008]`` float32, Meta's transform."""
    from perceptra_seg.concepts.forward import preprocess

    return torch.cat([preprocess(frame, 1008) for frame in frames])


def build_sam3_video_case(folder: Path, first_frame_objects: int) -> SmallSam3Video:
    """:func:`build_calibrated_model`'s case with Meta's answers for :data:`PHRASE`."""
    model, case = build_calibrated_model(folder, first_frame_objects)
    case.answers = run_reference_video(model, reference_pixels(case.frames), HEIGHT, WIDTH, PHRASE)
    return case


@pytest.fixture(scope="session")
def small_sam3_video(tmp_path_factory: pytest.TempPathFactory) -> SmallSam3Video:
    """Two objects (about a minute to build and answer): the default suite's case."""
    return build_sam3_video_case(tmp_path_factory.mktemp("small_sam3_video"), FEW_OBJECTS)


@pytest.fixture(scope="session")
def busy_sam3_video(tmp_path_factory: pytest.TempPathFactory) -> SmallSam3Video:
    """Eight objects, several on each frame (about four minutes): for the slow run."""
    return build_sam3_video_case(tmp_path_factory.mktemp("busy_sam3_video"), MANY_OBJECTS)
