"""``SegmentorConfig``: every setting of the SDK, service and CLI in one validated object.

Precedence, lowest to highest: field defaults < YAML file < environment variables < explicit arguments.

* YAML: ``SegmentorConfig.load("config.yaml")`` (or ``Segmentor(config="config.yaml")``); sections as below.
* Environment: ``SEGMENTOR_<SECTION>_<FIELD>``, e.g. ``SEGMENTOR_RUNTIME_DEVICE=cpu``,
  ``SEGMENTOR_MODEL_CHECKPOINT_PATH=/models/sam_vit_b_01ec64.pth``; lists and dicts as JSON
  (``SEGMENTOR_OUTPUTS_FORMATS='["rle","polygons"]'``).
* Arguments: ``SegmentorConfig.load(path, runtime={"device": "cpu"})`` or the keyword shortcuts of ``Segmentor``.

Unknown keys are errors at every level (a typo never silently does nothing).
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .config_section import Section as _Section
from .config_serving import ServerConfig, TritonConfig
from .exceptions import ConfigError
from .registry import MODEL_NAMES

__all__ = [
    "CacheConfig",
    "InputConfig",
    "LoggingConfig",
    "ModelConfig",
    "OnnxConfig",
    "OutputsConfig",
    "PostprocessConfig",
    "RuntimeConfig",
    "SegmentorConfig",
    "ServerConfig",
    "TilingConfig",
    "TritonConfig",
]

_YAML_PATH: contextvars.ContextVar[Path | None] = contextvars.ContextVar("segmentor_yaml_path", default=None)


class ModelConfig(_Section):
    """Which model to run and where its weights come from."""

    name: str = Field(
        "sam_v2",
        description="sam_v1 | sam_v2 (SAM 2.1 weights) | sam_v2.0 (original SAM 2 weights) | demo (packaged, toy)"
        " | sam_hq (SAM-HQ) | mobile_sam (MobileSAM) | edgetam (EdgeTAM) | sam3 (SAM 3 concepts: segment_text)",
    )
    variant: str | None = Field(None, description="architecture size; None = the model's default (vit_b / hiera_small)")
    checkpoint_path: str | None = Field(
        None,
        description="Meta checkpoint file, transformers directory or hub id; None = download Meta's file",
    )
    cache_dir: str | None = Field(None, description="where downloaded checkpoints live; None = the platform cache dir")
    download_base_url: str | None = Field(
        None, description="mirror serving Meta's checkpoint files by name; None = Meta's own URLs"
    )
    download_timeout_s: float = Field(60.0, gt=0, description="connect/read timeout of a checkpoint download")
    offline: bool = Field(False, description="never download; also implied by HF_HUB_OFFLINE=1")
    architecture: dict[str, Any] | None = Field(
        None,
        description="SamConfig/Sam2Config keyword overrides, deep-merged, e.g. {vision_config: {num_hidden_layers: 2}}",
    )
    hq_token_only: bool = Field(
        False,
        description="sam_hq only: masks from the HQ output token alone (false = SAM's mask plus the HQ correction,"
        " the authors' default)",
    )

    @model_validator(mode="before")
    @classmethod
    def _encoder_variant_alias(cls, data: Any) -> Any:
        return _merge_encoder_variant(data, "model")

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in MODEL_NAMES:
            raise ValueError(f"unknown model {value!r}; choose one of {', '.join(MODEL_NAMES)}")
        return value

    @model_validator(mode="after")
    def _hq_option_needs_hq_model(self) -> ModelConfig:
        if self.hq_token_only and self.name != "sam_hq":
            raise ValueError(f"model.hq_token_only applies to model sam_hq only, not {self.name!r}")
        return self


class RuntimeConfig(_Section):
    """How inference runs."""

    backend: Literal["torch", "onnx", "triton", "openvino"] = Field(
        "torch",
        description="torch | onnx (exported graphs, see the onnx section) | triton (a running Triton server)"
        " | openvino (the onnx export's image encoder run by OpenVINO on the CPU)",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N; auto picks CUDA when available")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto",
        description="auto | fp32 | fp16 | bf16: autocast dtype of the networks; auto picks the fastest one measured"
        " to keep masks at IoU >= 0.97 vs fp32 for this device, CPU and model (onnx: the export's precision)",
    )
    compile: bool = Field(False, description="torch.compile the image encoder and mask decoder")
    num_threads: int | None = Field(
        None, ge=1, description="intra-op threads of torch or ONNX Runtime; None = the runtime's default"
    )
    batch_size: int = Field(
        16, ge=1, description="most prompts per mask-decoder call; larger requests are split (bounds peak memory)"
    )
    max_batch_size: int = Field(
        1,
        ge=1,
        le=64,
        description="most images per image-encoder run across concurrent calls (embed, first call on an image);"
        " 1 = off, every call encodes alone. > 1 needs the torch backend (and server.max_concurrency >= this in"
        " the service); see docs/config.md for when it pays",
    )
    max_batch_wait_ms: float = Field(
        10.0,
        ge=0,
        le=10_000,
        description="with max_batch_size > 1: how long a batch waits for more images after its first one",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda or cuda:N")
        return value


class InputConfig(_Section):
    """Limits applied to every image before it reaches a model."""

    max_pixels: int = Field(100_000_000, gt=0, description="width × height limit, checked before decoding pixels")
    max_bytes: int = Field(50 * 1024 * 1024, gt=0, description="encoded image size limit")
    max_decode_bytes: int = Field(
        1 << 30, gt=0, description="largest memory estimate of one image decode, checked from the header"
    )
    allow_urls: bool = Field(False, description="accept http(s) URLs as image sources")
    url_timeout_s: float = Field(
        10.0, gt=0, description="connect/read timeout of an image URL; the SDK's whole-download deadline as well"
    )
    max_prompts: int = Field(256, ge=1, description="prompts per call")
    max_points_per_prompt: int = Field(64, ge=1, description="points in one prompt")


class OutputsConfig(_Section):
    """Default output formats and their options (per-call ``output_formats`` overrides ``formats``)."""

    formats: list[str] = Field(default_factory=lambda: ["numpy"], description="numpy | rle | png | polygons")
    rle_compressed: bool = Field(True, description="COCO compressed RLE string counts; False = list of run lengths")
    png_bit_depth: Literal[1, 8] = 1
    polygon_tolerance: float = Field(0.0, ge=0, description="shapely simplification tolerance in pixels")
    polygon_min_area: float = Field(0.0, ge=0, description="drop polygons and holes smaller than this (pixels²)")

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        """Refuse an unknown format when the config loads (``polygon`` for ``polygons``), not at the first call."""
        from .utils.masks import validate_formats

        return list(validate_formats(value))


class PostprocessConfig(_Section):
    """What happens to the logits after the decoder."""

    mask_threshold: float = Field(0.0, description="logit threshold; SAM's own is 0.0")
    min_hole_area: int = Field(0, ge=0, description="fill holes smaller than this many pixels; 0 = off")
    min_island_area: int = Field(0, ge=0, description="remove foreground islands smaller than this; 0 = off")
    min_score: float = Field(0.0, description="drop masks whose predicted IoU is below this; 0 = keep every mask")
    min_stability: float = Field(
        0.0, ge=0, le=1, description="drop masks whose stability score is below this; 0 = keep every mask"
    )
    stability_offset: float = Field(
        1.0, gt=0, description="stability score = IoU of the masks at mask_threshold +/- this logit offset"
    )


class TilingConfig(_Section):
    """Prompt-centred windows for large images (see perceptra_seg/utils/tiling.py)."""

    enabled: bool = Field(False, description="answer prompts on large images from full-resolution windows")
    min_image_side: int = Field(2048, ge=1, description="tiling applies when the image's long side exceeds this")
    window_size: int = Field(1024, ge=64, description="minimum window side in original pixels")
    margin: int = Field(128, ge=0, description="context kept around each prompt's box/points, in pixels")
    max_windows: int = Field(16, ge=1, description="distinct windows (encoder calls) allowed per request")


class CacheConfig(_Section):
    """The LRU of image embeddings."""

    enabled: bool = True
    max_bytes: int = Field(1024 * 1024 * 1024, ge=0, description="total size of cached embeddings")


class OnnxConfig(_Section):
    """The ONNX Runtime backend (``runtime.backend = "onnx"``); precision fp32/fp16 comes from ``runtime.precision``."""

    model_dir: str | None = Field(
        None,
        description="directory with manifest.json and the exported graphs; None = a per-model folder under "
        "<model.cache_dir or the platform cache dir>/onnx",
    )
    quantize: Literal["int8"] | None = Field(None, description="use INT8 dynamically quantised graphs")
    auto_export: bool = Field(True, description="export missing graphs on first use (needs the torch extra)")


class LoggingConfig(_Section):
    """Log output of the REST service."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = Field("json", description="one JSON object per line, or readable text")


class SegmentorConfig(BaseSettings):
    """The whole configuration; see the module docstring for precedence and environment variable names."""

    model_config = SettingsConfigDict(
        env_prefix="SEGMENTOR_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="forbid",
        validate_assignment=True,
    )

    model: ModelConfig = Field(default_factory=ModelConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    input: InputConfig = Field(default_factory=InputConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    postprocess: PostprocessConfig = Field(default_factory=PostprocessConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    onnx: OnnxConfig = Field(default_factory=OnnxConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    triton: TritonConfig = Field(default_factory=TritonConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # each source resolves the model.encoder_variant alias on its own, so precedence between sources holds
        return (
            _AliasSource(settings_cls, init_settings),
            _AliasSource(settings_cls, env_settings),
            _AliasSource(settings_cls, _YamlSource(settings_cls)),
        )

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> SegmentorConfig:
        """Build the effective configuration from an optional YAML file, the environment and ``overrides``.

        Raises:
            ConfigError: unreadable YAML, unknown keys, invalid values (the message names each offending key).
        """
        yaml_path = Path(path) if path is not None else None
        if yaml_path is not None and not yaml_path.is_file():
            raise ConfigError(f"config file not found: {yaml_path}")
        token = _YAML_PATH.set(yaml_path)
        try:
            return cls(**overrides)
        except ValidationError as exc:
            raise ConfigError(_describe(exc)) from None
        finally:
            _YAML_PATH.reset(token)

    @classmethod
    def resolve(
        cls, config: SegmentorConfig | str | Path | Mapping[str, Any] | None = None, **overrides: Any
    ) -> SegmentorConfig:
        """The one resolver every front end uses: ``config`` (object, YAML path, dict of sections or ``None``)
        plus ``sections={...}`` and keyword shortcuts (``model=``, ``device=``, ...); see
        :func:`perceptra_seg.config_overrides.resolve_config` for the precedence."""
        from .config_overrides import resolve_config

        return resolve_config(config, **overrides)


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by :meth:`SegmentorConfig.load` (lowest priority after the defaults)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = _YAML_PATH.get()
        if path is None:
            return {}
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections, got {type(data).__name__}")
        return data


class _AliasSource(PydanticBaseSettingsSource):
    """Wraps one settings source and resolves ``model.encoder_variant`` (the original README's name of
    ``model.variant``) within it, before the sources are merged."""

    def __init__(self, settings_cls: type[BaseSettings], inner: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._inner = inner

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        model = data.get("model")
        if isinstance(model, dict) and "encoder_variant" in model:
            try:
                data = {**data, "model": _merge_encoder_variant(model, "model")}
            except ValueError as exc:
                raise ConfigError(f"invalid configuration: {exc}") from None
        return data


def _merge_encoder_variant(data: Any, section: str) -> Any:
    """``{"encoder_variant": v}`` -> ``{"variant": v}``; both with different values is an error."""
    if not isinstance(data, dict) or "encoder_variant" not in data:
        return data
    merged = dict(data)
    alias = merged.pop("encoder_variant")
    current = merged.get("variant")
    if alias is not None and current is not None and current != alias:
        raise ValueError(
            f"{section}.encoder_variant ({alias!r}) and {section}.variant ({current!r}) disagree; "
            "encoder_variant is another name for variant: set one of them"
        )
    if alias is not None:
        merged["variant"] = alias
    return merged


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        location = ".".join(str(p) for p in error["loc"]) or "config"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{location}: {message}")
    return "invalid configuration: " + "; ".join(parts)
