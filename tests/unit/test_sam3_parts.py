"""SAM 3's small parts without a model: RoI Align vs torchvision's kernel (transcribed), the tokenizer vs Meta's,
request validation, the catalogue entry, and text prompts on a model without them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from perceptra_seg import Segmentor
from perceptra_seg.concepts import ConceptRequest, TextPromptsUnsupportedError
from perceptra_seg.concepts.request import MAX_PHRASES
from perceptra_seg.concepts.roi_align import roi_align
from perceptra_seg.concepts.tokenizer import ConceptTokenizer
from perceptra_seg.exceptions import InvalidInputError
from perceptra_seg.registry import architecture_config, get_model_spec

from ..reference_sam3 import import_sam3, roi_align_reference, write_bpe_file
from ..service.helpers import FakeBackend

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # sam3 warns about CUDA autocast at import


def test_roi_align_matches_torchvision_kernel() -> None:
    torch.manual_seed(0)
    features = torch.randn(2, 6, 20, 24)
    boxes = torch.tensor(
        [
            [[1.3, 2.2, 15.7, 18.1], [-3.0, -2.0, 30.0, 25.0]],  # inside; larger than the map (border rules)
            [[5.0, 5.0, 5.4, 5.2], [20.5, 0.1, 23.9, 19.99]],  # smaller than a cell; at the right edge
        ]
    )
    ours = roi_align(features, boxes, 7)
    reference = roi_align_reference(features, list(boxes), 7)
    assert ours.shape == (4, 6, 7, 7)
    assert torch.allclose(ours, reference, atol=1e-5)
    assert roi_align(features, torch.zeros(2, 0, 4), 7).shape == (0, 6, 7, 7)


def test_tokenizer_matches_meta(tmp_path: Path) -> None:
    bpe = write_bpe_file(tmp_path / "vocab.txt.gz")
    meta = import_sam3().tokenizer.SimpleTokenizer(bpe_path=str(bpe))
    ours = ConceptTokenizer.from_bpe_file(bpe)
    for phrase in ["red car", "Coffee  CUP", "a blue shoe!", "person's dog", "café &amp; ü", "日本", "a " * 40]:
        assert torch.equal(ours(phrase), meta([phrase], context_length=32)), phrase
    with pytest.raises(ValueError):
        ConceptTokenizer.from_bpe_file(tmp_path)  # a folder, not a gzip'ed file


@pytest.mark.parametrize(
    ("texts", "options", "message"),
    [
        ((), {}, "text prompt, exemplar boxes"),
        (("  ",), {}, "non-empty"),
        (("x" * 201,), {}, "at most 200"),
        (("car",) * (MAX_PHRASES + 1), {}, f"at most {MAX_PHRASES} phrases"),
        (("car",), {"threshold": 1.0}, "threshold"),
        (("car",), {"threshold": True}, "threshold"),
        (("car",), {"exemplars": [(10, 10, 5, 20)]}, "x2 > x1"),
        (("car",), {"exemplars": [{"box": (0, 0, 5, 5), "label": 2}]}, "label"),
        (("car",), {"exemplars": [{"box": (0, 0, 5, 5), "colour": 1}]}, "unknown key"),
        (("car",), {"exemplars": [(0, 0, 5)]}, "four"),
    ],
)
def test_bad_concept_requests_are_refused(texts: tuple[str, ...], options: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        ConceptRequest(np.zeros((8, 8, 3), np.uint8), texts, **options)


def test_exemplars_parse_to_rows() -> None:
    request = ConceptRequest(None, (), [(1, 2, 3, 4), {"box": (0, 0, 5, 5), "label": 0}])
    assert request.exemplars.tolist() == [[1, 2, 3, 4, 1], [0, 0, 5, 5, 0]]


def test_catalogue_entry() -> None:
    spec = get_model_spec("sam3")
    assert (spec.filename, spec.hub_id, spec.family, spec.architecture) == ("sam3.pt", "facebook/sam3", "sam3", "sam3")
    assert spec.licence == "LicenseRef-SAM-License" and spec.url.endswith("/facebook/sam3/resolve/main/sam3.pt")
    config = architecture_config("sam3", "default", "sam3")
    assert config["vision_config"]["backbone_config"]["num_hidden_layers"] == 32
    assert config["text_config"]["hidden_act"] == "gelu" and config["text_config"]["max_position_embeddings"] == 32


def test_text_prompts_on_a_model_without_them() -> None:
    seg = Segmentor(backend=FakeBackend())
    with pytest.raises(TextPromptsUnsupportedError) as caught:
        seg.segment_text(np.zeros((16, 16, 3), np.uint8), "red car")
    assert caught.value.code == "text_prompts_unsupported" and caught.value.http_status == 400


@pytest.mark.parametrize(
    ("options", "message"), [({"backend": "onnx"}, "torch backend only"), ({"precision": "bf16"}, "fp32 only")]
)
def test_sam3_runs_on_torch_in_fp32_only(options: dict, message: str) -> None:
    from perceptra_seg.exceptions import ConfigError

    with pytest.raises(ConfigError, match=message):
        Segmentor(model="sam3", checkpoint_path="missing.pt", **options)
