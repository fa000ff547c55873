"""The REST service on Ray Serve: the same FastAPI app (:func:`perceptra_seg.service.create_app`) as replicas of one
deployment behind Ray Serve's HTTP proxy (``segmentor-cli serve --engine ray``).

Each replica is a Ray actor that builds the app from the effective configuration of the command (passed by value,
so a replica on another machine needs no config file) and runs its lifespan: it loads the model, answers
``/v1/readyz`` once warm, and serves every route exactly as one uvicorn process does. Every answer carries
``X-Segmentor-Replica`` (the replica's Ray Serve id), so logs and clients can tell replicas apart. A replica whose
model failed to load fails Ray Serve's health check and is replaced (:func:`replica_health`). With
``server.state: redis`` the replicas share image ids, embeddings and rate limits through Redis
(:mod:`perceptra_seg.service.shared_ids`); with ``state: memory`` each replica has its own.

How many replicas (:func:`deployment_options`): ``--replicas N`` fixes the number; otherwise, with
``server.ray_max_replicas`` set, Ray Serve autoscales between ``server.ray_min_replicas`` and it, aiming at
``server.max_concurrency`` requests in flight per replica; otherwise ``--gpus-per-replica G`` gives one replica per
``G`` GPUs of the cluster, and without GPUs there are ``server.ray_min_replicas``. Each replica reserves
``--cpus-per-replica`` CPUs and ``--gpus-per-replica`` GPUs (Ray sets ``CUDA_VISIBLE_DEVICES`` per actor, so
``runtime.device: auto`` or ``cuda`` picks the replica's own GPU).

Ray is an optional extra (``[ray]``); this module imports it only when a deployment is built.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .config import SegmentorConfig, ServerConfig
from .exceptions import ConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "APP_NAME",
    "REPLICA_HEADER",
    "build_application",
    "deployment_options",
    "import_ray",
    "replica_health",
    "serve_on_ray",
]

#: Name of the Ray Serve application (and of its one deployment).
APP_NAME = "perceptra-seg"
#: Response header naming the replica that answered.
REPLICA_HEADER = "X-Segmentor-Replica"
#: Requests a replica takes beyond its inference capacity: health checks, batch polls and metrics, which the app
#: answers without a slot. Past ``max_concurrency + max_queue + this``, Ray Serve holds requests back.
_UNMETERED_REQUESTS = 8


def import_ray() -> tuple[Any, Any]:
    """``(ray, ray.serve)``, or a :class:`~perceptra_seg.exceptions.ConfigError` with the ``[ray]`` install line."""
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        from .extras import missing_extra

        raise missing_extra("ray", exc) from None
    return ray, serve


def deployment_options(
    server: ServerConfig,
    *,
    replicas: int | None = None,
    gpus_per_replica: float = 0.0,
    cpus_per_replica: float = 1.0,
    cluster_gpus: float = 0.0,
) -> dict[str, Any]:
    """The Ray Serve deployment options (``Deployment.options(**...)``) for these settings.

    Args:
        server: ``max_concurrency``, ``max_queue``, ``ray_min_replicas``, ``ray_max_replicas``.
        replicas: a fixed number of replicas (``--replicas``), or ``None`` (see the module docstring).
        gpus_per_replica: GPUs each replica reserves (fractions share a GPU).
        cpus_per_replica: CPUs each replica reserves.
        cluster_gpus: GPUs in the cluster (for one replica per ``gpus_per_replica`` GPUs).

    Raises:
        ConfigError: GPUs per replica asked for, but the cluster has fewer GPUs than one replica needs.
    """
    actor: dict[str, float] = {"num_cpus": cpus_per_replica}
    if gpus_per_replica > 0:
        actor["num_gpus"] = gpus_per_replica
    options: dict[str, Any] = {
        "name": APP_NAME,
        "ray_actor_options": actor,
        "max_ongoing_requests": server.max_concurrency + server.max_queue + _UNMETERED_REQUESTS,
    }
    if replicas is not None:
        options["num_replicas"] = replicas
    elif server.ray_max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": server.ray_min_replicas,
            "max_replicas": server.ray_max_replicas,
            "target_ongoing_requests": server.max_concurrency,
        }
    elif gpus_per_replica > 0:
        count = int(cluster_gpus // gpus_per_replica)
        if count < 1:
            raise ConfigError(
                f"--gpus-per-replica {gpus_per_replica:g}: the Ray cluster has {cluster_gpus:g} GPUs, fewer than one "
                "replica needs"
            )
        options["num_replicas"] = count
    else:
        options["num_replicas"] = server.ray_min_replicas
    return options


def _app_builder(config: SegmentorConfig) -> Callable[[], ASGIApp]:
    """A function that builds the app inside a replica (Ray Serve calls it there; it is pickled with ``config``)."""

    def build() -> ASGIApp:
        from .service import create_app

        app = create_app(config)
        app.add_middleware(_ReplicaHeader, name=_replica_name())
        return app

    return build


def _replica_name() -> str:
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_tag)
    except Exception:  # outside a replica (a plain import of the app): the process id is all there is
        return f"pid-{os.getpid()}"


class _ReplicaHeader:
    """ASGI middleware adding :data:`REPLICA_HEADER` to every HTTP response."""

    def __init__(self, app: ASGIApp, *, name: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.lower().encode("latin-1"), name.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, tagged)


def replica_health(app: Any) -> None:
    """Ray Serve's health check of a replica: raise when its model failed to load, so that Ray replaces the replica
    instead of routing requests to one that answers 503 ``model_load_error`` (loading and ready both pass)."""
    state = getattr(getattr(app, "state", None), "service", None)
    error = getattr(state, "load_error", None)
    if error is not None:
        raise RuntimeError(f"the model failed to load: {type(error).__name__}: {error}")


def build_application(config: SegmentorConfig, options: dict[str, Any]) -> Any:
    """The Ray Serve application: one ingress deployment running the REST app, with ``options``."""
    _, serve = import_ray()

    @serve.ingress(_app_builder(config))
    class SegmentorReplica:
        """One replica: the app is built in the replica by the builder; Ray calls ``check_health`` periodically."""

        app: Any  # set by Ray Serve's ingress wrapper

        def check_health(self) -> None:
            replica_health(self.app)

    return serve.deployment(SegmentorReplica).options(**options).bind()


def serve_on_ray(
    config: SegmentorConfig,
    *,
    address: str | None = None,
    replicas: int | None = None,
    gpus_per_replica: float = 0.0,
    cpus_per_replica: float = 1.0,
    stop: threading.Event | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Deploy the service on Ray Serve and block until ``stop`` is set, SIGTERM or Ctrl-C; then take it down.

    ``on_ready`` receives one line saying where the service listens once the replicas run.

    ``address`` is a running cluster (``auto`` or ``HOST:PORT``); ``None`` starts a local Ray instance owned by this
    call (stopped with it). The proxy listens on ``server.host:server.port``. On the way out the application is
    deleted (a cluster that was already running keeps running) and a local instance is shut down.
    """
    ray, serve = import_ray()
    own_cluster = address is None
    ray.init(
        address="local" if own_cluster else address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
    )
    stop = stop or threading.Event()
    previous = _on_signals(stop)
    try:
        options = deployment_options(
            config.server,
            replicas=replicas,
            gpus_per_replica=gpus_per_replica,
            cpus_per_replica=cpus_per_replica,
            cluster_gpus=float(ray.cluster_resources().get("GPU", 0.0)),
        )
        http = {
            "host": config.server.host,
            "port": config.server.port,
            "keep_alive_timeout_s": config.server.keep_alive_timeout_s,
        }
        # The app logs every request itself (logging section): Ray Serve's own access log would repeat each one.
        quiet = {"log_level": "WARNING", "enable_access_log": False}
        serve.start(http_options=http, logging_config=quiet)
        serve.run(build_application(config, options), name=APP_NAME, route_prefix="/", logging_config=quiet)
        where = f"http://{config.server.host}:{config.server.port}"
        if on_ready is not None:
            on_ready(f"perceptra-seg is served by Ray Serve at {where} ({_describe(options)}); Ctrl-C stops it")
        while not stop.wait(0.5):
            pass
    finally:
        _restore_signals(previous)
        try:
            if own_cluster:
                serve.shutdown()
            else:
                serve.delete(APP_NAME)
        finally:
            ray.shutdown()


def _describe(options: dict[str, Any]) -> str:
    if "autoscaling_config" in options:
        bounds = options["autoscaling_config"]
        return f"autoscaling {bounds['min_replicas']}-{bounds['max_replicas']} replicas"
    return f"{options['num_replicas']} replicas"


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    """Make SIGTERM and SIGINT set ``stop`` (main thread only); the previous handlers, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous[number] = signal.signal(number, lambda *_: stop.set())
    return previous


def _restore_signals(previous: dict[int, Any]) -> None:
    for number, handler in previous.items():
        signal.signal(number, handler)
