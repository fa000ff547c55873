"""``server.state = redis``: public image ids and their embeddings shared by every worker and replica.

Keys (all under ``perceptra-seg:``):

* ``secret`` — the HMAC secret public ids are minted with, written once by whichever worker comes first
  (``SET NX``) and read by the others, so every worker gives the same key the same id for the same image.
* ``id:<scope>:<public id>`` — ``{"image_id", "width", "height"}`` of an embedded image for one API key scope
  (expires ``server.redis_embedding_ttl_s`` after the embed). An id of another scope is simply not there: 404.
* ``emb:<sha256 of the SDK image id>`` — the embedding (:mod:`perceptra_seg.service.embedding_codec`, float32 or
  float16, at most ``server.redis_max_embedding_bytes``), shared by every scope that embedded the same pixels with
  the same model; same expiry.

Each worker also remembers the ids it minted or fetched (an :class:`ImageIdRegistry` with the same expiry), so a
segment request on the worker that embedded costs no Redis round trip. Resolving an id this worker does not hold
reads Redis, checks that the embedding was made by this server's model (else 409 ``model_mismatch``) and caches it
in the Segmentor. When Redis is down: embedding still works (the id is then known to this worker only), an id this
worker holds still works, any other id answers 503 ``state_unavailable`` (send the image instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
from typing import TYPE_CHECKING, Any

from ..config import ServerConfig
from ..exceptions import ConfigError, NotFoundError
from ..models import EmbeddedImage
from .embedding_codec import StoredDtype, pack, packed_nbytes, unpack
from .errors import EmbeddingModelMismatchError, StateUnavailableError
from .image_ids import ImageIdRegistry, mint_public_id
from .redis_link import RETRY_S, RedisDown, RedisLink

if TYPE_CHECKING:
    from ..core import Segmentor

__all__ = ["PREFIX", "ImageIds", "SharedImageIds", "build_image_ids"]

PREFIX = "perceptra-seg:"
SECRET_KEY = PREFIX + "secret"


def _id_key(scope: str, public_id: str) -> str:
    return f"{PREFIX}id:{scope}:{public_id}"


def _embedding_key(image_id: str) -> str:
    return PREFIX + "emb:" + hashlib.sha256(image_id.encode()).hexdigest()


class SharedImageIds:
    """The shared registry; same ``public_id`` / ``resolve`` calls as :class:`ImageIdRegistry` (blocking: call
    ``resolve`` from a worker thread, it may read several megabytes from Redis).

    Args:
        link: the Redis connection.
        ttl_s: lifetime of an id and its embedding after ``embed``.
        max_bytes: largest embedding stored (``embed`` of a larger one is :class:`ConfigError`, 400).
        dtype: ``float32`` (exact) or ``float16`` (half the bytes) storage.
    """

    def __init__(self, link: RedisLink, *, ttl_s: int, max_bytes: int, dtype: StoredDtype) -> None:
        self.link = link
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._dtype: StoredDtype = dtype
        self._local = ImageIdRegistry(ttl_s=ttl_s)
        self._fallback_secret = secrets.token_bytes(32)
        self._segmentor: Segmentor | None = None

    def bind(self, segmentor: Segmentor) -> None:
        """Use ``segmentor``'s cache and model (once it is loaded)."""
        self._segmentor = segmentor

    def _require_segmentor(self) -> Segmentor:
        if self._segmentor is None:
            raise RuntimeError("SharedImageIds used before bind()")
        return self._segmentor

    def _secret(self) -> tuple[bytes, bool]:
        """``(secret, shared)``: the shared secret, or this process's own while Redis is unavailable.

        Read on every embed (one small round trip next to the embedding's upload) rather than once: a Redis restarted
        without its data gets a new secret from the first worker that embeds, and every worker uses that one.
        """

        def fetch(client: Any) -> bytes:
            pipe = client.pipeline(transaction=False)
            pipe.set(SECRET_KEY, secrets.token_bytes(32), nx=True)
            pipe.get(SECRET_KEY)
            value = pipe.execute()[1]
            assert isinstance(value, bytes)
            return value

        try:
            return self.link.call(fetch), True
        except RedisDown:
            return self._fallback_secret, False

    def public_id(self, scope: str, handle: EmbeddedImage) -> str:
        """Register the embedded ``handle`` under ``scope`` here and in Redis; return its public id.

        Raises:
            ConfigError: the embedding is larger than ``server.redis_max_embedding_bytes`` (400).
        """
        segmentor = self._require_segmentor()
        embedding = segmentor.embedded(handle)
        size = packed_nbytes(embedding, self._dtype)
        if size > self._max_bytes:
            raise ConfigError(
                f"this model's embedding takes {size} bytes as {self._dtype}, more than "
                f"server.redis_max_embedding_bytes = {self._max_bytes}; raise it or store float16 "
                "(server.redis_embedding_dtype)"
            )
        secret, shared = self._secret()
        public = mint_public_id(secret, scope, handle.image_id)
        self._local.remember(scope, public, handle)
        if shared:
            record = json.dumps({"image_id": handle.image_id, "width": handle.width, "height": handle.height})
            key = _embedding_key(handle.image_id)
            fingerprint = segmentor.backend.fingerprint

            def store(client: Any) -> None:
                # the same pixels stored already (under any key) only have their expiry moved, not another upload
                if not client.expire(key, self._ttl_s):
                    client.set(key, pack(embedding, fingerprint=fingerprint, dtype=self._dtype), ex=self._ttl_s)
                client.set(_id_key(scope, public), record, ex=self._ttl_s)

            with contextlib.suppress(RedisDown):  # the link logs the outage; the id works on this worker
                self.link.call(store)
        return public

    def resolve(self, scope: str, public_id: str) -> EmbeddedImage:
        """The handle ``public_id`` names under ``scope``, its embedding in this worker's cache.

        Raises:
            NotFoundError: unknown id, an id of another scope, or expired (404).
            EmbeddingModelMismatchError: embedded by another model (409).
            StateUnavailableError: Redis is down and this worker does not hold the id (503).
        """
        segmentor = self._require_segmentor()
        handle = self._local.find(scope, public_id)
        if handle is not None:
            try:
                segmentor.embedded(handle)
                return handle
            except NotFoundError:
                pass  # evicted here: fetch it again
        try:
            found = self.link.call(lambda client: self._fetch(client, scope, public_id))
        except RedisDown:
            raise StateUnavailableError(
                "the shared state (Redis) is unavailable and this worker does not hold this image_id; send the "
                "image itself instead of its image_id",
                retry_after=int(RETRY_S),
            ) from None
        if found is None:
            raise NotFoundError(f"image_id {public_id!r} not found; embed the image again")
        record, data, ttl_ms = found
        stored = unpack(data)
        fingerprint = segmentor.backend.fingerprint
        if stored.fingerprint != fingerprint:
            raise EmbeddingModelMismatchError(
                f"image_id {public_id!r} was embedded by another model ({stored.fingerprint}) than this server runs "
                f"({fingerprint}); embed the image again"
            )
        handle = EmbeddedImage(image_id=record["image_id"], width=record["width"], height=record["height"])
        segmentor.adopt(handle.image_id, stored.embedding(getattr(segmentor.backend, "device", None)))
        self._local.remember(scope, public_id, handle, ttl_s=ttl_ms / 1000.0)
        return handle

    @staticmethod
    def _fetch(client: Any, scope: str, public_id: str) -> tuple[dict[str, Any], bytes, int] | None:
        """``(record, embedding bytes, milliseconds left)`` of an id, or ``None`` when it is unknown or expired."""
        pipe = client.pipeline(transaction=False)
        pipe.get(_id_key(scope, public_id))
        pipe.pttl(_id_key(scope, public_id))
        raw, ttl_ms = pipe.execute()
        if raw is None or ttl_ms <= 0:
            return None
        record = json.loads(raw)
        data = client.get(_embedding_key(record["image_id"]))
        if data is None:
            return None
        return record, data, int(ttl_ms)

    def __len__(self) -> int:
        return len(self._local)

    def close(self) -> None:
        self.link.close()


#: What the service keeps public image ids in: this process's registry, or the shared one.
ImageIds = ImageIdRegistry | SharedImageIds


def build_image_ids(server: ServerConfig) -> ImageIds:
    """The registry ``server.state`` asks for (``redis``: connects lazily, at the first call)."""
    if server.state == "memory":
        return ImageIdRegistry()
    link = RedisLink(server.redis_url, timeout_s=server.redis_timeout_s)
    return SharedImageIds(
        link,
        ttl_s=server.redis_embedding_ttl_s,
        max_bytes=server.redis_max_embedding_bytes,
        dtype=server.redis_embedding_dtype,
    )
