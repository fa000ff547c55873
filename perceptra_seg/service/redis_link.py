"""The service's connection to Redis (``server.state = redis``): bounded calls, and what happens when Redis is down.

* Every call has ``server.redis_timeout_s`` to connect and to read its reply, and is never retried by the client
  (redis-py retries three times by default): a Redis that is stopped, or a black hole that drops packets, costs a
  request at most that long once.
* After a failed call Redis is not asked again for :data:`RETRY_S` seconds; calls meanwhile fail at once with
  :class:`RedisDown`. Callers fall back (encode the image locally, count the rate limit in this process) or answer
  503 ``state_unavailable``.
* An outage is logged once as a warning when it starts and once when Redis answers again, never per request.

``redis`` is imported lazily: without the ``redis`` extra, ``server.state = redis`` is a
:class:`~perceptra_seg.exceptions.ConfigError` naming the install line.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

__all__ = ["RETRY_S", "Outage", "RedisDown", "RedisLink", "SharedRateLimit", "import_redis", "redacted"]

logger = logging.getLogger("perceptra_seg.service")

T = TypeVar("T")

#: Seconds Redis is left alone after a failed call before the next call tries it again.
RETRY_S = 2.0


class RedisDown(Exception):
    """Redis did not answer (refused, timed out, or a recent failure is still within :data:`RETRY_S`)."""


def import_redis() -> Any:
    """The ``redis`` module, or a :class:`~perceptra_seg.exceptions.ConfigError` naming the ``redis`` extra."""
    try:
        import redis
    except ImportError as exc:
        from ..extras import missing_extra

        raise missing_extra("redis", exc) from exc
    return redis


def client_options(timeout_s: float) -> dict[str, Any]:
    """redis-py client options: ``timeout_s`` to connect and per reply, no retries (see the module docstring)."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, "retry": Retry(NoBackoff(), 0)}


def redacted(url: str) -> str:
    """``url`` without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


class Outage:
    """Whether a dependency is down: a short back-off after each failure and one log line per outage.

    Args:
        what: what fails (for the log), e.g. ``"Redis at redis://host:6379/0"``.
        consequence: what the service does meanwhile (for the log).
    """

    def __init__(self, what: str, consequence: str) -> None:
        self._what = what
        self._consequence = consequence
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._down = False

    @property
    def down(self) -> bool:
        """True while the last call failed (until one succeeds)."""
        return self._down

    def skip(self) -> bool:
        """True while a recent failure is within the back-off (do not call the dependency now)."""
        return time.monotonic() < self._retry_at

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._retry_at = time.monotonic() + RETRY_S
            started, self._down = not self._down, True
        if started:
            logger.warning("%s is unavailable (%s: %s); %s", self._what, type(exc).__name__, exc, self._consequence)

    def succeeded(self) -> None:
        with self._lock:
            ended, self._down = self._down, False
        if ended:
            logger.warning("%s is available again", self._what)


class RedisLink:
    """One redis-py client (with its connection pool) shared by the threads of a worker process.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL (``server.redis_url``).
        timeout_s: connect and reply timeout of each call (``server.redis_timeout_s``).
    """

    def __init__(self, url: str, *, timeout_s: float) -> None:
        redis = import_redis()
        self.url = url
        self.client = redis.Redis.from_url(url, **client_options(timeout_s))
        self._errors: tuple[type[BaseException], ...] = (redis.exceptions.RedisError, OSError)
        self.outage = Outage(
            f"Redis at {redacted(url)}",
            "image requests are encoded locally, image ids this worker does not hold answer 503 state_unavailable",
        )

    def call(self, operation: Callable[[Any], T]) -> T:
        """``operation(client)``.

        Raises:
            RedisDown: Redis failed (or failed less than :data:`RETRY_S` seconds ago).
        """
        if self.outage.skip():
            raise RedisDown("Redis failed moments ago")
        try:
            result = operation(self.client)
        except self._errors as exc:
            self.outage.failed(exc)
            raise RedisDown(str(exc)) from exc
        self.outage.succeeded()
        return result

    def close(self) -> None:
        """Close the pool's connections (a later call opens new ones)."""
        self.client.close()


class SharedRateLimit:
    """A moving-window rate limit counted in Redis (``limits``' Redis storage), so every worker shares one budget.

    Args:
        url: ``server.redis_url``.
        timeout_s: ``server.redis_timeout_s``.
    """

    def __init__(self, url: str, *, timeout_s: float) -> None:
        import_redis()
        from limits.storage import RedisStorage
        from limits.strategies import MovingWindowRateLimiter

        storage = RedisStorage(url, wrap_exceptions=True, **client_options(timeout_s))
        self._strategy = MovingWindowRateLimiter(storage)
        self.outage = Outage(
            f"Redis at {redacted(url)} (rate limits)", "each worker counts the rate limit in its own memory meanwhile"
        )

    def hit(self, item: Any, identity: str) -> tuple[bool, float] | None:
        """Count one request: ``(allowed, epoch seconds when the window frees a slot)``, or ``None`` when Redis is
        unavailable (the caller counts in memory instead)."""
        from limits.errors import StorageError

        if self.outage.skip():
            return None
        try:
            allowed = self._strategy.hit(item, identity)
            reset_at = 0.0 if allowed else self._strategy.get_window_stats(item, identity).reset_time
        except StorageError as exc:
            self.outage.failed(exc.storage_error)
            return None
        self.outage.succeeded()
        return allowed, reset_at
