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
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

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


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which model to run and where its weights come from."""

    name: str = Field(
        "sam_v2",
        description="sam_v1 | sam_v2 (SAM 2.1 weights) | sam_v2.0 (original SAM 2 weights) | demo (packaged, toy)"
        " | sam_hq (SAM-HQ) | mobile_sam (MobileSAM)",
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

    backend: Literal["torch", "onnx", "triton"] = Field(
        "torch", description="torch | onnx (exported graphs, see the onnx section) | triton (a running Triton server)"
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


class ServerConfig(_Section):
    """The REST service (``perceptra_seg.service``): network, security and admission limits."""

    host: str = Field("127.0.0.1", description="interface uvicorn binds to")
    port: int = Field(8000, ge=0, le=65535, description="TCP port uvicorn binds to")
    api_keys: list[SecretStr] = Field(
        default_factory=list,
        description="accepted API keys (Authorization: Bearer or X-API-Key); empty = no authentication",
    )
    public_health: bool = Field(True, description="/v1/healthz and /v1/readyz answer without an API key")
    public_metrics: bool = Field(False, description="/metrics answers without an API key")
    rate_limit: str | None = Field(None, description="per-key request limit such as '60/minute'; None = unlimited")
    max_concurrency: int = Field(1, ge=1, description="inference calls running at the same time")
    max_queue: int = Field(32, ge=0, description="requests waiting for a slot; beyond that 503 + Retry-After")
    request_timeout_s: float = Field(60.0, gt=0, description="queue wait + inference deadline; then 504")
    max_body_bytes: int = Field(72 * 1024 * 1024, gt=0, description="request body limit (413), checked while reading")
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins; empty = no CORS")
    cors_allow_credentials: bool = Field(False, description="CORS credentials; refused with the '*' origin")
    docs_enabled: bool = Field(True, description="serve /docs (packaged Swagger UI, works offline) and /openapi.json")
    url_allowed_networks: list[str] = Field(
        default_factory=list,
        description="CIDR ranges image URLs may resolve to although not public (e.g. an internal image store)",
    )
    url_fetch_timeout_s: float = Field(
        30.0, gt=0, description="total deadline of one image URL download (input.url_timeout_s is per read); 504"
    )
    max_url_fetches: int = Field(4, ge=1, description="image URL downloads at the same time; beyond that 503")
    max_prompts: int = Field(256, ge=1, description="prompts (objects) per request, checked while parsing; 413")
    max_points_per_prompt: int = Field(64, ge=1, description="points in one prompt, checked while parsing; 413")
    max_mask_outputs: int = Field(
        1024, ge=1, description="prompts x masks per prompt (3 with multimask) x output formats (at least 1); 413"
    )
    max_auto_points: int = Field(
        16384, ge=1, description="grid points of one /v1/segment/auto request, summed over every crop; 413"
    )
    header_timeout_s: float = Field(10.0, gt=0, description="time a client has to send a request's headers")
    body_timeout_s: float = Field(60.0, gt=0, description="time a client has to send a request's whole body; 408")
    keep_alive_timeout_s: int = Field(5, ge=1, description="idle keep-alive connections are closed after this")
    max_connections: int = Field(
        256, ge=1, description="open connections plus requests in progress; beyond that uvicorn answers 503"
    )
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="request line plus headers; larger is 400")
    ws_idle_timeout_s: float = Field(
        300.0, gt=0, description="a /v1/ws session that sends nothing (and waits for nothing) this long is closed"
    )
    ws_max_objects: int = Field(64, ge=1, description="objects one /v1/ws session may hold masks for at once")
    ws_max_undo: int = Field(32, ge=0, description="undo steps one /v1/ws session remembers (0 = no undo)")
    state: Literal["memory", "redis"] = Field(
        "memory",
        description="where image ids, embeddings and rate-limit counters live: this process, or Redis (shared by "
        "every worker and replica; needs the 'redis' extra)",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the Redis of server.state = redis")
    redis_timeout_s: float = Field(
        1.0, gt=0, description="connect and reply timeout of one Redis call; past it Redis counts as unavailable"
    )
    redis_embedding_ttl_s: int = Field(
        3600, ge=1, description="server.state = redis: image ids and their embeddings expire this long after embed"
    )
    redis_max_embedding_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="server.state = redis: largest stored embedding; a larger one is 400"
    )
    redis_embedding_dtype: Literal["float32", "float16"] = Field(
        "float32", description="server.state = redis: embeddings stored exactly, or in half the bytes (float16)"
    )
    max_video_bytes: int = Field(512 * 1024 * 1024, gt=0, description="one uploaded video file (POST /v1/videos); 413")
    max_video_frames: int = Field(10_000, ge=1, description="frames of one uploaded video; 413")
    max_video_pixels: int = Field(3840 * 2160, ge=1, description="width x height of an uploaded video's frames; 413")
    max_video_sessions: int = Field(4, ge=1, description="videos one API key may hold at once; then 429")
    max_video_objects: int = Field(16, ge=1, description="objects tracked in one video; a prompt for one more is 413")
    video_ttl_s: float = Field(600.0, gt=0, description="a video unused this long is deleted with its session")
    video_timeout_s: float = Field(1800.0, gt=0, description="deadline of one /v1/videos/{id}/propagate call; 504")

    @field_validator("url_allowed_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"invalid network {item!r}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> ServerConfig:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("cors_allow_credentials cannot be combined with the '*' origin; list the origins")
        return self

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"redis_url {value!r} must start with redis://, rediss:// or unix://")
        return value


class TritonConfig(_Section):
    """Triton Inference Server: what ``serve-triton`` binds, and where ``runtime.backend: triton`` connects."""

    host: str = Field("127.0.0.1", description="serve-triton: interface of its HTTP, gRPC and metrics endpoints")
    http_port: int = Field(8100, ge=1, le=65535, description="serve-triton: HTTP/REST port (KServe v2 protocol)")
    grpc_port: int = Field(8101, ge=1, le=65535, description="serve-triton: gRPC port")
    metrics_port: int = Field(8102, ge=1, le=65535, description="serve-triton: Prometheus metrics port (/metrics)")
    max_batch_size: int = Field(8, ge=1, description="serve-triton: most images in one encoder execution")
    max_queue_delay_ms: float = Field(
        5.0, ge=0, description="serve-triton: how long the encoder's dynamic batcher waits to fill a batch"
    )
    url: str | None = Field(
        None, description="backend triton: server as host:port; None = host and http_port / grpc_port (per protocol)"
    )
    protocol: Literal["http", "grpc"] = Field("http", description="backend triton: http | grpc")
    timeout_s: float = Field(30.0, gt=0, description="backend triton: connect and per-call deadline of each request")

    @field_validator("url")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None and ("://" in value or ":" not in value):
            raise ValueError(f"url {value!r} must be host:port without a scheme, e.g. 127.0.0.1:8100")
        return value

    def client_url(self) -> str:
        """The ``host:port`` a client connects to: ``url``, else ``host`` with the port of ``protocol``."""
        if self.url is not None:
            return self.url
        return f"{self.host}:{self.http_port if self.protocol == 'http' else self.grpc_port}"


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
