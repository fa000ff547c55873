"""A bare reduced SAM 3 checkpoint in Meta's format, for tests that need a real SAM 3 model but not Meta's answers.

It is :func:`tests.reference_sam3.build_reduced_sam3`'s model (2-block ViT, 2-layer text encoder; random weights with
the text encoder's ``torch.empty`` parameters filled) made cheaper still: only the first layer of the detector's
transformer encoder and decoder is kept (``detector.transformer.{encoder,decoder}.layers.0``, the layout Meta's
builder gives a 1-layer transformer) and the model reads 336-pixel images (24 × 24 patches, one attention window;
no weight depends on the image size). No tracker (text and exemplar prompts only) and no head spreading
(tests/sam3_fixture.py): the 200 queries still get distinct masks and scores spread over a few hundredths, and a
detector pass takes about 2 s of one core instead of about 10 s.

Parity with Meta's own code is proven on the larger model of tests/sam3_fixture.py; this one serves command tests
(``batch --auto --text`` on both engines) that compare our own outputs with each other.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch

from .reference_sam3 import build_reduced_sam3, import_sam3, write_bpe_file
from .sam3_fixture import SMALL_SAM3_ARCHITECTURE, fill_text_encoder_empties

#: ``model.architecture`` of the bare model: the small ViT and text encoder, 336-pixel input, 1-layer DETR.
BARE_SAM3_ARCHITECTURE: dict[str, Any] = copy.deepcopy(SMALL_SAM3_ARCHITECTURE)
BARE_SAM3_ARCHITECTURE["vision_config"]["backbone_config"]["image_size"] = 336
BARE_SAM3_ARCHITECTURE["detr_encoder_config"] = {"num_layers": 1}
BARE_SAM3_ARCHITECTURE["detr_decoder_config"] = {"num_layers": 1}

_DROPPED = re.compile(r"transformer\.(encoder|decoder)\.layers\.[1-9]\d*\.")


def write_bare_sam3(folder: Path) -> dict[str, Any]:
    """Write ``folder/sam3.pt`` (``{"model": {"detector.*": ...}}``) and its BPE vocabulary; return the
    configuration that loads it on the CPU in fp32."""
    sam3 = import_sam3()
    bpe = write_bpe_file(folder / "bpe_simple_vocab_16e6.txt.gz")
    with torch.random.fork_rng():
        torch.manual_seed(5)
        model = build_reduced_sam3(sam3, bpe)
        fill_text_encoder_empties(model)
    state = {"detector." + k: v.contiguous() for k, v in model.state_dict().items() if not _DROPPED.search(k)}
    path = folder / "sam3.pt"
    torch.save({"model": state}, path)
    return {
        "model": {"name": "sam3", "checkpoint_path": str(path), "architecture": copy.deepcopy(BARE_SAM3_ARCHITECTURE)},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }


@pytest.fixture(scope="session")
def bare_sam3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The configuration of a bare reduced SAM 3 (:func:`write_bare_sam3`), built once per test session."""
    return write_bare_sam3(tmp_path_factory.mktemp("bare_sam3"))
