"""API-key authentication and per-key rate limiting, as FastAPI dependencies.

* Keys come from ``server.api_keys`` (``SEGMENTOR_SERVER_API_KEYS='["k1","k2"]'``). A client sends one as
  ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. No key → 401 ``unauthorized`` (with
  ``WWW-Authenticate: Bearer``); a wrong key → 403 ``forbidden``. The presented key is hashed and compared with
  every configured key's hash by :func:`hmac.compare_digest` (no early exit, equal lengths), so timing says nothing
  about which bytes matched. With no keys configured, authentication is off.
* A key is identified in logs, rate limits and image-id scopes by ``key_id``, the first 16 hex digits of its
  SHA-256 — never by the key itself.
* ``server.rate_limit`` (e.g. ``"60/minute"``, ``"10/second"``, any string :func:`limits.parse` reads) is a moving
  window per key (per client address when authentication is off); over it → 429 ``rate_limited`` with
  ``Retry-After`` = seconds until a request is allowed again. With ``server.state = redis`` the windows are counted in
  Redis, so every worker and replica shares one budget per key; while Redis is unavailable each worker counts in its
  own memory (a warning is logged once per outage).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from ..exceptions import AuthError, ConfigError
from .errors import ForbiddenError, RateLimitedError
from .request_context import current_context

if TYPE_CHECKING:
    from .redis_link import SharedRateLimit

__all__ = ["Authenticator", "Principal", "RateLimiter", "principal_dependency"]

ANONYMOUS_SCOPE = "anonymous"

_bearer = HTTPBearer(auto_error=False, description="API key as a bearer token")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API key")


@dataclass(frozen=True)
class Principal:
    """Who is calling.

    Attributes:
        key_id: SHA-256 prefix of the API key, or ``None`` when authentication is off.
        rate_identity: the bucket of the rate limiter (``key:<key_id>`` or ``ip:<address>``).
    """

    key_id: str | None
    rate_identity: str

    @property
    def scope(self) -> str:
        """Image ids created under one scope are invisible to every other scope."""
        return self.key_id or ANONYMOUS_SCOPE


class Authenticator:
    """Checks presented keys against the configured ones in constant time."""

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        self._digests = [hashlib.sha256(k.get_secret_value().encode()).digest() for k in keys]
        if any(not k.get_secret_value() for k in keys):
            raise ConfigError("server.api_keys: empty API keys are not allowed")

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def key_id(self, presented: str | None) -> str:
        """The ``key_id`` of a valid key.

        Raises:
            AuthError: no key presented (401).
            ForbiddenError: the key is not one of the configured keys (403).
        """
        if not presented:
            raise AuthError("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        digest = hashlib.sha256(presented.encode()).digest()
        matched = False
        for known in self._digests:
            matched |= hmac.compare_digest(known, digest)
        if not matched:
            raise ForbiddenError("invalid API key")
        return digest.hex()[:16]


class RateLimiter:
    """Moving-window request limit per identity: in memory (one bucket set per worker process), or in Redis.

    Args:
        spec: ``server.rate_limit``.
        redis_url: count in this Redis (``server.state = redis``), falling back to memory while it is unavailable.
        redis_timeout_s: ``server.redis_timeout_s``.
    """

    def __init__(self, spec: str, *, redis_url: str | None = None, redis_timeout_s: float = 1.0) -> None:
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        try:
            self.item = parse(spec)
        except ValueError as exc:
            raise ConfigError(f"server.rate_limit: {exc} (use e.g. '60/minute' or '5/second')") from None
        self._strategy = MovingWindowRateLimiter(MemoryStorage())
        self._shared: SharedRateLimit | None = None
        if redis_url is not None:
            from .redis_link import SharedRateLimit

            self._shared = SharedRateLimit(redis_url, timeout_s=redis_timeout_s)

    def check(self, identity: str) -> None:
        """Count one request for ``identity``.

        Raises:
            RateLimitedError: over the limit; ``retry_after`` is the wait in whole seconds (at least 1).
        """
        shared = self._shared.hit(self.item, identity) if self._shared is not None else None
        if shared is not None:
            allowed, reset_at = shared
        else:
            allowed = self._strategy.hit(self.item, identity)
            reset_at = 0.0 if allowed else self._strategy.get_window_stats(self.item, identity).reset_time
        if allowed:
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))
        raise RateLimitedError(f"rate limit of {self.item} exceeded", retry_after=retry_after)


def principal_dependency(authenticator: Authenticator, limiter: RateLimiter | None) -> Callable[..., Principal]:
    """A FastAPI dependency that authenticates (when keys are configured) and applies the rate limit.

    With authentication off the dependency declares no security scheme, so the OpenAPI document does not ask
    for one either.
    """

    def finish(request: Request, key_id: str | None) -> Principal:
        client = request.client.host if request.client else "unknown"
        principal = Principal(key_id=key_id, rate_identity=f"key:{key_id}" if key_id else f"ip:{client}")
        context = current_context()
        if context is not None:
            context.key_id = key_id
        if limiter is not None:
            limiter.check(principal.rate_identity)
        return principal

    if not authenticator.enabled:

        def anonymous(request: Request) -> Principal:
            return finish(request, None)

        return anonymous

    def authenticated(
        request: Request,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        api_key: Annotated[str | None, Depends(_api_key_header)],
    ) -> Principal:
        presented = bearer.credentials if bearer is not None else api_key
        return finish(request, authenticator.key_id(presented))

    return authenticated
