"""Public ``image_id``s for embedded images, scoped to the API key that created them.

The SDK's :class:`~perceptra_seg.EmbeddedImage` id is a cache key (model fingerprint + pixel digest); exposing it
would let one client test whether another client sent a given image. The service instead hands out
``HMAC-SHA256(process secret, scope ‖ internal id)`` (32 hex digits) and keeps a bounded LRU map
``(scope, public id) → EmbeddedImage``. The same key embedding the same image gets the same id back; another key
gets a different id, and looking up an id under the wrong scope is exactly as unknown as a made-up id (404).

The map is bounded by entry count (:data:`MAX_ENTRIES`), and by age when built with ``ttl_s``; the embeddings
themselves live in the Segmentor's byte-bounded cache, and a handle whose embedding was evicted answers 404 from the
SDK. With ``server.state = redis`` the same registry is each worker's local memo of the shared ids (see
:mod:`perceptra_seg.service.shared_ids`), minted with the secret shared through Redis.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from collections import OrderedDict

from ..exceptions import NotFoundError
from ..models import EmbeddedImage

__all__ = ["MAX_ENTRIES", "ImageIdRegistry", "mint_public_id"]

#: Handles remembered per process (a few hundred bytes each).
MAX_ENTRIES = 65_536


def mint_public_id(secret: bytes, scope: str, image_id: str) -> str:
    """``HMAC-SHA256(secret, scope ‖ image_id)`` as 32 hex digits."""
    return hmac.new(secret, f"{scope}\x00{image_id}".encode(), hashlib.sha256).hexdigest()[:32]


class ImageIdRegistry:
    """Thread-safe, bounded ``(scope, public id) → EmbeddedImage`` map.

    Args:
        max_entries: handles kept (least recently used dropped first).
        ttl_s: forget a handle this long after it was registered (``None``: only when dropped for room).
    """

    def __init__(self, max_entries: int = MAX_ENTRIES, *, ttl_s: float | None = None) -> None:
        self._secret = secrets.token_bytes(32)
        self._max_entries = max_entries
        self._ttl_s = ttl_s
        self._entries: OrderedDict[tuple[str, str], tuple[EmbeddedImage, float]] = OrderedDict()
        self._lock = threading.Lock()

    def public_id(self, scope: str, handle: EmbeddedImage) -> str:
        """Register ``handle`` under ``scope`` and return its public id."""
        public = mint_public_id(self._secret, scope, handle.image_id)
        self.remember(scope, public, handle)
        return public

    def remember(self, scope: str, public_id: str, handle: EmbeddedImage, *, ttl_s: float | None = None) -> None:
        """Register ``handle`` as ``public_id`` under ``scope`` (for ``ttl_s`` seconds, default the registry's)."""
        ttl = self._ttl_s if ttl_s is None else ttl_s
        expires = math.inf if ttl is None else time.monotonic() + ttl
        with self._lock:
            self._entries[(scope, public_id)] = (handle, expires)
            self._entries.move_to_end((scope, public_id))
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)

    def find(self, scope: str, public_id: str) -> EmbeddedImage | None:
        """The handle registered as ``public_id`` under ``scope``, or ``None`` (unknown, expired or dropped)."""
        with self._lock:
            entry = self._entries.get((scope, public_id))
            if entry is None:
                return None
            if entry[1] <= time.monotonic():
                del self._entries[(scope, public_id)]
                return None
            self._entries.move_to_end((scope, public_id))
            return entry[0]

    def resolve(self, scope: str, public_id: str) -> EmbeddedImage:
        """The handle registered as ``public_id`` under ``scope``.

        Raises:
            NotFoundError: unknown id, an id of another scope, or one dropped from the map (404).
        """
        handle = self.find(scope, public_id)
        if handle is None:
            raise NotFoundError(f"image_id {public_id!r} not found; embed the image again")
        return handle

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
