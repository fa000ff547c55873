"""SAM-HQ in the catalogue: registry entries, strict conversion, wrong-model errors, downloads (local HTTP server on
127.0.0.1), the transformers-directory path and the ``model.hq_token_only`` option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from perceptra_seg import ConfigError, ModelLoadError, Segmentor
from perceptra_seg.config import SegmentorConfig
from perceptra_seg.registry import get_model_spec, list_models

from ..conftest import SMALL_SAM1_ARCHITECTURE
from .test_weights import server  # noqa: F401 - the local HTTP server fixture

BOX = (60, 40, 300, 260)


def _config(path: Path | str | None, **model: Any) -> dict[str, Any]:
    return {
        "model": {"name": "sam_hq", "checkpoint_path": None if path is None else str(path), **model},
        "runtime": {"device": "cpu", "precision": "fp32"},
    }


def test_catalogue_lists_the_authors_files_and_hub_ids() -> None:
    specs = {spec.variant: spec for spec in list_models() if spec.name == "sam_hq"}
    assert sorted(specs) == ["vit_b", "vit_h", "vit_l", "vit_tiny"]
    assert specs["vit_tiny"].url.endswith("/sam_hq_vit_tiny.pth") and specs["vit_tiny"].hub_id == ""
    default = get_model_spec("sam_hq")
    assert default.variant == "vit_b" and default.family == "sam1" and default.architecture == "sam_hq"
    assert default.filename == "sam_hq_vit_b.pth"
    assert default.url == "https://huggingface.co/lkeab/hq-sam/resolve/main/sam_hq_vit_b.pth"
    assert specs["vit_l"].hub_id == "syscv-community/sam-hq-vit-large"
    assert default.licence == "Apache-2.0" and default.source == "https://github.com/SysCV/sam-hq"
    assert default.sha256_prefix is None  # no hash in the authors' names: downloads are checked for loadability
    assert get_model_spec("sam_v1").architecture == "sam"


def test_missing_key_is_named_and_wrong_model_files_are_refused(
    tmp_path: Path, small_sam_hq: tuple[Any, Path, dict[str, Any]], small_sam1: tuple[Any, Path]
) -> None:
    _, hq_path, _ = small_sam_hq
    state = torch.load(hq_path, weights_only=True)
    del state["mask_decoder.hf_mlp.layers.2.bias"]
    broken = tmp_path / "sam_hq_broken.pth"
    torch.save(state, broken)
    with pytest.raises(ModelLoadError, match=r"hq_mask_mlp\.proj_out\.bias"):
        Segmentor(_config(broken, architecture=SMALL_SAM1_ARCHITECTURE))
    with pytest.raises(ModelLoadError, match="holds a SAM1 model but model 'sam_hq' is a SAM-HQ model"):
        Segmentor(_config(small_sam1[1], architecture=SMALL_SAM1_ARCHITECTURE))
    plain = _config(hq_path, architecture=SMALL_SAM1_ARCHITECTURE)
    plain["model"]["name"] = "sam_v1"
    with pytest.raises(ModelLoadError, match="holds a SAM-HQ model but model 'sam_v1' is a SAM1 model"):
        Segmentor(plain)


def test_download_from_mirror_checks_the_architecture(
    tmp_path: Path,
    server: Any,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    small_sam_hq: tuple[Any, Path, dict[str, Any]],
    small_sam1: tuple[Any, Path],
    photos: dict[str, np.ndarray],
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    base, handler = server
    cache = tmp_path / "cache"
    settings = _config(None, architecture=SMALL_SAM1_ARCHITECTURE, cache_dir=str(cache), download_base_url=base)
    handler.files["sam_hq_vit_b.pth"] = small_sam1[1].read_bytes()  # a plain SAM file under the SAM-HQ name
    with pytest.raises(ModelLoadError, match="holds a plain SAM model, expected SAM-HQ"):
        Segmentor(settings)
    assert not cache.exists() or not any(cache.iterdir())
    handler.files["sam_hq_vit_b.pth"] = small_sam_hq[1].read_bytes()
    downloaded = Segmentor(settings)
    assert (cache / "sam_hq_vit_b.pth").read_bytes() == small_sam_hq[1].read_bytes()
    assert handler.requests == ["/sam_hq_vit_b.pth", "/sam_hq_vit_b.pth"]
    direct = Segmentor(small_sam_hq[2])
    image = photos["coffee"]
    expected = direct.segment_from_box(image, BOX, output_formats=["numpy"])
    assert np.array_equal(downloaded.segment_from_box(image, BOX, output_formats=["numpy"]).mask, expected.mask)


def test_transformers_directory_runs_the_authors_decoder(
    tmp_path: Path, small_sam_hq: tuple[Any, Path, dict[str, Any]], photos: dict[str, np.ndarray]
) -> None:
    """A SamHQModel saved in transformers' format loads with the same (authors') decoder pass as the file."""
    from_file = Segmentor(small_sam_hq[2])
    directory = tmp_path / "sam_hq_transformers"
    from_file.backend.model.save_pretrained(directory)  # type: ignore[attr-defined]
    from_dir = Segmentor(_config(directory))
    assert type(from_dir.backend.model.mask_decoder).__name__ == "SamHQDecoder"  # type: ignore[attr-defined]
    image = photos["chelsea"]
    a = from_file.segment_from_points(image, [(200, 150, 1)], output_formats=["numpy"])
    b = from_dir.segment_from_points(image, [(200, 150, 1)], output_formats=["numpy"])
    assert np.array_equal(a.mask, b.mask) and a.score == pytest.approx(b.score, abs=1e-6)


def test_hq_token_only_is_validated_and_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="hq_token_only applies to model sam_hq only"):
        SegmentorConfig.load(None, model={"name": "sam_v1", "hq_token_only": True})
    monkeypatch.setenv("SEGMENTOR_MODEL_NAME", "sam_hq")
    monkeypatch.setenv("SEGMENTOR_MODEL_HQ_TOKEN_ONLY", "true")
    config = SegmentorConfig.load(None)
    assert config.model.name == "sam_hq" and config.model.hq_token_only is True


def test_onnx_export_of_sam_hq_is_refused_clearly(small_sam_hq: tuple[Any, Path, dict[str, Any]]) -> None:
    pytest.importorskip("onnx")
    from perceptra_seg.backends.export import export_onnx

    with pytest.raises(ConfigError, match="ONNX export of sam_hq is not supported"):
        export_onnx(SegmentorConfig.load(None, **small_sam_hq[2]))


def test_plain_sam_transformers_directory_is_refused_for_sam_hq(
    tmp_path: Path, small_sam1_config: dict[str, Any]
) -> None:
    plain = Segmentor(small_sam1_config)
    directory = tmp_path / "sam_transformers"
    plain.backend.model.save_pretrained(directory)  # type: ignore[attr-defined]
    with pytest.raises(ModelLoadError, match="holds a 'sam' model but model 'sam_hq' needs a 'sam_hq' one"):
        Segmentor(_config(directory))
