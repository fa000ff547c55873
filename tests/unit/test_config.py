"""Config precedence (defaults < YAML < env < arguments) and strictness."""

from __future__ import annotations

from pathlib import Path

import pytest

from perceptra_seg import ConfigError, SegmentorConfig


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = SegmentorConfig.load()
    assert (config.model.name, config.model.variant, config.runtime.device) == ("sam_v2", None, "auto")
    assert config.runtime.backend == "torch" and config.outputs.formats == ["numpy"]


def test_yaml_then_env_then_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _yaml(
        tmp_path,
        "model:\n  name: sam_v1\n  variant: vit_l\n"
        "runtime:\n  device: cpu\n  precision: bf16\n"
        "cache:\n  max_bytes: 123\n",
    )
    config = SegmentorConfig.load(path)
    assert (config.model.name, config.model.variant, config.runtime.precision, config.cache.max_bytes) == (
        "sam_v1",
        "vit_l",
        "bf16",
        123,
    )
    monkeypatch.setenv("SEGMENTOR_RUNTIME_PRECISION", "fp16")
    monkeypatch.setenv("SEGMENTOR_MODEL_CHECKPOINT_PATH", "/models/x.pth")
    monkeypatch.setenv("SEGMENTOR_OUTPUTS_FORMATS", '["rle", "polygons"]')
    config = SegmentorConfig.load(path)
    assert config.runtime.precision == "fp16"  # env beats YAML
    assert config.runtime.device == "cpu"  # YAML value kept where env is silent
    assert config.model.checkpoint_path == "/models/x.pth"
    assert config.outputs.formats == ["rle", "polygons"]
    config = SegmentorConfig.load(path, runtime={"precision": "fp32"})
    assert config.runtime.precision == "fp32"  # arguments beat env
    assert config.runtime.device == "cpu"  # deep merge: the rest of the section survives


def test_segmentor_shortcuts_override_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from perceptra_seg.config_overrides import effective_config

    monkeypatch.setenv("SEGMENTOR_RUNTIME_DEVICE", "cuda")
    path = _yaml(tmp_path, "model:\n  name: sam_v2\n")
    config = effective_config(path, model="sam_v1", device="cpu", checkpoint_path=tmp_path / "f.pth")
    assert (config.model.name, config.runtime.device) == ("sam_v1", "cpu")
    assert config.model.checkpoint_path == str(tmp_path / "f.pth")
    base = SegmentorConfig.load(runtime={"device": "cpu"})
    assert effective_config(base, precision="bf16").runtime.precision == "bf16"
    assert effective_config({"model": {"name": "sam_v1"}}, variant="vit_h").model.variant == "vit_h"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("modle:\n  name: sam_v1\n", "modle: unknown key"),
        ("model:\n  nmae: sam_v1\n", "model.nmae: unknown key"),
        ("model:\n  name: sam_v9\n", "unknown model"),
        ("runtime:\n  device: tpu\n", "unknown device"),
        ("runtime:\n  precision: int4\n", "runtime.precision"),
        ("- just\n- a list\n", "must hold a mapping"),
        ("model: [unclosed\n", "cannot read config file"),
    ],
)
def test_bad_yaml_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        SegmentorConfig.load(_yaml(tmp_path, text))


def test_unknown_env_key_in_a_section_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTOR_RUNTIME_DEVCE", "cpu")
    with pytest.raises(ConfigError, match="runtime.devce: unknown key"):
        SegmentorConfig.load()


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        SegmentorConfig.load("/nonexistent/config.yaml")


# --- the original README's model.encoder_variant, and output formats checked at load time -------------------


def test_encoder_variant_is_variant_in_yaml_env_and_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = _yaml(tmp_path, "model:\n  name: sam_v1\n  encoder_variant: vit_h\n")  # the original README's file
    config = SegmentorConfig.load(original)
    assert config.model.variant == "vit_h" and "encoder_variant" not in config.model.model_dump()
    monkeypatch.setenv("SEGMENTOR_MODEL_ENCODER_VARIANT", "vit_l")  # env beats YAML, whichever name each uses
    assert SegmentorConfig.load(original).model.variant == "vit_l"
    monkeypatch.setenv("SEGMENTOR_MODEL_VARIANT", "vit_l")  # both names, same value: fine
    assert SegmentorConfig.load(original).model.variant == "vit_l"
    assert SegmentorConfig.load(original, model={"variant": "vit_b"}).model.variant == "vit_b"  # arguments win
    assert SegmentorConfig.load(None, model={"name": "sam_v1", "encoder_variant": "vit_b"}).model.variant == "vit_b"


def test_conflicting_encoder_variant_and_variant_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    both = _yaml(tmp_path, "model:\n  name: sam_v1\n  variant: vit_b\n  encoder_variant: vit_h\n")
    with pytest.raises(ConfigError, match=r"model.encoder_variant \('vit_h'\) and model.variant \('vit_b'\) disagree"):
        SegmentorConfig.load(both)
    with pytest.raises(ConfigError, match="disagree"):
        SegmentorConfig.load(None, model={"variant": "vit_b", "encoder_variant": "vit_l"})
    monkeypatch.setenv("SEGMENTOR_MODEL_VARIANT", "vit_b")
    monkeypatch.setenv("SEGMENTOR_MODEL_ENCODER_VARIANT", "vit_l")
    with pytest.raises(ConfigError, match="disagree"):
        SegmentorConfig.load()


def test_segmentor_encoder_variant_keyword(monkeypatch: pytest.MonkeyPatch) -> None:
    from perceptra_seg import Segmentor
    from perceptra_seg.config_overrides import effective_config

    assert effective_config(None, model="sam_v1", encoder_variant="vit_l").model.variant == "vit_l"
    assert effective_config({"model": {"variant": "vit_b"}}, encoder_variant="vit_h").model.variant == "vit_h"
    with pytest.raises(ConfigError, match="conflicting values for model.variant"):
        Segmentor(model="sam_v1", variant="vit_b", encoder_variant="vit_h")


def test_variant_keyword_overrides_encoder_variant_in_every_kind_of_config(tmp_path: Path) -> None:
    """A shortcut wins over the config argument whichever name the argument uses; a dict with encoder_variant used
    to raise a ConfigError against variant= while the same YAML file was overridden."""
    from perceptra_seg.config_overrides import effective_config

    path = tmp_path / "original.yaml"
    path.write_text("model:\n  name: sam_v1\n  encoder_variant: vit_h\n")
    sections = {"model": {"name": "sam_v1", "encoder_variant": "vit_h"}}
    for config in (path, sections, SegmentorConfig.load(path)):
        assert effective_config(config, variant="vit_b").model.variant == "vit_b", config
        assert effective_config(config, encoder_variant="vit_l").model.variant == "vit_l", config
    assert sections == {"model": {"name": "sam_v1", "encoder_variant": "vit_h"}}  # the caller's dict is untouched


@pytest.mark.parametrize("source", ["yaml", "env", "argument"])
def test_unknown_output_format_fails_when_the_config_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    path = None
    if source == "yaml":
        path = _yaml(tmp_path, "outputs:\n  formats: [rle, polygon]\n")
    elif source == "env":
        monkeypatch.setenv("SEGMENTOR_OUTPUTS_FORMATS", '["rle", "polygon"]')
    overrides = {"outputs": {"formats": ["rle", "polygon"]}} if source == "argument" else {}
    with pytest.raises(
        ConfigError,
        match=r"outputs.formats: .*unknown output format 'polygon'; valid formats: "
        r"numpy, rle, png, polygons",
    ):
        SegmentorConfig.load(path, **overrides)


def test_output_formats_are_normalised_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEGMENTOR_OUTPUTS_FORMATS", '["RLE", " polygons", "rle"]')
    assert SegmentorConfig.load().outputs.formats == ["rle", "polygons"]
