"""Box / point prompts on SAM 3 (its tracker head) against Meta's ``Sam3Image.predict_inst`` on the reduced
random-weight model of tests/sam3_fixture.py (2-block ViT, Meta's full-size tracker and SAM 2-style neck): same
checkpoint file, same photo, same prompts → masks at IoU ≥ 0.99 and scores within 1e-3, through the same
``segment`` calls, REST route and embed handles as every other model; the text and box heads share one encoding.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from perceptra_seg import Segmentor
from perceptra_seg.exceptions import ConfigError, InvalidInputError, ModelLoadError

from ..reference_sam3 import import_sam3, on_cpu
from ..sam3_fixture import PHRASES, SmallSam3, small_sam3  # noqa: F401 - the fixture

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

BOX = (120.0, 60.0, 330.0, 260.0)  # XYXY pixels of the coffee photo (600 × 400)
POINTS = ((230.0, 160.0, 1), (450.0, 300.0, 0))  # (x, y, label): one positive, one negative
CASES: dict[str, dict[str, Any]] = {
    "box": {"box": BOX},
    "points": {"points": POINTS},
    "box+points": {"box": BOX, "points": POINTS},
}


def _meta(small: SmallSam3, prompt: dict[str, Any], *, multimask: bool, **extra: Any) -> tuple[np.ndarray, ...]:
    """Meta's ``predict_inst`` on the coffee photo: masks bool ``[K, H, W]``, scores ``[K]``, low-res logits."""
    kwargs: dict[str, Any] = dict(extra)
    if "box" in prompt:
        kwargs["box"] = np.array(prompt["box"], dtype=np.float32)
    if "points" in prompt:
        kwargs["point_coords"] = np.array([p[:2] for p in prompt["points"]], dtype=np.float32)
        kwargs["point_labels"] = np.array([p[2] for p in prompt["points"]], dtype=np.int32)
    with on_cpu():
        masks, scores, low_res = small.model.predict_inst(small.state, multimask_output=multimask, **kwargs)
    return masks.astype(bool), scores, low_res


def _check(results: list, masks: np.ndarray, scores: np.ndarray) -> None:
    assert len(results) == len(masks) == len(scores)
    for result, mask, score in zip(results, masks, scores, strict=True):
        union = np.logical_or(result.mask, mask).sum()
        iou = np.logical_and(result.mask, mask).sum() / union if union else 1.0
        assert iou >= 0.99, (iou, int(mask.sum()), int(result.mask.sum()))
        assert abs(result.score - float(score)) <= 1e-3


@pytest.fixture(scope="module")
def ours(small_sam3: SmallSam3) -> Segmentor:  # noqa: F811
    return Segmentor(small_sam3.config)


@pytest.fixture(scope="module")
def handle(ours: Segmentor, photos: dict) -> Any:
    return ours.embed(photos["coffee"])


@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multimask"])
@pytest.mark.parametrize("case", list(CASES))
def test_prompts_match_meta(
    small_sam3: SmallSam3,  # noqa: F811
    ours: Segmentor,
    handle: Any,
    case: str,
    multimask: bool,
) -> None:
    """One prompt: Meta's masks (3 with multimask; else one, by the dynamic multimask rule), scores and the
    low-resolution logits it returns (clipped to ±32, before hole filling)."""
    prompt = CASES[case]
    masks, scores, low_res = _meta(small_sam3, prompt, multimask=multimask)
    results = ours.segment(handle, [prompt], multimask=multimask, output_formats=["numpy"])
    _check(results, masks, scores)
    for result, expected in zip(results, low_res, strict=True):
        assert result.low_res_logits is not None and result.low_res_logits.shape == expected.shape == (288, 288)
        assert float(np.abs(result.low_res_logits - expected).max()) <= 1e-3


def test_batched_boxes_and_mask_input_match_meta(
    small_sam3: SmallSam3,  # noqa: F811
    ours: Segmentor,
    handle: Any,
) -> None:
    """Two boxes in one decoder call (Meta's batched ``predict_inst``), then a refinement with a mask input."""
    boxes = [BOX, (300.0, 180.0, 560.0, 390.0)]
    with on_cpu():
        masks, scores, low_res = small_sam3.model.predict_inst(
            small_sam3.state, box=np.array(boxes, dtype=np.float32), multimask_output=False
        )
    results = ours.segment(handle, boxes=boxes, output_formats=["numpy"])
    _check(results, masks[:, 0].astype(bool), scores[:, 0])

    previous = low_res[0]  # [1, 288, 288]
    refined = _meta(small_sam3, {"points": POINTS}, multimask=False, mask_input=previous)
    ours_refined = ours.segment(handle, [{"points": POINTS, "mask_input": previous[0]}], output_formats=["numpy"])
    _check(ours_refined, refined[0], refined[1])


def test_rest_segment_on_sam3_matches_the_sdk(
    small_sam3: SmallSam3,  # noqa: F811
    ours: Segmentor,
    handle: Any,
    photos: dict,
) -> None:
    """``POST /v1/segment`` with a box and with points on sam3: RLE masks (decoded with pycocotools) equal the SDK's."""
    from perceptra_seg.service import create_app

    from ..service.helpers import build_config, running

    buffer = io.BytesIO()
    Image.fromarray(photos["coffee"]).save(buffer, format="PNG")
    request = {
        "image": base64.b64encode(buffer.getvalue()).decode(),
        "prompts": [{"box": list(BOX)}, {"points": [{"x": x, "y": y, "label": label} for x, y, label in POINTS]}],
        "multimask": True,
        "output_formats": ["rle"],
    }
    with running(create_app(build_config(small_sam3.config), backend=ours.backend)) as client:
        response = client.post("/v1/segment", json=request)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    expected = ours.segment(handle, [{"box": BOX}, {"points": POINTS}], multimask=True)
    assert len(results) == len(expected) == 6
    for got, want in zip(results, expected, strict=True):
        rle = got["rle"]
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)
        assert np.array_equal(decoded, want.mask)
        assert got["score"] == pytest.approx(want.score, abs=1e-6)


def test_text_and_box_prompts_share_one_encoding(ours: Segmentor, photos: dict) -> None:
    """A phrase and a box on the same image (no handle: through the embedding cache) run the ViT once."""
    image = photos["coffee"].copy()
    image[0, 0] = (1, 2, 3)  # not the image the other tests cached
    before = ours.encoder_calls
    ours.segment_text(image, PHRASES[0], threshold=0.5, output_formats=["numpy"])
    boxed = ours.segment(image, boxes=[BOX], output_formats=["numpy"])
    handle = ours.embed(image)
    assert ours.encoder_calls == before + 1
    assert np.array_equal(ours.segment(handle, boxes=[BOX], output_formats=["numpy"])[0].mask, boxed[0].mask)


def _without(small: SmallSam3, folder: Path, *prefixes: str) -> dict[str, Any]:
    """``small``'s config pointing at a copy of its checkpoint without the keys starting with ``prefixes``."""
    state = torch.load(small.path, map_location="cpu", weights_only=True)["model"]
    target = folder / "sam3.pt"
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith(prefixes)}}, target)
    (folder / "bpe_simple_vocab_16e6.txt.gz").write_bytes(
        (small.path.parent / "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    )
    return {**small.config, "model": {**small.config["model"], "checkpoint_path": str(target)}}


def test_checkpoint_without_tracker_refuses_boxes_clearly(
    small_sam3: SmallSam3,  # noqa: F811
    photos: dict,
    tmp_path: Path,
) -> None:
    """An older reduced file (detector only; it still answers text prompts, as tests/parity/test_sam3.py did on such a
    file): a box or points are an InvalidInputError naming the cause, raised before the image is encoded."""
    config = _without(small_sam3, tmp_path, "tracker.", "detector.backbone.vision_backbone.sam2_convs.")
    segmentor = Segmentor(config)
    with pytest.raises(InvalidInputError, match="no tracker weights"):
        segmentor.segment(photos["coffee"], boxes=[BOX])
    with pytest.raises(InvalidInputError, match="no tracker weights"):
        segmentor.segment(photos["coffee"], points=[POINTS[0]])
    assert segmentor.encoder_calls == 0


def test_tracker_without_its_neck_is_a_load_error(small_sam3: SmallSam3, tmp_path: Path) -> None:  # noqa: F811
    config = _without(small_sam3, tmp_path, "detector.backbone.vision_backbone.sam2_convs.")
    with pytest.raises(ModelLoadError, match="tracker of sam3.pt does not fit"):
        Segmentor(config)


@pytest.mark.parametrize("backend", ["onnx", "openvino", "triton"])
def test_other_runtimes_refuse_sam3(small_sam3: SmallSam3, backend: str) -> None:  # noqa: F811
    config = {**small_sam3.config, "runtime": {**small_sam3.config["runtime"], "backend": backend}}
    with pytest.raises(ConfigError, match="torch backend only"):
        Segmentor(config)


def test_hole_filling_matches_meta() -> None:
    """:func:`fill_holes` against Meta's ``SAM2Transforms.postprocess_masks`` hole filling (scikit-image labels on
    CPU), on logits with holes of many sizes, some touching the border."""
    from perceptra_seg.concepts.tracker import MAX_HOLE_AREA, fill_holes

    import_sam3()
    import sam3.model.utils.sam1_utils as utils  # imported (with the stand-ins) by import_sam3

    transforms = utils.SAM2Transforms(resolution=1008, mask_threshold=0.0, max_hole_area=MAX_HOLE_AREA)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(2, 3, 12, 12, generator=generator)
    logits = torch.nn.functional.interpolate(noise, size=(72, 72), mode="bilinear", align_corners=False) + 0.4
    expected = transforms.postprocess_masks(logits, (72, 72))  # same size: the resize is the identity
    filled = fill_holes(logits.numpy())
    assert not np.array_equal(filled, logits.numpy())  # there were holes to fill
    np.testing.assert_allclose(filled, expected.numpy(), atol=1e-6)
