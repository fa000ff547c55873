"""The serving sections of :class:`~perceptra_seg.config.SegmentorConfig`: ``server`` (the REST service) and
``triton`` (``serve-triton`` and the ``triton`` backend). Re-exported by :mod:`perceptra_seg.config`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .config_section import Section as _Section

__all__ = ["ServerConfig", "TritonConfig"]


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
    max_batch_images: int = Field(256, ge=1, description="images in one POST /v1/batch job; more is 413")
    max_batch_jobs: int = Field(2, ge=1, description="batch jobs one API key may have queued or running; then 429")
    batch_result_ttl_s: float = Field(
        3600.0, gt=0, description="a finished batch job (and its results) is deleted this long after it finished"
    )
    batch_workers: int = Field(
        1, ge=1, description="batch jobs one worker runs at the same time (each holds at most one inference slot)"
    )
    max_stored_batch_jobs: int = Field(
        16,
        ge=1,
        description="batch jobs one API key may hold in all, finished ones included (at least max_batch_jobs); "
        "then 429 until one is deleted or its results expire",
    )
    ray_min_replicas: int = Field(1, ge=1, description="serve --engine ray: replicas (the lower autoscaling bound)")
    ray_max_replicas: int | None = Field(
        None, ge=1, description="serve --engine ray: autoscale up to this many replicas; None = a fixed number"
    )

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

    @model_validator(mode="after")
    def _replica_bounds(self) -> ServerConfig:
        if self.ray_max_replicas is not None and self.ray_max_replicas < self.ray_min_replicas:
            raise ValueError(
                f"ray_max_replicas ({self.ray_max_replicas}) is below ray_min_replicas ({self.ray_min_replicas})"
            )
        return self

    @model_validator(mode="after")
    def _stored_batch_bound(self) -> ServerConfig:
        if self.max_stored_batch_jobs < self.max_batch_jobs:
            raise ValueError(
                f"max_stored_batch_jobs ({self.max_stored_batch_jobs}) is below max_batch_jobs "
                f"({self.max_batch_jobs}): every queued or running job is also a stored one"
            )
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
