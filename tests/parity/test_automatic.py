"""Parity of ``Segmentor.generate`` with Meta's automatic mask generators.

Same checkpoint, same image, same options: Meta's ``SamAutomaticMaskGenerator`` / ``SAM2AutomaticMaskGenerator``
(through the torch stand-ins of ``batched_nms`` / ``box_area`` in ``tests/reference_support.py``) and ours must keep
the same number of masks, and each of Meta's masks must be matched by a distinct one of ours at IoU >= 0.99 with
predicted IoU and stability score within 1e-3.

* The packaged demo model (a trained SAM 1, loaded into Meta's ``Sam`` from the same file) on a held-out synthetic
  scene gives real, distinct objects, so the filters, box NMS, crop NMS and the small-region clean-up all decide
  something: Meta's defaults, ``crop_n_layers`` 0 and 1, ``min_mask_region_area``.
* Full-size random-weight vit_b and hiera_tiny predict low-contrast masks that cover the whole image (logits within
  about ±0.8), so the thresholds are chosen to keep many of them: no IoU filter, a stability offset of 0.05 and a
  stability threshold that keeps a part, and box NMS off (``box_nms_thresh=1.0``: every box of a random-weight mask
  is the whole image). They check the geometry of the big models (SAM 1's padded two-step upsampling, SAM 2's
  direct one), SAM 2's ``use_m2m`` and ``multimask_output``, and crops (``crop_n_layers=1``, where crop NMS then
  keeps the whole-image crop's masks and the crop-edge filter drops every crop mask).
"""

from __future__ import annotations

import sys
import types
from functools import partial
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from perceptra_seg import Segmentor
from perceptra_seg.demo.scenes import HELDOUT_SEED, generate_scenes
from perceptra_seg.registry import get_model_spec
from perceptra_seg.weights import packaged_checkpoint

from ..conftest import build_reference_sam1, build_reference_sam2, reference_modules, save_meta_checkpoint


def _matched(reference: list[dict[str, Any]], ours: list[Any]) -> list[tuple[float, float, float]]:
    """For each of Meta's masks, (IoU, |Δ predicted IoU|, |Δ stability|) with its best distinct match among ours."""
    assert len(ours) == len(reference)
    free = list(range(len(ours)))
    out = []
    for ref in reference:
        mask = ref["segmentation"]

        def iou(j: int, mask: np.ndarray = mask) -> float:
            union = np.logical_or(mask, ours[j].mask).sum()
            return 1.0 if union == 0 else float(np.logical_and(mask, ours[j].mask).sum() / union)

        best = max(free, key=iou)
        free.remove(best)
        result = ours[best]
        out.append(
            (
                iou(best),
                abs(result.score - ref["predicted_iou"]),
                abs(result.stability_score - ref["stability_score"]),
            )
        )
    return out


def _assert_parity(reference: list[dict[str, Any]], ours: list[Any], minimum: int) -> None:
    assert len(reference) >= minimum, f"only {len(reference)} reference masks: the case decides too little"
    for iou, score_error, stability_error in _matched(reference, ours):
        assert iou >= 0.99 and score_error <= 1e-3 and stability_error <= 1e-3, (iou, score_error, stability_error)
    for result in ours:
        assert result.mask is not None and result.rle is not None
        assert result.area == int(result.mask.sum())
        assert result.crop_box is not None and result.point_coords is not None


# ------------------------------------------------------------------ the demo model (trained SAM 1)


def _meta_demo_model() -> torch.nn.Module:
    """Meta's ``Sam`` in the demo model's architecture, with the packaged weights (strict load)."""
    segment_anything, _ = reference_modules()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

    width = 64
    encoder = ImageEncoderViT(
        depth=3,
        embed_dim=64,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=32,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=(),
        window_size=16,
        out_chans=width,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=width, image_embedding_size=(32, 32), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=width, mlp_dim=4 * width, num_heads=2),
        transformer_dim=width,
        iou_head_depth=3,
        iou_head_hidden_dim=width,
    )
    model = segment_anything.modeling.Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder)
    state = torch.load(packaged_checkpoint(get_model_spec("demo", "tiny")), map_location="cpu")
    for name in ("pixel_mean", "pixel_std"):  # Meta's files carry these non-persistent buffers; they must agree
        assert torch.equal(state.pop(name).view(-1), getattr(model, name).view(-1))
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def demo() -> tuple[torch.nn.Module, Segmentor, np.ndarray]:
    scene = generate_scenes(HELDOUT_SEED, 1, [(240, 368)])[0]
    return _meta_demo_model(), Segmentor(model="demo", device="cpu", precision="fp32"), scene.image


#: Filters that keep the demo model's real objects (its predicted IoU tops out near 0.83).
DEMO_FILTERS = {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.8}
DEMO_CASES = {
    "one_crop": {"points_per_side": 16, "points_per_batch": 50},
    "crop_layer": {"points_per_side": 16, "crop_n_layers": 1, "crop_n_points_downscale_factor": 2},
    "small_regions": {"points_per_side": 16, "min_mask_region_area": 200},
}


def _single_mask(generator: Any) -> Any:
    """Meta's SAM 1 generator with its predictor asked for one mask per point (the demo model is trained for one
    mask; its three multimask outputs are untrained). SAM 2's generator has this switch as ``multimask_output``."""
    predict = generator.predictor.predict_torch

    def one_mask(*args: Any, **kwargs: Any) -> Any:
        kwargs["multimask_output"] = False
        return predict(*args, **kwargs)

    generator.predictor.predict_torch = one_mask
    return generator


@pytest.mark.parametrize("case", list(DEMO_CASES))
def test_demo_model_matches_meta_generator(demo: Any, case: str) -> None:
    """Counts on the held-out scene (5 objects): 10 masks with one crop, 12 with a crop layer, 7 after the
    small-region clean-up."""
    model, ours, image = demo
    options = {**DEMO_FILTERS, **DEMO_CASES[case]}
    segment_anything, _ = reference_modules()
    reference = _single_mask(segment_anything.SamAutomaticMaskGenerator(model, **options)).generate(image)
    results = ours.generate(image, output_formats=["numpy", "rle"], multimask_output=False, **options)
    _assert_parity(reference, results, minimum=7)


# ------------------------------------------------------------------ full-size random-weight vit_b and hiera_tiny

#: Keeps a part of the random-weight masks (see the module docstring); NMS off because every box is the whole image.
RANDOM_FILTERS = {
    "points_per_side": 4,
    "pred_iou_thresh": 0.0,
    "stability_score_offset": 0.05,
    "stability_score_thresh": 0.3,
    "box_nms_thresh": 1.0,
    "crop_nms_thresh": 1.0,
}


@pytest.fixture(scope="module")
def photo(photos: dict[str, np.ndarray]) -> np.ndarray:
    """A small non-square photo (the encoder's cost does not depend on it; the upsampling does)."""
    return np.asarray(Image.fromarray(photos["coffee"]).resize((300, 200), Image.Resampling.BILINEAR))


@pytest.fixture(scope="module")
def vit_b(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Segmentor]:
    model = build_reference_sam1("vit_b", seed=3)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("auto_vit_b") / "sam_vit_b_01ec64.pth", sam2=False)
    return model, Segmentor(model="sam_v1", variant="vit_b", device="cpu", precision="fp32", checkpoint_path=path)


@pytest.fixture(scope="module")
def hiera_tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Segmentor]:
    model = build_reference_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", seed=4)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("auto_tiny") / "sam2.1_hiera_tiny.pt", sam2=True)
    ours = Segmentor(model="sam_v2", variant="hiera_tiny", device="cpu", precision="fp32", checkpoint_path=path)
    return model, ours


@pytest.mark.slow
@pytest.mark.parametrize("crop_n_layers", [0, 1])
def test_vit_b_matches_meta_generator(vit_b: Any, photo: np.ndarray, crop_n_layers: int) -> None:
    model, ours = vit_b
    segment_anything, _ = reference_modules()
    options = {**RANDOM_FILTERS, "crop_n_layers": crop_n_layers}
    reference = segment_anything.SamAutomaticMaskGenerator(model, **options).generate(photo)
    results = ours.generate(photo, output_formats=["numpy", "rle"], **options)
    _assert_parity(reference, results, minimum=10)


SAM2_CASES = {
    "plain": {},
    "m2m": {"use_m2m": True},
    "single_mask": {"multimask_output": False, "mask_threshold": -0.1},
    "crop_layer": {"crop_n_layers": 1, "points_per_batch": 5},
    "small_regions": {"min_mask_region_area": 25},
}


def _connected_components(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stand-in for SAM 2's CUDA extension ``sam2._C.get_connected_componnets`` (not built on CPU machines, where
    Meta's predictor then skips its hole and sprinkle filling): for uint8 ``[N, 1, H, W]`` masks, each pixel's
    8-connected component label (0 off the mask) and that component's area (0 off the mask)."""
    labels = torch.zeros(masks.shape, dtype=torch.int32)
    areas = torch.zeros(masks.shape, dtype=torch.int32)
    for index, mask in enumerate(masks[:, 0].numpy()):
        _, label, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        area = stats[:, cv2.CC_STAT_AREA].copy()
        area[0] = 0
        labels[index, 0] = torch.from_numpy(label.astype(np.int32))
        areas[index, 0] = torch.from_numpy(area[label].astype(np.int32))
    return labels, areas


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SAM2_CASES))
def test_hiera_tiny_matches_meta_generator(
    hiera_tiny: Any, photo: np.ndarray, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sam2
    import sam2.automatic_mask_generator as reference_generator

    smallest: list[int] = []

    def components(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        labels, areas = _connected_components(masks)
        smallest.append(int(areas[areas > 0].min()) if bool((areas > 0).any()) else 0)
        return labels, areas

    extension = types.ModuleType("sam2._C")
    extension.get_connected_componnets = components  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sam2._C", extension)
    monkeypatch.setattr(sam2, "_C", extension, raising=False)
    model, ours = hiera_tiny
    options = {**RANDOM_FILTERS, **SAM2_CASES[case]}
    reference = reference_generator.SAM2AutomaticMaskGenerator(model, **options).generate(photo)
    results = ours.generate(photo, output_formats=["numpy", "rle"], **options)
    _assert_parity(reference, results, minimum=5)
    if "min_mask_region_area" in options:  # Meta's predictor ran its filling, and found regions to fill
        assert smallest and min(smallest) <= options["min_mask_region_area"]
