"""The app factory and its lifespan.

``create_app(config)`` builds a FastAPI app and does nothing slow: no model is loaded and no thread is started
until the server runs the lifespan. The lifespan then

1. installs the structured log handler (:mod:`perceptra_seg.service.logging`);
2. starts the bounded inference runner and, when ``input.allow_urls`` is on, the SSRF-guarded URL client and the
   bounded URL fetcher (downloads happen before admission, outside the inference slots);
3. loads the model **in the background** — the app answers ``/v1/healthz`` at once, ``/v1/readyz`` says 503 until
   the model is loaded and one warm-up inference ran, and inference calls meanwhile get 503 with ``Retry-After``;
4. on shutdown waits for a load still in progress and for inference calls still running, closes the Segmentor
   (releasing the model) and the URL client, and removes the log handler.

With ``server.state = redis`` image ids, their embeddings and the rate-limit windows live in Redis and are shared
by every worker (:mod:`perceptra_seg.service.shared_ids`, :mod:`perceptra_seg.service.redis_link`); Redis is
connected lazily, so the app starts (and answers requests with an image) while Redis is down.

Start-up refuses an invalid configuration (:class:`~perceptra_seg.exceptions.ConfigError`): a bad
``server.rate_limit``, an empty API key, or CORS ``*`` with credentials (checked by the config itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from .. import __version__
from ..backends import Backend
from ..config import SegmentorConfig
from ..core import Segmentor
from .batch_jobs import BatchStore
from .batch_routes import build_batch_router
from .batch_shared import SharedBatchRecords
from .bodies import install_named_enums
from .context import RequestContextMiddleware
from .docs import install_docs
from .errors import install_error_handlers
from .inference import InferenceService, service_input_policy
from .limits import BodySizeLimitMiddleware, InferenceRunner
from .logging import configure_logging
from .metrics import ServiceMetrics
from .routes import build_router
from .security import Authenticator, RateLimiter, principal_dependency
from .shared_ids import SharedImageIds, build_image_ids
from .state import ServiceState
from .ui import install_ui
from .url_fetch import UrlFetcher
from .url_guard import guarded_client
from .video_store import VideoStore
from .videos import UPLOAD_PATH, build_video_router, upload_limit
from .ws import install_ws

__all__ = ["create_app"]

logger = logging.getLogger("perceptra_seg.service")


def create_app(
    config: SegmentorConfig | str | Path | None = None,
    *,
    backend: Backend | None = None,
    http_client: httpx.Client | None = None,
) -> FastAPI:
    """Build the REST app.

    Args:
        config: a :class:`SegmentorConfig`, a YAML path, or ``None`` (defaults + ``SEGMENTOR_*`` environment).
        backend: a ready backend to serve instead of loading ``config.model`` (the caller keeps ownership: it is
            not closed on shutdown). Tests pass fakes here.
        http_client: client for image URLs instead of the SSRF-guarded default (the caller keeps ownership).

    Raises:
        ConfigError: invalid configuration.
    """
    cfg = SegmentorConfig.resolve(config)
    server = cfg.server
    metrics = ServiceMetrics()
    state = ServiceState(config=cfg, metrics=metrics, ids=build_image_ids(server))
    videos = VideoStore(max_per_scope=server.max_video_sessions, ttl_s=server.video_ttl_s)
    state.videos = videos
    shared_batches = None
    if isinstance(state.ids, SharedImageIds):
        shared_batches = SharedBatchRecords(
            state.ids.link,
            ttl_s=server.batch_result_ttl_s,
            max_per_scope=server.max_batch_jobs,
            max_stored_per_scope=server.max_stored_batch_jobs,
        )
    batches = BatchStore(
        max_per_scope=server.max_batch_jobs,
        max_stored_per_scope=server.max_stored_batch_jobs,
        ttl_s=server.batch_result_ttl_s,
        workers=server.batch_workers,
        shared=shared_batches,
    )
    state.batches = batches
    authenticator = Authenticator(server.api_keys)
    limiter = None
    if server.rate_limit:
        shared = server.redis_url if server.state == "redis" else None
        limiter = RateLimiter(server.rate_limit, redis_url=shared, redis_timeout_s=server.redis_timeout_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        restore_logging = configure_logging(cfg.logging)
        state.load_error = None
        if not authenticator.enabled:
            logger.warning("no API keys configured (server.api_keys): the API is open to every client")
        if cfg.runtime.max_batch_size > server.max_concurrency:
            logger.warning(
                "runtime.max_batch_size %d is above server.max_concurrency %d: an encoder batch holds at most %d"
                " images (one per running call); raise server.max_concurrency to fill it",
                cfg.runtime.max_batch_size,
                server.max_concurrency,
                server.max_concurrency,
            )
        state.runner = InferenceRunner(
            max_concurrency=server.max_concurrency,
            max_queue=server.max_queue,
            timeout_s=server.request_timeout_s,
            metrics=metrics,
        )
        own_client = http_client is None and cfg.input.allow_urls
        client = http_client
        if own_client:
            client = guarded_client(timeout_s=cfg.input.url_timeout_s, allowed_networks=server.url_allowed_networks)
        state.fetcher = UrlFetcher(client, cfg) if client is not None and cfg.input.allow_urls else None
        loading = asyncio.create_task(_load(state, cfg, backend))
        try:
            yield
        finally:
            await asyncio.gather(loading, return_exceptions=True)
            await batches.close_all()  # before the runner stops: a job's running image is cancelled, not failed
            if state.fetcher is not None:
                await asyncio.to_thread(state.fetcher.shutdown)
                state.fetcher = None
            await asyncio.to_thread(state.runner.shutdown)  # the model is closed only after its last call
            await asyncio.to_thread(videos.close_all)
            service, state.service = state.service, None
            metrics.model_loaded.set(0)
            if service is not None and backend is None:  # a backend passed in stays its owner's
                service.segmentor.close()
            if own_client and client is not None:
                client.close()
            if isinstance(state.ids, SharedImageIds):
                state.ids.close()
            restore_logging()

    docs = server.docs_enabled
    app = FastAPI(
        title="perceptra-seg",
        version=__version__,
        description="Segment Anything (SAM 1, SAM 2 / 2.1) as a REST service.",
        lifespan=lifespan,
        docs_url=None,  # /docs is served from packaged assets (install_docs), never from a CDN
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    if docs:
        install_docs(app)
    app.state.service = state
    install_error_handlers(app)
    guard = principal_dependency(authenticator, limiter)
    auth_only = principal_dependency(authenticator, None) if authenticator.enabled else None
    app.include_router(build_router(server, guard, auth_only))
    app.include_router(build_video_router(server, guard))
    app.include_router(build_batch_router(server, guard))
    install_named_enums(app)
    install_ws(app, authenticator, limiter)
    install_ui(app)
    # Added innermost first: RequestContext wraps CORS wraps the body limit wraps the routes.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=server.max_body_bytes,
        body_timeout_s=server.body_timeout_s,
        path_limits={UPLOAD_PATH: upload_limit(server)},
    )
    if server.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=server.cors_origins,
            allow_credentials=server.cors_allow_credentials,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "Retry-After"],
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app


async def _load(state: ServiceState, cfg: SegmentorConfig, backend: Backend | None) -> None:
    """Load the model and warm it up on a worker thread, then publish the pipeline (or the load error)."""

    def load() -> Segmentor:
        segmentor = Segmentor(cfg, backend=backend, input_policy=service_input_policy(cfg))
        try:
            seconds = segmentor.warmup()
        except BaseException:
            if backend is None:  # a backend passed in stays its owner's
                segmentor.close()
            raise
        logger.info("model ready", extra={"model_info": segmentor.backend.info(), "warmup_s": round(seconds, 3)})
        return segmentor

    try:
        segmentor = await asyncio.to_thread(load)
    except Exception as exc:
        state.load_error = exc
        logger.error("model failed to load: %s: %s", type(exc).__name__, exc)
        return
    state.metrics.bind_cache(segmentor.cache_stats)
    if isinstance(state.ids, SharedImageIds):
        state.ids.bind(segmentor)
    state.service = InferenceService(segmentor, config=cfg, ids=state.ids)
    state.metrics.model_loaded.set(1)
