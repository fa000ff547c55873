"""MobileSAM in the catalogue: registry entry, strict conversion of mobile_sam.pt, wrong-model errors, downloads
(local HTTP server on 127.0.0.1) and configuration errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg import ConfigError, ModelLoadError, Segmentor
from perceptra_seg.registry import get_model_spec

from ..conftest import SMALL_TINY_VIT
from .test_weights import server  # noqa: F401 - the local HTTP server fixture


def _config(path: Path | str | None, **model: Any) -> dict[str, Any]:
    return {
        "model": {
            "name": "mobile_sam",
            "checkpoint_path": None if path is None else str(path),
            "architecture": {"tiny_vit": SMALL_TINY_VIT},
            **model,
        },
        "runtime": {"device": "cpu", "precision": "fp32"},
    }


def test_catalogue_entry() -> None:
    spec = get_model_spec("mobile_sam")
    assert (spec.variant, spec.family, spec.architecture) == ("vit_t", "sam1", "mobile_sam")
    assert spec.filename == "mobile_sam.pt"
    assert spec.url == "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
    assert spec.licence == "Apache-2.0" and spec.source == "https://github.com/ChaoningZhang/MobileSAM"
    with pytest.raises(ConfigError, match="unknown variant 'vit_b' for model 'mobile_sam'; choose one of vit_t"):
        get_model_spec("mobile_sam", "vit_b")


def test_conversion_is_strict_and_wrong_files_are_refused(
    tmp_path: Path,
    small_mobile_sam: tuple[Any, Path, dict[str, Any]],
    small_sam1: tuple[Any, Path],
    small_sam_hq: tuple[Any, Path, dict[str, Any]],
) -> None:
    state = torch.load(small_mobile_sam[1], weights_only=True)
    del state["image_encoder.layers.1.blocks.0.attn.attention_biases"]
    broken = tmp_path / "mobile_sam_broken.pt"
    torch.save(state, broken)
    with pytest.raises(ModelLoadError, match=r"vision_encoder\.layers\.1\.blocks\.0\.attn\.attention_biases"):
        Segmentor(_config(broken))
    with pytest.raises(ModelLoadError, match="holds a SAM1 model but model 'mobile_sam' is a MobileSAM model"):
        Segmentor(_config(small_sam1[1]))
    with pytest.raises(ModelLoadError, match="holds a SAM-HQ model but model 'mobile_sam' is a MobileSAM model"):
        Segmentor(_config(small_sam_hq[1]))
    with pytest.raises(ModelLoadError, match="MobileSAM loads from the authors' file"):
        Segmentor(_config("ChaoningZhang/MobileSAM"))
    with pytest.raises(ConfigError, match="model.architecture.tiny_vit"):
        Segmentor(_config(small_mobile_sam[1], architecture={"tiny_vit": {"depth": [1]}}))


def test_download_from_mirror_checks_the_architecture(
    tmp_path: Path,
    server: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    small_mobile_sam: tuple[Any, Path, dict[str, Any]],
    small_sam1: tuple[Any, Path],
    photos: dict[str, np.ndarray],
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base, handler = server
    cache = tmp_path / "cache"
    settings = _config(None, cache_dir=str(cache), download_base_url=base)
    handler.files["mobile_sam.pt"] = small_sam1[1].read_bytes()
    with pytest.raises(ModelLoadError, match="holds a plain SAM model, expected MobileSAM"):
        Segmentor(settings)
    assert not cache.exists() or not any(cache.iterdir())
    handler.files["mobile_sam.pt"] = small_mobile_sam[1].read_bytes()
    downloaded = Segmentor(settings)
    assert (cache / "mobile_sam.pt").read_bytes() == small_mobile_sam[1].read_bytes()
    image = photos["coffee"]
    expected = Segmentor(small_mobile_sam[2]).segment_from_box(image, (60, 40, 300, 260), output_formats=["numpy"])
    result = downloaded.segment_from_box(image, (60, 40, 300, 260), output_formats=["numpy"])
    assert np.array_equal(result.mask, expected.mask)
