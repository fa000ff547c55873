"""An export is loaded only by the configuration it belongs to; broken or foreign exports are refused clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perceptra_seg import ConfigError, ModelLoadError, Segmentor
from perceptra_seg.backends import export as export_module
from perceptra_seg.backends.export import convert_export, export_precision
from perceptra_seg.backends.onnx_manifest import LEGACY_INT8, MANIFEST_NAME, read_manifest

from ..cpus import AVX2_ONLY, AVX512_BF16, pretend_cpu
from .conftest import Exported, onnx_config


def _copy(exported: Exported, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the fp32 SAM 1 export with manifest fields changed."""
    directory = tmp_path / "export"
    shutil.copytree(exported.fp32_dir, directory)
    if changes:
        data = json.loads((directory / MANIFEST_NAME).read_text())
        data.update(changes)
        (directory / MANIFEST_NAME).write_text(json.dumps(data))
    return directory


def _load(exported: Exported, directory: Path, **sections: Any) -> Segmentor:
    config = onnx_config(exported.config, directory)
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return Segmentor(config)


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"variant": "vit_l"}, "variant 'vit_l'"),
        ({"model": "sam_v2", "family": "sam2"}, "model 'sam_v2'"),
        ({"checkpoint": "0123456789abcdef"}, "checkpoint '0123456789abcdef'"),
        ({"precision": "fp16"}, "precision 'fp16'"),
        ({"preprocessing": "resize to 512"}, "preprocessing"),
    ],
    ids=["variant", "model", "checkpoint", "precision", "preprocessing"],
)
def test_mismatched_manifest_is_refused(
    sam1_export: Exported, tmp_path: Path, changes: dict[str, Any], named: str
) -> None:
    directory = _copy(sam1_export, tmp_path, **changes)
    with pytest.raises(ModelLoadError, match="does not match the configuration") as caught:
        _load(sam1_export, directory, runtime={"precision": "fp32"})  # explicit: auto takes the export's
    assert named in str(caught.value) and str(directory) in str(caught.value)


def test_export_of_another_checkpoint_is_refused(sam1_export: Exported, tmp_path: Path) -> None:
    """The configured checkpoint file differs from the one exported: its fingerprint does not match."""
    other = tmp_path / "other.pth"
    other.write_bytes(Path(sam1_export.config["model"]["checkpoint_path"]).read_bytes() + b"changed")
    with pytest.raises(ModelLoadError, match="checkpoint"):
        _load(sam1_export, sam1_export.fp32_dir, model={"checkpoint_path": str(other)})


def test_export_of_another_model_family_is_refused(sam1_export: Exported) -> None:
    config = onnx_config(
        {"model": {"name": "sam_v2", "variant": "hiera_tiny"}, "runtime": {"device": "cpu"}}, sam1_export.fp32_dir
    )
    with pytest.raises(ModelLoadError, match=r"model 'sam_v1' \(configured: 'sam_v2'\)"):
        Segmentor(config)


def test_without_local_checkpoint_the_manifest_fingerprint_is_trusted(
    sam1_export: Exported, tmp_path: Path, photos: dict[str, np.ndarray]
) -> None:
    """Deployment without the torch weights: no checkpoint configured or cached, model and variant still checked."""
    segmentor = _load(sam1_export, sam1_export.fp32_dir, model={"checkpoint_path": None, "cache_dir": str(tmp_path)})
    expected = sam1_export.onnx.segment(photos["coffee"], boxes=[(50, 40, 300, 200)])[0]
    result = segmentor.segment(photos["coffee"], boxes=[(50, 40, 300, 200)])[0]
    assert np.array_equal(result.mask, expected.mask)
    assert result.model_info["checkpoint"] == read_manifest(sam1_export.fp32_dir).checkpoint


def test_incomplete_or_truncated_exports_are_refused(sam1_export: Exported, tmp_path: Path) -> None:
    directory = _copy(sam1_export, tmp_path)
    data = (directory / "decoder_multi.onnx").read_bytes()
    (directory / "decoder_multi.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="decoder_multi graph .* has .* bytes"):
        _load(sam1_export, directory)
    (directory / "decoder_multi.onnx").unlink()
    with pytest.raises(ModelLoadError, match="incomplete: .*decoder_multi.onnx missing"):
        _load(sam1_export, directory)


def test_unknown_format_version_and_garbage_are_refused(sam1_export: Exported, tmp_path: Path) -> None:
    directory = _copy(sam1_export, tmp_path, format_version=99)
    with pytest.raises(ModelLoadError, match="format version 99"):
        _load(sam1_export, directory)
    (directory / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ModelLoadError, match="unreadable ONNX manifest"):
        _load(sam1_export, directory)


def test_missing_export_without_auto_export_names_the_command(sam1_export: Exported, tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    with pytest.raises(ModelLoadError) as caught:
        _load(sam1_export, empty, onnx={"auto_export": False, "quantize": "int8"})
    message = str(caught.value)
    checkpoint = sam1_export.config["model"]["checkpoint_path"]
    assert "auto_export is off" in message
    assert (
        f"segmentor-cli export-onnx --model sam_v1 --variant vit_b --checkpoint {checkpoint} --out {empty}"
        " --quantize int8" in message
    )
    assert not empty.exists()


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"runtime": {"precision": "bf16"}}, "bf16 is torch-only"),
        ({"runtime": {"precision": "fp16"}, "onnx": {"quantize": "int8"}}, "runtime.precision auto or fp32"),
    ],
)
def test_unsupported_precision_is_a_config_error(
    sam1_export: Exported, sections: dict[str, dict[str, Any]], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        _load(sam1_export, sam1_export.fp32_dir, **sections)


def test_export_options_are_validated(sam1_export: Exported, tmp_path: Path) -> None:
    assert export_precision(None, False) == "fp32"
    assert export_precision("int8", False) == "int8"
    assert export_precision(None, True) == "fp16"
    with pytest.raises(ConfigError, match="either INT8 quantisation or fp16"):
        export_precision("int8", True)
    with pytest.raises(ConfigError, match="unknown quantisation 'int4'"):
        export_precision("int4", False)
    with pytest.raises(ConfigError, match="needs quantize='int8' or fp16=True"):
        convert_export(sam1_export.fp32_dir, tmp_path / "same")
    with pytest.raises(ConfigError, match="opset 11 is too old"):
        export_module.export_onnx(sam1_export.config, tmp_path / "old", opset=11)


def test_large_graphs_keep_weights_in_one_external_file(
    sam1_export: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photos: dict[str, np.ndarray]
) -> None:
    """Above the size limit (2.5 GB ViT-H in real life; lowered here) weights go to ``<graph>.onnx.data``."""
    monkeypatch.setattr(export_module, "_EXTERNAL_DATA_BYTES", 1_000_000)
    directory = tmp_path / "external"
    convert_export(sam1_export.fp32_dir, directory, fp16=True)
    manifest = read_manifest(directory)
    encoder, decoder = manifest.graphs["encoder"], manifest.graphs["decoder_single"]
    assert encoder.data_file == "encoder.onnx.data" and decoder.data_file == "decoder_single.onnx.data"
    assert (directory / "encoder.onnx").stat().st_size < 200_000 < (directory / "encoder.onnx.data").stat().st_size
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [MANIFEST_NAME] + [f for g in manifest.graphs.values() for f in (g.file, g.data_file) if f]
    )
    segmentor = _load(sam1_export, directory, runtime={"precision": "fp16"})
    reference = sam1_export.onnx.segment(photos["coffee"], boxes=[(50, 40, 300, 200)])[0]
    result = segmentor.segment(photos["coffee"], boxes=[(50, 40, 300, 200)])[0]
    assert np.logical_and(result.mask, reference.mask).sum() / np.logical_or(result.mask, reference.mask).sum() > 0.98


def test_no_export_dir_and_no_local_checkpoint_explains_both(tmp_path: Path) -> None:
    """Nothing configured, nothing cached: no download is attempted, the error says what to run and set."""
    config = {
        "model": {"name": "sam_v2", "variant": "hiera_tiny", "cache_dir": str(tmp_path), "offline": True},
        "runtime": {"backend": "onnx", "device": "cpu"},
        "onnx": {"auto_export": False},
    }
    with pytest.raises(ModelLoadError) as caught:
        Segmentor(config)
    message = str(caught.value)
    assert "no checkpoint is available locally" in message and "auto_export is off" in message
    assert "segmentor-cli export-onnx --model sam_v2 --variant hiera_tiny --out <export dir>" in message
    assert message.endswith("then set onnx.model_dir to that folder")
    assert list(tmp_path.iterdir()) == []


def test_older_signed_int8_export_is_refused_without_vnni(
    sam1_export: Exported, derive: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a manifest written before the quantisation was recorded: its graphs had signed weights
    directory = tmp_path / "legacy"
    shutil.copytree(derive(sam1_export, quantize="int8"), directory)
    data = json.loads((directory / MANIFEST_NAME).read_text())
    del data["quantization"]
    (directory / MANIFEST_NAME).write_text(json.dumps(data))
    assert read_manifest(directory).quantization == LEGACY_INT8 and LEGACY_INT8.saturates_without_vnni

    pretend_cpu(monkeypatch, AVX2_ONLY)
    with pytest.raises(ModelLoadError, match="saturate") as error:
        _load(sam1_export, directory, onnx={"quantize": "int8"})
    assert "segmentor-cli export-onnx --model sam_v1 --variant vit_b" in str(error.value)
    assert f"--out {directory} --quantize int8" in str(error.value)

    pretend_cpu(monkeypatch, AVX512_BF16)  # VNNI: the same export is exact, and still loads
    info = _load(sam1_export, directory, onnx={"quantize": "int8"}).backend.info()
    assert info["precision"] == "int8" and info["quantization"]["weight_type"] == "int8"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_auto_precision_is_the_exports(sam1_export: Exported, derive: Any, precision: str) -> None:
    options = {"fp32": {}, "fp16": {"fp16": True}, "int8": {"quantize": "int8"}}[precision]
    directory = derive(sam1_export, **options) if options else sam1_export.fp32_dir
    segmentor = _load(sam1_export, directory, runtime={"precision": "auto"})
    info = segmentor.backend.info()
    assert info["precision"] == precision and f"|{precision}|" in segmentor.backend.fingerprint
    assert (info["quantization"] or {}).get("weight_type") == ("uint8" if precision == "int8" else None)


def test_export_variant_overrides_encoder_variant_of_a_dict_config() -> None:
    """export_onnx({"model": {"encoder_variant": ...}}, variant=...) used to be a ConfigError (two names disagreeing)
    where Segmentor(...) with the same arguments lets the shortcut win."""
    sections = {"model": {"name": "sam_v1", "encoder_variant": "vit_h"}}
    assert export_module._export_settings(sections, {"variant": "vit_b"}).model.variant == "vit_b"
    assert export_module._export_settings(sections, {"variant": None}).model.variant == "vit_h"
