"""Parity for a SAM 1 whose embedding grid is not 64×64: 32-pixel patches give a 32×32 grid and 128×128 logits.

Meta's ``Sam`` accepts any patch size; its predictor upsamples whatever low-resolution logits come out and takes
mask inputs of that size. The packaged demo model uses such a grid, so the whole pipeline (prompt validation,
logit upsampling, mask-input refinement, ONNX export) must follow the model's own logit size rather than 256.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg import Segmentor
from perceptra_seg.demo.evaluation import mask_iou
from perceptra_seg.exceptions import InvalidInputError

from ..conftest import reference_modules, save_meta_checkpoint

ARCHITECTURE = {
    "vision_config": {
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "global_attn_indexes": [1],
        "patch_size": 32,
    },
    "prompt_encoder_config": {"patch_size": 32},
}


def _reference_model(seed: int) -> torch.nn.Module:
    """Meta's ``Sam`` with a 2-block ViT on 32-pixel patches (random weights, perturbed like the other fixtures)."""
    segment_anything, _ = reference_modules()
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer

    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        depth=2,
        embed_dim=64,
        img_size=1024,
        mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        num_heads=2,
        patch_size=32,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=(1,),
        window_size=14,
        out_chans=256,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(32, 32), input_image_size=(1024, 1024), mask_in_chans=16
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    model = segment_anything.modeling.Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def coarse(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Segmentor]:
    model = _reference_model(seed=5)
    path = save_meta_checkpoint(model, tmp_path_factory.mktemp("coarse") / "sam_coarse.pth", sam2=False)
    config = {
        "model": {"name": "sam_v1", "variant": "vit_b", "checkpoint_path": str(path), "architecture": ARCHITECTURE},
        "runtime": {"device": "cpu"},
    }
    return model, Segmentor(config)


def _predict(predictor: Any, **kwargs: Any) -> tuple[np.ndarray, float]:
    masks, scores, _ = predictor.predict(multimask_output=False, **kwargs)
    return np.asarray(masks[0], bool), float(scores[0])


def test_masks_logits_and_refinement_match_reference(
    coarse: tuple[torch.nn.Module, Segmentor], photos: dict[str, np.ndarray]
) -> None:
    segment_anything, _ = reference_modules()
    model, ours = coarse
    image = photos["chelsea"]
    predictor = segment_anything.SamPredictor(model)
    predictor.set_image(image)
    assert ours.backend.mask_size == 128

    by_box = ours.segment_from_box(image, box=(60, 40, 300, 260))
    expected, score = _predict(predictor, box=np.array([60, 40, 300, 260], dtype=np.float32))
    assert by_box.low_res_logits.shape == (128, 128)
    assert mask_iou(by_box.mask, expected) >= 0.99 and abs(by_box.score - score) <= 1e-3

    refined = ours.segment_from_points(image, points=[(180, 150, 1), (250, 120, 0)], mask_input=by_box.low_res_logits)
    expected, score = _predict(
        predictor,
        point_coords=np.array([[180, 150], [250, 120]]),
        point_labels=np.array([1, 0]),
        mask_input=by_box.low_res_logits[None],
    )
    assert mask_iou(refined.mask, expected) >= 0.99 and abs(refined.score - score) <= 1e-3


def test_mask_input_of_another_size_is_a_clear_error(
    coarse: tuple[torch.nn.Module, Segmentor], photos: dict[str, np.ndarray]
) -> None:
    with pytest.raises(InvalidInputError, match=r"\[128, 128\]"):
        coarse[1].segment_from_points(photos["chelsea"], points=[(180, 150, 1)], mask_input=np.zeros((256, 256)))


def test_onnx_export_follows_the_grid(
    coarse: tuple[torch.nn.Module, Segmentor], photos: dict[str, np.ndarray], tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from perceptra_seg.backends.export import export_onnx

    config = coarse[1].config
    export_onnx(config, tmp_path / "onnx")
    onnx_config = config.model_copy(
        update={
            "runtime": config.runtime.model_copy(update={"backend": "onnx"}),
            "onnx": config.onnx.model_copy(update={"model_dir": str(tmp_path / "onnx")}),
        }
    )
    image = photos["chelsea"]
    with Segmentor(onnx_config) as onnx_segmentor:
        assert onnx_segmentor.backend.mask_size == 128
        first = coarse[1].segment_from_box(image, box=(60, 40, 300, 260))
        prompt = {"points": [(180, 150, 1), (250, 120, 0)], "mask_input": first.low_res_logits}
        [got] = onnx_segmentor.segment(image, prompts=[prompt])
        [want] = coarse[1].segment(image, prompts=[prompt])
    assert mask_iou(got.mask, want.mask) >= 0.99
    np.testing.assert_allclose(got.low_res_logits, want.low_res_logits, atol=1e-3)
