"""Fixtures for the quality tests: the packaged demo model and held-out synthetic scenes with ground truth.

The scenes come from :data:`~perceptra_seg.demo.scenes.HELDOUT_SEED`, a seed the training tool never draws
from. Other front ends (REST service, tiling, other backends) can reuse ``heldout_scenes`` with their own
predictor and :func:`perceptra_seg.demo.evaluation.evaluate`.
"""

from __future__ import annotations

from typing import Any

import pytest

from perceptra_seg.demo.evaluation import Predictor, segmentor_predictor
from perceptra_seg.demo.scenes import HELDOUT_SEED, Scene, generate_scenes

#: Regression floors of the shipped demo model on the 40 held-out square scenes (mean IoU against ground truth).
#: The shipped checkpoint (``tools/train_demo_model.py`` with its defaults) measures 0.798 (tight box) and 0.709
#: (one interior click); the floors leave room for platform noise. The goals (0.90 / 0.80) are NOT met.
BOX_FLOOR = 0.77
POINT_FLOOR = 0.68
HELDOUT_COUNT = 40


@pytest.fixture(scope="session")
def demo_segmentor() -> Any:
    """``Segmentor(model="demo")`` on the CPU, loaded from the packaged checkpoint."""
    from perceptra_seg import Segmentor

    return Segmentor(model="demo", device="cpu")


@pytest.fixture(scope="session")
def demo_predictor(demo_segmentor: Any) -> Predictor:
    return segmentor_predictor(demo_segmentor)


@pytest.fixture(scope="session")
def heldout_scenes() -> list[Scene]:
    """40 square 256×256 scenes (2–5 objects each) the model never saw."""
    return generate_scenes(HELDOUT_SEED, HELDOUT_COUNT, [(256, 256)])


@pytest.fixture(scope="session")
def heldout_nonsquare() -> dict[str, list[Scene]]:
    """Landscape (240×368) and portrait (368×240) scenes, 16 each, from a seed next to the square set's."""
    return {
        "landscape": generate_scenes(HELDOUT_SEED + 1, 16, [(240, 368)]),
        "portrait": generate_scenes(HELDOUT_SEED + 2, 16, [(368, 240)]),
    }
