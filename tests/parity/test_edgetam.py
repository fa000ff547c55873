"""EdgeTAM: our conversion of the authors' checkpoint against transformers' own conversion of the same file.

There is no EdgeTAM reference package on the index, so the proof has two parts, on a random-weight file in the
authors' format (``small_edgetam``: a reduced RepViT trunk, everything else full size):

* state dicts: transformers' conversion scripts (``tests/parity/hf_edgetam``, their ``replace_keys``) and ours give
  the same names and the same tensors, for the image model and for the video model;
* masks: our ``Segmentor`` against a reference pipeline made of the authors' image transforms (``SAM2Transforms``
  from the ``sam2`` package, which EdgeTAM's fork keeps unchanged), prompts in the authors' order (box corners as
  points labelled 2 and 3, then the clicks) and transformers' ``EdgeTamModel`` holding transformers' conversion
  of the file — box, points and box+points, single-mask and multimask.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg import Segmentor
from perceptra_seg.backends.edgetam import build_edgetam
from perceptra_seg.conversion_edgetam import convert_edgetam_state_dict
from perceptra_seg.exceptions import ModelLoadError

from .hf_edgetam import convert_edgetam_to_hf as hf_image
from .hf_edgetam import convert_edgetam_video_to_hf as hf_video
from .test_parity import CASES, _iou, _scaled

Prepared = tuple[Path, dict[str, torch.Tensor], dict[str, Any]]


def _authors_file(path: Path) -> dict[str, torch.Tensor]:
    return dict(torch.load(path, map_location="cpu", weights_only=True)["model"])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    different = [key for key in a if a[key].shape != b[key].shape or not torch.equal(a[key], b[key])]
    assert not different, different[:5]


def test_video_conversion_equals_transformers_script(small_edgetam: Prepared) -> None:
    path, state, _ = small_edgetam
    authors = _authors_file(path)
    assert any(key.startswith("spatial_perceiver.layers.0.attn.to_kv") for key in authors)
    theirs = hf_video.replace_keys(authors)
    _same(theirs, state)  # the authors' names in the file are the ones transformers' script expects
    _same(convert_edgetam_state_dict(authors, video=True), theirs)


def test_image_conversion_equals_transformers_script(small_edgetam: Prepared) -> None:
    from transformers import EdgeTamModel

    path, _, config = small_edgetam
    authors = _authors_file(path)
    ours = convert_edgetam_state_dict(authors)
    theirs = hf_image.replace_keys(authors)
    model = build_edgetam(config["model"]["architecture"])
    wanted = set(model.state_dict())
    ignored = [re.compile(p) for p in EdgeTamModel._keys_to_ignore_on_load_unexpected]
    # what their script's non-strict load would skip: memory modules only, nothing of the image path
    assert all(any(p.search(key) for p in ignored) for key in set(theirs) - wanted)
    _same(ours, {key: theirs[key] for key in wanted})
    model.load_state_dict(ours, strict=True)


def _reference_model(path: Path, architecture: dict[str, Any]) -> Any:
    model: Any = build_edgetam(architecture)
    theirs = hf_image.replace_keys(_authors_file(path))
    missing, _ = model.load_state_dict(theirs, strict=False)
    assert not missing
    return model.eval()


def _authors_transforms() -> Any:
    # imported by conftest together with the sam2 package (under its torchvision stand-in)
    return sys.modules["sam2.utils.transforms"].SAM2Transforms(resolution=1024, mask_threshold=0.0)


def _reference_predict(
    model: Any, embeddings: list[torch.Tensor], size: tuple[int, int], prompt: dict[str, Any], *, multimask: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The authors' predictor steps: coordinates scaled to 1024, the box as two corner points (labels 2, 3)
    before the clicks, logits resized to the photo and thresholded at 0."""
    transforms = _authors_transforms()
    coords: list[list[float]] = []
    labels: list[int] = []
    if "box" in prompt:
        x1, y1, x2, y2 = prompt["box"]
        coords += [[x1, y1], [x2, y2]]
        labels += [2, 3]
    for x, y, label in prompt.get("points", []):
        coords.append([x, y])
        labels.append(label)
    points = transforms.transform_coords(torch.tensor(coords, dtype=torch.float32), normalize=True, orig_hw=size)
    with torch.no_grad():
        output = model(
            image_embeddings=embeddings,
            input_points=points[None, None],
            input_labels=torch.tensor(labels)[None, None],
            multimask_output=multimask,
        )
    masks = transforms.postprocess_masks(output.pred_masks[0, 0][None], size)[0] > 0
    return masks.numpy(), output.iou_scores[0, 0].numpy()


def test_edgetam_masks_and_scores_match_transformers(small_edgetam: Prepared, photos: dict[str, np.ndarray]) -> None:
    path, _, config = small_edgetam
    image = photos["coffee"]
    size = image.shape[:2]
    model = _reference_model(path, config["model"]["architecture"])
    with torch.no_grad():
        embeddings = model.get_image_embeddings(_authors_transforms()(image)[None])
    ours = Segmentor(config)
    prompts = {name: _scaled(p, size) for name, p in CASES.items()}
    for name, prompt in prompts.items():
        ref_masks, ref_scores = _reference_predict(model, embeddings, size, prompt, multimask=False)
        (result,) = ours.segment(image, prompts=[prompt], output_formats=["numpy"])
        assert 0.02 < ref_masks[0].mean() < 0.98, name  # a partial mask, so the comparison means something
        assert _iou(result.mask, ref_masks[0]) >= 0.99, name
        assert abs(result.score - float(ref_scores[0])) <= 1e-3, name
    ref_masks, ref_scores = _reference_predict(model, embeddings, size, prompts["points"], multimask=True)
    results = ours.segment(image, prompts=[prompts["points"]], multimask=True, output_formats=["numpy"])
    assert len(results) == 3 == len(ref_masks)
    for result, ref_mask, ref_score in zip(results, ref_masks, ref_scores, strict=True):
        assert _iou(result.mask, ref_mask) >= 0.99
        assert abs(result.score - float(ref_score)) <= 1e-3


def test_edgetam_rejects_other_checkpoints(small_edgetam: Prepared, tmp_path: Path) -> None:
    """An EdgeTAM file under another model name, and a transformers folder under ``edgetam``, are clear errors."""
    path, _, config = small_edgetam
    with pytest.raises(ModelLoadError, match="holds a EdgeTAM model but model 'sam_v2'"):
        Segmentor({**config, "model": {"name": "sam_v2", "variant": "hiera_tiny", "checkpoint_path": str(path)}})
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "edgetam"}')
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="loads from the authors' file"):
        Segmentor({**config, "model": {"name": "edgetam", "checkpoint_path": str(folder)}})
