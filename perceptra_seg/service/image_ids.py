"""Public ``image_id``s for embedded images, scoped to the API key that created them.

The SDK's :class:`~perceptra_seg.EmbeddedImage` id is a cache key (model fingerprint + pixel digest); exposing it
would let one client test whether another client sent a given image. The service instead hands out
``HMAC-SHA256(process secret, scope ‖ internal id)`` (32 hex digits) and keeps a bounded LRU map
``(scope, public id) → EmbeddedImage``. The same key embedding the same image gets the same id back; another key
gets a different id, and looking up an id under the wrong scope is exactly as unknown as a made-up id (404).

The map is bounded by entry count (:data:`MAX_ENTRIES`); the embeddings themselves live in the Segmentor's
byte-bounded cache, and a handle whose embedding was evicted answers 404 from the SDK.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

from ..exceptions import NotFoundError
from ..models import EmbeddedImage

__all__ = ["MAX_ENTRIES", "ImageIdRegistry"]

#: Handles remembered per process (a few hundred bytes each).
MAX_ENTRIES = 65_536


class ImageIdRegistry:
    """Thread-safe, bounded ``(scope, public id) → EmbeddedImage`` map."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._secret = secrets.token_bytes(32)
        self._max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], EmbeddedImage] = OrderedDict()
        self._lock = threading.Lock()

    def public_id(self, scope: str, handle: EmbeddedImage) -> str:
        """Register ``handle`` under ``scope`` and return its public id."""
        message = f"{scope}\x00{handle.image_id}".encode()
        public = hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]
        with self._lock:
            self._entries[(scope, public)] = handle
            self._entries.move_to_end((scope, public))
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return public

    def resolve(self, scope: str, public_id: str) -> EmbeddedImage:
        """The handle registered as ``public_id`` under ``scope``.

        Raises:
            NotFoundError: unknown id, an id of another scope, or one dropped from the map (404).
        """
        with self._lock:
            handle = self._entries.get((scope, public_id))
            if handle is not None:
                self._entries.move_to_end((scope, public_id))
        if handle is None:
            raise NotFoundError(f"image_id {public_id!r} not found; embed the image again")
        return handle

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
